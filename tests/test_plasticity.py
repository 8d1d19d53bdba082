"""Plasticity diagnostics and remedies (agents/plasticity/) against hand-built networks and batches."""

import math

import numpy as np
import pytest
import torch

from agents.models import build_actor_and_critic
from agents.plasticity import Diagnostics
from agents.plasticity.diagnostics import dormant_fraction, recorded, srank
from agents.plasticity.remedies import FreshWeights, L2Init, Parseval, Reset, ShrinkPerturb
from agents.plasticity.units import ContinualBackprop, ReDo, unit_layers
from agents.replay import MultiTaskReplay
from agents.sac import SACLearner
from agents.sac.config import SACConfig
from continual.strategies import NO_STRATEGY, TaskContext, make_strategy
from envs.pointmass import SEQUENCES, PointMassEnv
from launch.config import ContinualConfig

CPU = torch.device("cpu")
OBS, ACT = 3, 2


def _learner(head="single", num_tasks=1, hidden=(8, 8), **sac):
    torch.manual_seed(0)
    cfg = SACConfig(hidden_sizes=hidden, head=head, task_input=head != "single", batch_size_per_task=32, **sac)
    learner = SACLearner(cfg, OBS, ACT, num_tasks, CPU)
    return learner, lambda: build_actor_and_critic(cfg, OBS, ACT, num_tasks)


def _replay(num_tasks=1, size=256, positive=False):
    """Stored transitions; positive: every observation and action in [0, 1) (no ReLU input below 0)."""
    replay, rng = MultiTaskReplay(num_tasks, size, OBS, ACT), np.random.default_rng(0)
    draw = (lambda *s: rng.uniform(0, 1, s)) if positive else (lambda *s: rng.normal(size=s))
    for t in range(num_tasks):
        replay.add(np.full(size, t), draw(size, OBS).astype(np.float32), draw(size, ACT).astype(np.float32),
                   rng.normal(size=size).astype(np.float32), draw(size, OBS).astype(np.float32),
                   np.zeros(size, np.float32))
    return replay


def _train(learner, replay, hooks=(), updates=3, task=0):
    rng = np.random.default_rng(1)
    for _ in range(updates):
        learner.update(replay.sample(32, rng, [task]), list(hooks))


def _snapshot(learner):
    return {f"{net}.{n}": p.detach().clone() for net in ("actor", "critic", "critic_target")
            for n, p in getattr(learner, net).named_parameters()}


def _moments(learner):
    return {f"{net}.{n}.{k}": v.clone() for net in ("actor", "critic")
            for n, p in getattr(learner, net).named_parameters()
            for k, v in learner.optimizers[net].state.get(p, {}).items() if k != "step"}


# -- diagnostics -------------------------------------------------------------------------------------

def test_dormant_fraction_counts_units_whose_score_is_at_most_tau():
    # unit means |a|: 0, 1, 100, 300 -> scores 0, ~0.01, ~1, ~3 (over the layer's mean 100.25)
    layer = 100 * torch.tensor([[0.0, 0.01, 1.0, 3.0], [0.0, -0.01, -1.0, 3.0]]).unsqueeze(0)  # [K=1, B=2, H=4]
    assert dormant_fraction([layer], 0.0) == 0.25
    assert dormant_fraction([layer], 0.1) == 0.5
    alive = torch.ones(1, 2, 2)
    assert dormant_fraction([layer, alive], 0.0) == pytest.approx(1 / 6)  # over every layer's units


def test_srank_of_known_low_rank_features():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(64, 3)))
    v, _ = np.linalg.qr(rng.normal(size=(16, 3)))
    def features(sigma):
        return torch.tensor(u @ np.diag(sigma) @ v.T, dtype=torch.float32)
    assert srank(features([3.0, 2.0, 1.0])) == 3      # 0.5, 0.83, 1.0: all three needed for 99%
    assert srank(features([100.0, 0.5, 0.4])) == 1    # 100 / 100.9 >= 0.99
    assert srank(torch.stack([features([3.0, 2.0, 1.0]), features([100.0, 0.5, 0.4])])) == 2  # members' mean


def test_a_network_with_dead_units_reports_exactly_their_fraction():
    learner, _ = _learner()
    actor = learner.actor
    layer0, layer1 = actor.net.trunk.layers
    with torch.no_grad():
        for layer in (layer0, layer1):
            layer.weight.abs_()
            layer.bias.fill_(1.0)
        layer0.bias[0, 0, :2] = -1e3  # two dead units: every input is >= 0
    obs = torch.rand(64, OBS)
    with recorded(actor) as layers:
        actor(obs, torch.zeros(64, dtype=torch.int64))
    assert [tuple(a.shape) for a in layers] == [(1, 64, 8), (1, 64, 8)]
    assert dormant_fraction(layers, 0.0) == 2 / 16
    assert actor.net.trunk.recording is None  # recording ends with the block


def test_diagnostics_report_every_measure_and_the_updates_norms():
    learner, replay = _learner()[0], _replay()
    diagnostics = Diagnostics(learner, probe_rows=64, seed=0)
    _train(learner, replay, updates=2)
    before = {net: [p.detach().clone() for p in own] for net, own in
              (("actor", learner.actor.own_parameters()), ("critic", list(learner.critic.parameters())))}
    _train(learner, replay, [diagnostics], updates=1)
    out = diagnostics.measure(replay, [0])
    for net, params in (("actor", learner.actor.own_parameters()), ("critic", list(learner.critic.parameters()))):
        step = torch.cat([(p.detach() - q).flatten() for p, q in zip(params, before[net])])
        grad = torch.cat([p.grad.flatten() for p in params])
        weights = torch.cat([p.detach().flatten() for p in params])
        assert out[f"plasticity/{net}/update_norm"] == pytest.approx(float(step.norm()), rel=1e-5)
        assert out[f"plasticity/{net}/grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-5)
        assert out[f"plasticity/{net}/weight_norm"] == pytest.approx(float(weights.norm()), rel=1e-5)
        for measure in ("dormant", "dormant_0.1", "srank"):
            assert f"plasticity/{net}/{measure}" in out
    assert 0 < out["plasticity/critic/srank"] <= 8 and "plasticity/actor/entropy" in out
    again = diagnostics.measure(replay, [0])  # no update since: no norms of one
    assert "plasticity/actor/update_norm" not in again and again["plasticity/actor/weight_norm"] > 0


# -- remedies ----------------------------------------------------------------------------------------

def _remedy(cls, learner, build, networks="both", **kwargs):
    return cls(learner, NO_STRATEGY, networks, FreshWeights(build, 0, CPU), **kwargs)


def test_redo_recycles_exactly_the_dormant_units():
    """Every unit alive but three (actor layer 0 units 0-1, critic member 1 layer 1 unit 5): those get
    fresh incoming weights, a zero bias, zero outgoing weights and zeroed Adam moments of both; every
    other weight and moment stays bit for bit."""
    learner, build = _learner()
    replay = _replay(positive=True)
    _train(learner, replay)
    with torch.no_grad():
        for net in (learner.actor, learner.critic):
            for layer in net.net.trunk.layers:
                layer.weight.abs_()
                layer.bias.fill_(1.0)
        learner.actor.net.trunk.layers[0].bias[0, 0, :2] = -1e3
        learner.critic.net.trunk.layers[1].bias[1, 0, 5] = -1e3
    before, moments = _snapshot(learner), _moments(learner)
    redo = _remedy(ReDo, learner, build, tau=0.0, every=3, sample=lambda rng: replay.sample(64, rng, [0]), seed=0)
    fresh = FreshWeights(build, 0, CPU).draw()  # the draw ReDo makes
    learner.num_updates = 3  # this update is the 4th: not a multiple of 3
    redo.after_step(("critic", "actor"))
    assert redo.recycled == 0 and all(torch.equal(v, before[n]) for n, v in _snapshot(learner).items())
    learner.num_updates = 5  # the 6th
    redo.after_step(("critic",))  # sequential updates: the critic's step alone does nothing
    assert redo.recycled == 0
    redo.after_step(("actor",))
    assert redo.recycled == 3
    after, moments_after = _snapshot(learner), _moments(learner)
    changed = {}  # name -> mask of entries that must have changed
    def expect(name, mask):
        changed[name] = changed.get(name, torch.zeros_like(before[name], dtype=torch.bool)) | mask
    for net, layer, nxt, member, units in (("actor", 0, "trunk.layers.1", 0, [0, 1]),
                                           ("critic", 1, "head.linear", 1, [5])):
        w, b = f"{net}.net.trunk.layers.{layer}.weight", f"{net}.net.trunk.layers.{layer}.bias"
        out = f"{net}.net.{nxt}.weight"
        for unit in units:
            assert torch.equal(after[w][member, :, unit], fresh[net][w.removeprefix(f"{net}.")][member, :, unit])
            assert after[b][member, 0, unit] == 0 and bool((after[out][member, unit] == 0).all())
            for key in ("exp_avg", "exp_avg_sq"):
                assert bool((moments_after[f"{w}.{key}"][member, :, unit] == 0).all())
                assert bool((moments_after[f"{out}.{key}"][member, unit] == 0).all())
            for name, index in ((w, (member, slice(None), unit)), (b, (member, 0, unit)), (out, (member, unit))):
                mask = torch.zeros_like(before[name], dtype=torch.bool)
                mask[index] = True
                expect(name, mask)
    for name, value in before.items():  # nothing else moved (the target critic neither)
        keep = ~changed.get(name, torch.zeros_like(value, dtype=torch.bool))
        assert torch.equal(after[name][keep], value[keep]), name
    for name, value in moments.items():
        param = name.rsplit(".", 1)[0]
        if param not in changed or param.endswith("bias"):  # theirs zeroes the weights' moments, not the biases'
            assert torch.equal(moments_after[name], value), name


def test_l2_init_gradient_points_to_the_initial_weights():
    learner, build = _learner(head="multi", num_tasks=2)
    l2 = _remedy(L2Init, learner, build, coef=0.5)
    shared = dict(learner.actor.named_shared_parameters())
    initial = {n: p.detach().clone() for n, p in shared.items()}
    with torch.no_grad():
        for p in learner.actor.parameters():
            p.add_(0.1 * torch.randn_like(p))
    loss = l2.loss_terms("actor", None, None)["plasticity/l2_init/actor"]
    grads = torch.autograd.grad(loss, list(shared.values()))
    for (name, p), g in zip(shared.items(), grads):
        assert torch.allclose(g, 2 * 0.5 * (p.detach() - initial[name]))  # d/dtheta lambda ||theta - theta0||^2
    assert "net.head.linear.weight" not in shared  # the per-task heads are each task's own: no pull on them


def test_shrink_and_perturb_mixes_the_weights_with_a_fresh_draw():
    learner, build = _learner()
    _train(learner, _replay())
    before = {n: p.detach().clone() for n, p in learner.critic.named_parameters()}
    targets = [p.detach().clone() for p in learner.critic_target.parameters()]
    fresh = FreshWeights(build, 0, CPU).draw()["critic"]
    _remedy(ShrinkPerturb, learner, build, shrink=0.4, perturb=0.1, every=0).stage_started()
    for name, p in learner.critic.named_parameters():
        assert torch.allclose(p.detach(), 0.4 * before[name] + 0.1 * fresh[name], atol=1e-7), name
        assert p not in learner.critic_optimizer.state  # a fresh Adam for what it changed
    assert all(torch.equal(a, b) for a, b in zip(learner.critic_target.parameters(), targets))  # Polyak follows


@pytest.mark.parametrize("k, names", [(1, ["head.linear"]), (2, ["trunk.layers.1", "head.linear"]),
                                      (99, ["trunk.layers.0", "trunk.layers.1", "head.linear"])])
def test_reset_reinitialises_exactly_the_last_k_layers_and_their_targets(k, names):
    learner, build = _learner()
    _train(learner, _replay())
    before = _snapshot(learner)
    fresh = FreshWeights(build, 0, CPU).draw()
    _remedy(Reset, learner, build, layers=k).stage_started()
    after = _snapshot(learner)
    for net in ("actor", "critic"):
        for name, p in getattr(learner, net).named_parameters():
            reset = any(name.startswith(f"net.{layer}.") for layer in names)
            assert torch.equal(after[f"{net}.{name}"], fresh[net][name] if reset else before[f"{net}.{name}"]), name
            assert (p in learner.optimizers[net].state) != reset
            if net == "critic":
                expected = fresh[net][name] if reset else before[f"critic_target.{name}"]
                assert torch.equal(after[f"critic_target.{name}"], expected)


@pytest.mark.parametrize("temperature", [False, True])
def test_a_reset_keeps_the_temperature_unless_told_to_reset_it_too(temperature):
    """reset_temperature (Nikishin et al.'s whole-agent reset): the temperature back to sac.init_alpha and
    its Adam state cleared; without it, the learned temperature and its moments stay as they were."""
    from agents.plasticity import PlasticityConfig, make_remedies
    learner, build = _learner(init_alpha=0.5)
    _train(learner, _replay(), updates=5)
    learned = learner.log_alpha.detach().clone()
    assert not torch.allclose(learned, torch.tensor([math.log(0.5)]))  # training moved it
    [reset] = make_remedies(PlasticityConfig(reset=99, reset_temperature=temperature), learner, NO_STRATEGY, build,
                            0, sample_probe=None)  # as a run builds it from its config
    reset.stage_started()
    expected = torch.tensor([math.log(0.5)]) if temperature else learned
    assert torch.allclose(learner.log_alpha.detach(), expected)
    assert (learner.log_alpha in learner.alpha_optimizer.state) != temperature


def test_a_layernorm_belongs_to_the_first_layer_for_resets_and_l2_init_leaves_it_alone():
    learner, build = _learner(layer_norm=True)
    _train(learner, _replay())
    norm = learner.actor.net.trunk.norm
    assert not torch.equal(norm.weight.detach(), torch.ones_like(norm.weight))  # trained away from its init
    reset = _remedy(Reset, learner, build, networks="actor", layers=2)
    assert reset.reset_names("actor") == {"net.trunk.layers.1.weight", "net.trunk.layers.1.bias",
                                          "net.head.linear.weight", "net.head.linear.bias"}
    reset.layers = 3
    assert {"net.trunk.norm.weight", "net.trunk.norm.bias", "net.trunk.layers.0.weight"} <= reset.reset_names("actor")
    pulled = {id(p) for p in _remedy(L2Init, learner, build, coef=1.0).pulled("actor")}
    assert id(norm.weight) not in pulled and id(learner.actor.net.trunk.layers[0].weight) in pulled


def test_parseval_is_zero_on_scaled_orthogonal_rows_and_matches_its_formula():
    learner, build = _learner(hidden=(8, 8))
    parseval = _remedy(Parseval, learner, build, networks="actor", coef=1e-3, scale=2.0)
    layers = learner.actor.net.trunk.layers

    def term(layer):  # weight [K, in, out]: torch's W = weight^T, [out, in]
        w = layer.weight[0].detach().T
        return (64 / 8) ** 2 * float(((w @ w.T - 2 * torch.eye(8)) ** 2).sum())
    with torch.no_grad():  # layer 1 (8 x 8): rows orthogonal with norm sqrt 2
        layers[1].weight[0] = math.sqrt(2.0) * torch.linalg.qr(torch.randn(8, 8))[0]
    assert term(layers[1]) == pytest.approx(0.0, abs=1e-6)
    loss = parseval.loss_terms("actor", None, None)["plasticity/parseval/actor"]
    assert float(loss.detach()) == pytest.approx(1e-3 * term(layers[0]), rel=1e-5)  # layer 0's 8 rows in 3-d cannot be
    with torch.no_grad():
        layers[1].weight.mul_(0.5)
    loss = parseval.loss_terms("actor", None, None)["plasticity/parseval/actor"]
    assert float(loss.detach()) == pytest.approx(1e-3 * (term(layers[0]) + term(layers[1])), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, [learner.actor.net.head.linear.weight], allow_unused=True)
    assert grad is None  # the output layer is not regularised
    assert parseval.loss_terms("critic", None, None) == {}  # plasticity.networks=actor


def test_continual_backprop_replaces_the_least_useful_mature_unit():
    """Layers 3 -> 8 -> 6 -> head, rate 1/6, maturity 1, decay 0.5: the first update matures every unit
    (age 1, not > 1: nothing replaced), the second replaces one unit per layer, the one of lowest
    utility (mean |h| x mean |outgoing weight|), with incoming weights drawn as theirs (U(+-sqrt(3 / fan_in))
    from CBP's stream), bias 0, outgoing weights 0, and those entries' Adam moments zeroed."""
    from agents import seeding
    learner, build = _learner(hidden=(8, 6))
    replay = _replay(positive=True)
    _train(learner, replay)  # Adam moments to zero
    cbp = _remedy(ContinualBackprop, learner, build, networks="actor", rate=1 / 6, maturity=1, decay=0.5, seed=0)
    layer0, layer1 = learner.actor.net.trunk.layers
    head = learner.actor.net.head.linear
    with torch.no_grad():
        for layer in (layer0, layer1):
            layer.weight.abs_()
            layer.bias.fill_(1.0)
        layer1.weight[0, 3] *= 1e-3  # unit 3 of layer 0 hardly reaches layer 1
        head.weight[0, 4] *= 1e-3    # unit 4 of layer 1 hardly reaches the output
    batch = replay.sample(64, np.random.default_rng(0), [0])
    before = _snapshot(learner)
    cbp.loss_terms("critic", batch, None)
    cbp.after_step(("actor",))
    assert cbp.replaced == 0 and all(torch.equal(v, before[n]) for n, v in _snapshot(learner).items())
    moments = _moments(learner)
    cbp.after_step(("actor",))
    assert cbp.replaced == 2
    after, moments_after = _snapshot(learner), _moments(learner)
    draws = torch.Generator().manual_seed(seeding.seed_for(0, "cbp", 1))
    expected = [(torch.rand(layer.weight.shape, generator=draws) * 2 - 1) * math.sqrt(3 / layer.weight.shape[1])
                for layer in (layer0, layer1)]
    # (layer, its replaced unit, the next layer, the next layer's replaced unit: its fresh column refills)
    for layer, unit, out, refilled in ((0, 3, "net.trunk.layers.1", 4), (1, 4, "net.head.linear", None)):
        w, b = f"actor.net.trunk.layers.{layer}.weight", f"actor.net.trunk.layers.{layer}.bias"
        assert torch.equal(after[w][0, :, unit], expected[layer][0, :, unit])
        assert after[b][0, 0, unit] == 0
        columns = [c for c in range(after[f"actor.{out}.weight"].shape[-1]) if c != refilled]
        assert bool((after[f"actor.{out}.weight"][0, unit, columns] == 0).all())
        for key in ("exp_avg", "exp_avg_sq"):
            assert bool((moments_after[f"{w}.{key}"][0, :, unit] == 0).all())
            assert moments_after[f"{b}.{key}"][0, 0, unit] == 0  # AdamGnT's: the bias's too
            assert bool((moments_after[f"actor.{out}.weight.{key}"][0, unit] == 0).all())
        others = [u for u in range(after[w].shape[-1]) if u != unit]
        rows = [r for r in range(after[w].shape[1]) if layer == 0 or r != 3]  # layer 0's unit 3 no longer feeds
        assert torch.equal(after[w][0][rows][:, others], before[w][0][rows][:, others])
        kept = (slice(None), others)
        assert torch.equal(moments_after[f"{w}.exp_avg"][0][rows][kept], moments[f"{w}.exp_avg"][0][rows][kept])
        ages = cbp.state["actor"][layer]["age"][0]
        assert ages[unit] == 0 and ages[others].eq(2).all()
    assert all(torch.equal(after[n], v) for n, v in before.items() if n.startswith("critic"))  # networks=actor


def test_continual_backprop_rounds_a_fraction_of_a_unit_by_a_draw():
    """rate 0.05: 0.4 of a unit per update in layer 0 (8 units), 0.3 in layer 1 (6): one unit with that
    probability, drawn from CBP's stream (theirs: torch.rand(1) <= n)."""
    from agents import seeding
    learner, build = _learner(hidden=(8, 6))
    replay = _replay()
    cbp = _remedy(ContinualBackprop, learner, build, networks="actor", rate=0.05, maturity=0, decay=0.99, seed=0)
    batch = replay.sample(32, np.random.default_rng(0), [0])
    rng = seeding.rng(0, "cbp")
    expected = 0
    for _ in range(12):
        cbp.loss_terms("critic", batch, None)
        cbp.after_step(("actor",))
        expected += int(rng.random() <= 8 * 0.05) + int(rng.random() <= 6 * 0.05)
        assert cbp.replaced == expected
    assert 0 < expected < 24


def _every_remedy(learner, build, replay):
    fresh = FreshWeights(build, 0, CPU)
    def make(cls, strategy, **kwargs):
        return cls(learner, strategy, "both", fresh, **kwargs)
    return {
        "redo": lambda s: make(ReDo, s, tau=10.0, every=1, sample=lambda rng: replay.sample(32, rng, [1]), seed=0),
        "cbp": lambda s: make(ContinualBackprop, s, rate=1.0, maturity=0, decay=0.5, seed=0),
        "shrink_perturb": lambda s: make(ShrinkPerturb, s, shrink=0.4, perturb=0.1, every=1),
        "l2_init": lambda s: make(L2Init, s, coef=10.0),
        "parseval": lambda s: make(Parseval, s, coef=1.0, scale=2.0),
        "reset": lambda s: make(Reset, s, layers=99),
    }


@pytest.mark.parametrize("remedy", ["redo", "cbp", "shrink_perturb", "l2_init", "parseval", "reset"])
def test_no_remedy_changes_packnets_frozen_weights_or_an_earlier_tasks_head(remedy):
    """PackNet after stage 1 (pruned, kept weights frozen), stage 2 with the remedy at its harshest
    (ReDo: every unit dormant; CBP: every unit replaced at every update): the frozen weights are bit
    for bit those stage 1 kept, and task 0's head never moves."""
    learner, build = _learner(head="multi", num_tasks=2)
    replay = _replay(num_tasks=2)
    packnet = make_strategy(ContinualConfig(sequence="x", method="packnet", packnet_retrain_steps=5,
                                            regularize="both"), learner, [0, 1])
    def context(stage):
        return TaskContext(stage, 2, (stage,), tuple(range(stage)), 100, replay, np.random.default_rng(stage),
                           train=lambda n: _train(learner, replay, [packnet], n, task=stage))
    packnet.start_task(context(0))
    _train(learner, replay, [packnet], 5, task=0)
    packnet.end_task(context(0))
    learner.reset_optimizers()
    packnet.start_task(context(1))
    frozen = {net: [(o == 1, p.detach().clone()) for o, (_, p) in zip(packnet.owner[net], packnet.shared(net))]
              for net in ("actor", "critic")}
    heads = {net: getattr(learner, net).net.head.linear.weight for net in ("actor", "critic")}
    head0 = {net: h.detach()[..., :h.shape[-1] // 2].clone() for net, h in heads.items()}  # task 0's columns
    hook = _every_remedy(learner, build, replay)[remedy](packnet)
    hook.stage_started()
    if remedy == "reset":  # the target critic holds the critic's weights, frozen ones included
        online = dict(learner.critic.named_parameters())
        for name, q in learner.critic_target.named_parameters():
            if name in hook.reset_names("critic"):
                assert torch.equal(q.detach(), online[name].detach()), name
    for net in ("actor", "critic"):  # at once, not only after the next update's repair
        for (mask, value), (_, p) in zip(frozen[net], packnet.shared(net)):
            assert torch.equal(p.detach()[mask], value[mask]), (remedy, net)
    _train(learner, replay, [packnet, hook], 3, task=1)
    for net in ("actor", "critic"):
        moved = 0
        for (mask, value), (_, p) in zip(frozen[net], packnet.shared(net)):
            assert torch.equal(p.detach()[mask], value[mask]), (remedy, net)
            moved += int((p.detach()[~mask] != value[~mask]).sum())
        assert moved > 0  # the free weights did change
        assert torch.equal(heads[net].detach()[..., :heads[net].shape[-1] // 2], head0[net]), (remedy, net)


def test_unit_remedies_leave_the_layer_before_a_per_task_head_alone():
    learner, _ = _learner(head="multi", num_tasks=2)
    assert [following is None for _, following in unit_layers(learner.actor)] == [False, True]


# -- the rotation sequence ---------------------------------------------------------------------------

def test_a_rotated_task_turns_the_action_before_it_moves_the_point():
    plain, turned = PointMassEnv("reach-e", 0), PointMassEnv("reach-e@90", 0)
    start_plain, _ = plain.reset(options={"goal": 3})
    start_turned, _ = turned.reset(options={"goal": 3})
    assert np.array_equal(start_plain, start_turned)  # the same goals: only the mapping differs
    moved_plain = plain.step(np.array([1.0, 0.0]))[0] - start_plain
    moved_turned = turned.step(np.array([1.0, 0.0]))[0] - start_turned
    assert np.allclose(moved_plain, [0.1, 0.0]) and np.allclose(moved_turned, [0.0, 0.1], atol=1e-6)
    angles = [float(name.split("@")[1]) for name in SEQUENCES["ROT20"]]
    assert len(set(angles)) == 20 and all(name.startswith("reach-e@") for name in SEQUENCES["ROT20"])
    assert len(set(SEQUENCES["ROT50"])) == 50


def test_unit_remedies_need_one_learner_rank():
    from envs.registry import make_suite
    from launch.config import build_config
    from launch.config.validate import check_launch
    from launch.errors import UserError
    cfg = build_config("pointmass", overrides=["plasticity.redo=true"])
    with pytest.raises(UserError, match="plasticity.redo picks units from each rank's own batch"):
        check_launch(cfg, 2, make_suite("pointmass"))
    check_launch(cfg, 1, make_suite("pointmass"))


def test_every_remedy_composes_with_a_gradient_balancer_and_a_strategy():
    """PCGrad (per-task gradients) with EWC and all six remedies as hooks, two tasks, multi-head: updates run,
    both penalties reach the losses, and the remedies' acts leave the weights finite."""
    from agents.balancers import BalanceConfig
    torch.manual_seed(0)
    cfg = SACConfig(hidden_sizes=(8, 8), head="multi", batch_size_per_task=16)
    learner = SACLearner(cfg, OBS, ACT, 2, CPU, balance=BalanceConfig(method="pcgrad"))
    replay = _replay(num_tasks=2)
    ewc = make_strategy(ContinualConfig(sequence="x", method="ewc", importance_samples=32), learner, [0, 1])
    hooks = [ewc, *(make(ewc) for make in _every_remedy(learner, lambda: build_actor_and_critic(cfg, OBS, ACT, 2),
                                                        replay).values())]
    rng = np.random.default_rng(0)
    for _ in range(3):
        losses = learner.update(replay.sample(16, rng, [0, 1]), hooks)
    assert "loss/plasticity/l2_init/actor" in losses and "loss/plasticity/parseval/critic" in losses
    for hook in hooks[1:]:
        hook.stage_started()
    assert all(torch.isfinite(p).all() for p in [*learner.actor.parameters(), *learner.critic.parameters()])
