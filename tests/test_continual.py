"""Continual learning: schedules, the strategies' mechanics (checked exactly or by hand), and
real pointmass runs where fine-tuning forgets and every method forgets less."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from agents.networks import LOG_STD_MAX, LOG_STD_MIN
from agents.replay import MultiTaskReplay
from agents.sac import SACLearner
from agents.sac.config import SACConfig
from continual.schedule import Stage, build_schedule
from continual.strategies import METHODS, TaskContext, make_strategy
from continual.strategies import importance
from envs.registry import sequence_presets
from launch.config import ContinualConfig
from launch.train import main as train_main
from metrics import continual, evallog
from metrics.runs import read_run
from tests.conftest import checkpoint_steps, kill_after_checkpoint, run_train, scalars, start_train, train_many

CW10 = ["hammer-v3", "push-wall-v3", "faucet-close-v3", "push-back-v3", "stick-pull-v3",
        "handle-press-side-v3", "push-v3", "shelf-place-v3", "window-close-v3", "peg-unplug-side-v3"]


# -- schedules ----------------------------------------------------------------------------------

def test_cw_sequences_in_v3_names_and_repeats_get_their_own_tasks():
    names, stages = build_schedule("CW20", sequence_presets("metaworld"), 1000)
    assert names[:10] == CW10
    assert names[10:] == [f"{n}#2" for n in CW10]  # CW20's second pass: new ids, new heads
    assert [s.tasks for s in stages] == [(i,) for i in range(20)]
    assert stages[0] == Stage((0,), 0, 1000) and stages[-1] == Stage((19,), 19000, 20000)


def test_custom_sequence_with_multi_task_stages_and_budgets():
    names, stages = build_schedule("reach-e:300,reach-w+reach-n,reach-e", sequence_presets("pointmass"), 100)
    assert names == ["reach-e", "reach-w", "reach-n", "reach-e#2"]
    assert stages == [Stage((0,), 0, 300), Stage((1, 2), 300, 500), Stage((3,), 500, 600)]


@pytest.mark.parametrize("sequence", ["reach-e:", "reach-e:abc", "reach-e,,reach-w", "reach-e:-5",
                                      "reach-e#2", "reach-e+reach-e"])
def test_malformed_sequences_are_rejected(sequence):
    with pytest.raises(ValueError):
        build_schedule(sequence, sequence_presets("pointmass"), 100)


@pytest.mark.parametrize("args, message", [
    (["--sequence", "PM2", "--method", "bogus"], "unknown continual.method 'bogus'"),
    (["--sequence", "PM2", "--tasks", "PM4"], "with --sequence"),
    (["--sequence", "reach-e,reach-nowhere"], "unknown task reach-nowhere"),
    (["--sequence", "PM2", "--method", "hnet"], "set sac.head=hyper"),
    (["--method", "ewc"], "needs a task sequence"),
    (["--mode", "single-task"], "--mode single-task needs --sequence"),
    (["--sequence", "PM2", "--set", "continual.regularize=policy"], "unknown continual.regularize"),
])
def test_bad_continual_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    code = train_main(["--suite", "pointmass", "--backend", "single", "--run-dir", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# -- a small learner to drive strategies directly -----------------------------------------------

def _learner(head="multi", num_tasks=2, **sac):
    torch.manual_seed(0)
    cfg = SACConfig(hidden_sizes=(16, 16), head=head, batch_size_per_task=32, hyper_embedding_dim=4,
                    hyper_hidden=16, **sac)
    return SACLearner(cfg, obs_dim=3, action_dim=2, num_tasks=num_tasks, device=torch.device("cpu"))


def _filled_replay(num_tasks=2, size=256):
    replay = MultiTaskReplay(num_tasks, size, 3, 2)
    rng = np.random.default_rng(0)
    for t in range(num_tasks):
        replay.add(np.full(size, t), rng.normal(size=(size, 3)).astype(np.float32),
                   rng.uniform(-1, 1, (size, 2)).astype(np.float32), rng.normal(size=size).astype(np.float32),
                   rng.normal(size=(size, 3)).astype(np.float32), np.zeros(size, np.float32))
    return replay


def _context(replay, stage, num_stages=2, steps=100):
    return TaskContext(stage, num_stages, (stage,), tuple(range(stage)), steps, replay, np.random.default_rng(stage))


def _train(learner, strategy, replay, task, updates):
    rng = np.random.default_rng(task)
    for _ in range(updates):
        learner.update(replay.sample(32, rng, [task]), strategy)


# -- PackNet ------------------------------------------------------------------------------------

def _packnet_stage(learner, strategy, replay, stage, updates=20, retrain=None):
    """One stage as the trainer runs it: fresh optimizer, train, end_task (prune + retrain)."""
    learner.reset_optimizers()
    ctx = _context(replay, stage)
    ctx.train = retrain or (lambda n: _train(learner, strategy, replay, stage, n))
    strategy.start_task(ctx)
    _train(learner, strategy, replay, stage, updates)
    strategy.end_task(ctx)
    return ctx


def test_packnet_prunes_by_cws_threshold_and_freezes_kept_weights_bit_for_bit():
    learner, replay = _learner(), _filled_replay()
    strategy = make_strategy(ContinualConfig(sequence="x", method="packnet", packnet_retrain_steps=10), learner, [0, 1])
    shared = dict(learner.actor.named_shared_parameters())
    assert "net.head.linear.weight" not in shared and "net.layers.0.weight" in shared  # heads are not managed
    head = learner.actor.net.head.linear.weight

    before_prune = {}
    def retrain(n):  # inspect the weights between pruning and retraining
        before_prune.update({k: p.detach().clone() for k, p in shared.items()})
        before_prune["head"] = head.detach().clone()
        _train(learner, strategy, replay, 0, n)
    learner.reset_optimizers()
    ctx = _context(replay, 0)
    ctx.train = retrain
    strategy.start_task(ctx)
    _train(learner, strategy, replay, 0, 20)
    trained = {k: p.detach().clone() for k, p in shared.items()}
    strategy.end_task(ctx)

    # CW's rule, stage 0 of 2: threshold = sorted |w| at index int(n * 1/2); keep |w| > threshold.
    w = trained["net.layers.0.weight"].abs().flatten()
    threshold = w.sort().values[int(len(w) * 0.5)]
    kept = trained["net.layers.0.weight"].abs() > threshold
    owner = strategy.owner["actor"][list(shared).index("net.layers.0.weight")]
    assert torch.equal(owner == 1, kept) and int(kept.sum()) == len(w) - int(len(w) * 0.5) - 1
    assert bool((before_prune["net.layers.0.weight"][~kept] == 0).all())           # pruned -> zero
    assert torch.equal(before_prune["net.layers.0.weight"][kept], trained["net.layers.0.weight"][kept])
    # Retraining moved only kept weights (biases frozen, as in CW) and the unmanaged head.
    layer0 = shared["net.layers.0.weight"].detach()
    assert bool((layer0[~kept] == 0).all()) and not torch.equal(layer0[kept], before_prune["net.layers.0.weight"][kept])
    assert torch.equal(shared["net.layers.0.bias"].detach(), before_prune["net.layers.0.bias"])
    assert not torch.equal(head.detach(), before_prune["head"])

    obs, task0 = torch.randn(64, 3), torch.zeros(64, dtype=torch.int64)
    with torch.no_grad():
        mean_after_stage0 = learner.actor(obs, task0)[0]
    owned = [(o == 1, p.detach().clone()) for o, (_, p) in zip(strategy.owner["actor"], strategy.shared("actor"))]
    _packnet_stage(learner, strategy, replay, 1, updates=30)
    changed = 0
    for (mask, frozen), (_, p) in zip(owned, strategy.shared("actor")):
        assert torch.equal(p.detach()[mask], frozen[mask])  # exact, not approximately
        changed += int((p.detach()[~mask] != frozen[~mask]).sum())
    assert changed > 0  # stage 1 trained the weights left free
    # The last stage keeps everything still free.
    assert all(bool((o > 0).all()) for o in strategy.owner["actor"])
    # Task 0 evaluated through PackNet's view gets exactly its end-of-stage-0 policy.
    flat = torch.nn.utils.parameters_to_vector(learner.actor.parameters()).detach()
    views = strategy.eval_weights(flat, stage=1)
    policy = _learner().actor
    torch.nn.utils.vector_to_parameters(views[0], policy.parameters())
    with torch.no_grad():
        assert torch.equal(policy(obs, task0)[0], mean_after_stage0)
    assert torch.equal(views[1], flat)


# -- hypernetwork regularizer --------------------------------------------------------------------

@pytest.mark.parametrize("generates", ["head", "all"])
def test_hypernetwork_regularizer_keeps_earlier_generated_weights_within_tolerance(generates):
    drift = {}
    for method in ("none", "hnet"):
        learner, replay = _learner(head="hyper", hyper_generates=generates), _filled_replay()
        cfg = ContinualConfig(sequence="x", method=method, coef=1000.0)
        strategy = make_strategy(cfg, learner, [0, 1])
        hyper = learner.actor.net.hyper if generates == "all" else learner.actor.net.head
        _train(learner, strategy, replay, 0, 10)
        strategy.end_task(_context(replay, 0))
        with torch.no_grad():
            before = [x.clone() for layer in hyper.generate(hyper.embedding[:1]) for x in layer]
        learner.reset_optimizers()
        _train(learner, strategy, replay, 1, 40)
        with torch.no_grad():
            after = [x for layer in hyper.generate(hyper.embedding[:1]) for x in layer]
        drift[method] = max(float((a - b).abs().max()) for a, b in zip(after, before))
    assert drift["hnet"] < 0.005, drift
    assert drift["none"] > 3 * drift["hnet"], drift  # without the regularizer the old task's weights move


# -- importances ---------------------------------------------------------------------------------

def _features(net, obs, task):
    """Input of the output layer (the trunk's last activation) of an EnsembleMLP."""
    h = torch.cat([obs, net.task_codes[task]], -1).expand(net.ensemble, *obs.shape[:-1], -1)
    for layer in net.layers:
        h = net.activation(layer(h))
    return h


def test_actor_fisher_and_mas_match_hand_derivation_on_the_output_layer():
    """mu_d = h . W[:, d] + b_d and log sigma_d = LMIN + (LMAX-LMIN)/2 (tanh(z_d) + 1), z_d = h . W[:, A+d] + b:
        F(W[j, d])   = E[h_j^2 / (sigma_d^2 + 1e-6)]
        F(W[j, A+d]) = E[2 (sigma_d (LMAX-LMIN)/2 (1 - tanh(z_d)^2) h_j)^2 / (sigma_d^2 + 1e-6)]
        MAS(W[j, d]) = E[|2 mu_d h_j|],  MAS(W[j, A+d]) = E[|2 log sigma_d (LMAX-LMIN)/2 (1 - tanh(z_d)^2) h_j|]"""
    learner = _learner(head="single")
    actor, a = learner.actor, 2
    obs, task = torch.randn(40, 3), torch.randint(0, 2, (40,))
    fisher = importance.actor_fisher(actor, obs, task)
    mas = importance.actor_mas(actor, obs, task)
    names = [n for n, _ in actor.named_parameters()]
    assert list(fisher) == names and all(fisher[n].shape == p.shape for n, p in actor.named_parameters())
    assert all(bool((f >= importance.FISHER_FLOOR).all()) for f in fisher.values())
    assert all(bool((m >= 0).all()) for m in mas.values())
    with torch.no_grad():
        h = _features(actor.net, obs, task)[0]                          # [B, H]
        out = actor.net.head.linear(h[None])[0]                         # [B, 2A]
        mu, z = out[:, :a], out[:, a:]
        log_sigma = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(z) + 1)
        sigma = log_sigma.exp()
        dlogsigma_dz = 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (1 - torch.tanh(z) ** 2)
        scale = 1 / (sigma ** 2 + 1e-6)
        hand_mu = torch.einsum("bj,bd->jd", h ** 2, scale) / len(obs)
        hand_sigma = torch.einsum("bj,bd->jd", h ** 2, 2 * (sigma * dlogsigma_dz) ** 2 * scale) / len(obs)
        hand_mas_mu = (2 * mu[:, None, :] * h[:, :, None]).abs().mean(0)
        hand_mas_sigma = (2 * log_sigma[:, None, :] * dlogsigma_dz[:, None, :] * h[:, :, None]).abs().mean(0)
    weight = fisher["net.head.linear.weight"][0]  # [H, 2A]
    torch.testing.assert_close(weight[:, :a], hand_mu.clamp_min(importance.FISHER_FLOOR))
    torch.testing.assert_close(weight[:, a:], hand_sigma.clamp_min(importance.FISHER_FLOOR))
    torch.testing.assert_close(mas["net.head.linear.weight"][0, :, :a], hand_mas_mu)
    torch.testing.assert_close(mas["net.head.linear.weight"][0, :, a:], hand_mas_sigma)


def test_critic_fisher_matches_hand_derivation_on_the_output_layer():
    """Q_k = h_k . W_k + b_k, so F(W_k[j]) = E[h_kj^2] and F(b_k) = 1."""
    learner = _learner(head="single")
    critic = learner.critic
    obs, action, task = torch.randn(40, 3), torch.rand(40, 2) * 2 - 1, torch.randint(0, 2, (40,))
    fisher = importance.critic_fisher(critic, obs, action, task)
    with torch.no_grad():
        h = _features(critic.net, torch.cat([obs, action], -1), task)  # [2, B, H]
    torch.testing.assert_close(fisher["net.head.linear.weight"][..., 0], (h ** 2).mean(1))  # not clipped (CW)
    torch.testing.assert_close(fisher["net.head.linear.bias"], torch.ones(2, 1, 1))


class _OneWeight(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def named_shared_parameters(self):
        return self.named_parameters()


def test_si_importance_by_hand():
    """One weight moves 0 -> 1 -> 3 under gradients -2 then -1: omega = -(-2)(1) - (-1)(2) = 4,
    Omega = omega / (delta^2 + xi) = 4 / (9 + 0.1)."""
    actor = _OneWeight()
    weight = actor.weight
    learner = SimpleNamespace(actor=actor, device=torch.device("cpu"))
    strategy = METHODS["si"](ContinualConfig(sequence="x", method="si", si_xi=0.1, coef=1.0), learner, [0])
    strategy.start_task(_context(None, 0))
    for grad, new_value in ((-2.0, 1.0), (-1.0, 3.0)):
        weight.grad = torch.tensor([grad])
        strategy.observe_gradients("actor")
        strategy.before_step(("actor",))
        with torch.no_grad():
            weight.fill_(new_value)
        strategy.after_step(("actor",))
    assert strategy.omega["actor"][0].item() == pytest.approx(4.0)
    strategy.end_task(_context(None, 0))
    assert strategy.importance["actor"][0].item() == pytest.approx(4 / 9.1)
    with torch.no_grad():
        weight.fill_(5.0)  # penalty = coef * Omega * (5 - 3)^2
    assert float(strategy.penalty("actor").detach()) == pytest.approx(1.0 * 4 / 9.1 * 4)


def test_si_path_integral_uses_the_unregularized_gradient():
    """In the learner, SI sees the task loss's gradient before the penalty's is added
    (Zenke et al.); the step itself uses both."""
    learner, replay = _learner(), _filled_replay()
    strategy = make_strategy(ContinualConfig(sequence="x", method="si", coef=100.0), learner, [0, 1])
    strategy.start_task(_context(replay, 0))
    _train(learner, strategy, replay, 0, 5)
    strategy.end_task(_context(replay, 0))
    strategy.start_task(_context(replay, 1))
    with torch.no_grad():  # move away from the anchor so that the penalty has a gradient
        for _, p in strategy.shared("actor"):
            p.add_(0.05)
    batch = replay.sample(32, np.random.default_rng(3), [1])
    torch.manual_seed(4)
    loss, _ = learner.actor_loss(batch)
    task_grad = torch.autograd.grad(loss, [p for _, p in strategy.shared("actor")])
    torch.manual_seed(4)
    loss, _ = learner.actor_loss(batch)
    learner._gradients("actor", loss, strategy)
    for seen, expected, (_, p) in zip(strategy._grads["actor"], task_grad, strategy.shared("actor")):
        torch.testing.assert_close(seen, expected)
    total = torch.cat([p.grad.flatten() for _, p in strategy.shared("actor")])
    assert (total - torch.cat([g.flatten() for g in task_grad])).abs().max() > 1e-3  # the penalty's part


@pytest.mark.parametrize("method", ["l2", "ewc", "mas", "si"])
def test_penalties_anchor_the_shared_trunk_not_the_task_heads(method):
    learner, replay = _learner(), _filled_replay()
    strategy = make_strategy(ContinualConfig(sequence="x", method=method, importance_samples=64), learner, [0, 1])
    strategy.start_task(_context(replay, 0))
    _train(learner, strategy, replay, 0, 3)
    strategy.end_task(_context(replay, 0))
    with torch.no_grad():
        for p in learner.actor.parameters():
            p.add_(0.1)
    learner.actor.zero_grad()
    strategy.penalty("actor").backward()
    assert learner.actor.net.head.linear.weight.grad is None  # the per-task head is free
    assert learner.actor.net.layers[0].weight.grad.abs().sum() > 0
    # A single (shared) head is part of what is protected, as in CW.
    single = _learner(head="single")
    names = [n for n, _ in make_strategy(ContinualConfig(sequence="x", method=method), single, [0, 1]).shared("actor")]
    assert "net.head.linear.weight" in names


def test_l2_importance_grows_by_one_per_finished_task_as_in_cw():
    learner, replay = _learner(), _filled_replay(3)
    strategy = make_strategy(ContinualConfig(sequence="x", method="l2"), learner, [0, 1, 2])
    for stage in range(2):
        strategy.end_task(_context(replay, stage, 3))
    assert all(bool((w == 2).all()) for w in strategy.importance["actor"])


def test_ewc_sums_fishers_and_online_ewc_decays_them():
    learner, replay = _learner(), _filled_replay(3)
    fishers = {}
    for method in ("ewc", "online-ewc"):
        cfg = ContinualConfig(sequence="x", method=method, online_ewc_gamma=0.5, importance_samples=64)
        strategy = make_strategy(cfg, learner, [0, 1, 2])
        for stage in range(2):
            strategy.end_task(_context(replay, stage, 3))
        fishers[method] = strategy.importance["actor"]
    per_task = [make_strategy(ContinualConfig(sequence="x", method="ewc", importance_samples=64), learner, [0, 1, 2])
                .task_importance("actor", _context(replay, s, 3)) for s in range(2)]
    for summed, decayed, f0, f1 in zip(fishers["ewc"], fishers["online-ewc"], *per_task):
        torch.testing.assert_close(summed, f0 + f1)
        torch.testing.assert_close(decayed, 0.5 * f0 + f1)


def _agem_with_memory(projection):
    learner, replay = _learner(update_order="simultaneous"), _filled_replay()
    cfg = ContinualConfig(sequence="x", method="agem", memory_per_task=100, agem_batch_size=32,
                          agem_projection=projection)
    strategy = make_strategy(cfg, learner, [0, 1])
    strategy.end_task(_context(replay, 0))
    assert len(strategy.memory["task"]) == 100
    return learner, strategy


def _agem_apply(learner, strategy, grads, networks=("critic", "actor")):
    """Put `grads` in .grad, run A-GEM's before_step; returns (result, the reference it used)."""
    state = strategy.rng.bit_generator.state
    torch.manual_seed(9)
    reference = strategy._reference(list(networks))
    strategy.rng.bit_generator.state = state  # A-GEM draws the same memory batch again
    for net, gs in zip(networks, grads):
        for p, g in zip(learner.params[net], gs):
            p.grad = g.clone()
    torch.manual_seed(9)
    strategy.before_step(networks)
    return [[p.grad.clone() for p in learner.params[net]] for net in networks], reference


def _flat(nested):
    return torch.cat([t.flatten() for ts in nested for t in ts])


def test_agem_joint_projection_removes_the_conflict_over_actor_and_critic_together():
    learner, strategy = _agem_with_memory("joint")
    torch.manual_seed(9)
    reference = strategy._reference(["critic", "actor"])
    rng = np.random.default_rng(0)
    # g = -ref + noise: a real conflict (g . ref < 0)
    grads = [[-r + 0.1 * torch.from_numpy(rng.normal(size=r.shape)).float() for r in rs] for rs in reference]
    result, used = _agem_apply(learner, strategy, grads)
    g, r = _flat(grads), _flat(used)
    assert float(g @ r) < 0
    expected = g - (g @ r) / (r @ r) * r  # the paper's projection, one dot product over both networks
    torch.testing.assert_close(_flat(result), expected)
    assert abs(float(_flat(result) @ r)) < 1e-3 * float(r.norm() * g.norm())
    # Each network alone would have been projected differently: the projection is joint.
    critic_alone = _flat(grads[:1]) - (_flat(grads[:1]) @ _flat(used[:1])) / (_flat(used[:1]) @ _flat(used[:1])) * _flat(used[:1])
    assert (critic_alone - _flat(result[:1])).abs().max() > 1e-4


def test_agem_separate_projection_projects_each_network_on_its_own():
    learner, strategy = _agem_with_memory("separate")
    torch.manual_seed(9)
    reference = strategy._reference(["critic", "actor"])
    grads = [[-1.5 * r + 0.05 for r in rs] for rs in reference]
    result, used = _agem_apply(learner, strategy, grads)
    for g, r, out in zip(grads, used, result):
        g, r, out = _flat([g]), _flat([r]), _flat([out])
        torch.testing.assert_close(out, g - (g @ r) / (r @ r) * r)


def test_agem_leaves_gradients_without_conflict_bit_identical():
    learner, strategy = _agem_with_memory("joint")
    torch.manual_seed(9)
    reference = strategy._reference(["critic", "actor"])
    grads = [[0.5 * r + 0.01 for r in rs] for rs in reference]  # g . ref > 0
    result, used = _agem_apply(learner, strategy, grads)
    assert float(_flat(grads) @ _flat(used)) > 0
    for out, g in zip(result, grads):
        for a, b in zip(out, g):
            assert torch.equal(a, b)


def test_agem_and_bc_memory_sampling_follow_the_run_seed():
    picked = {}
    for seed in (0, 0, 1):
        learner, replay = _learner(), _filled_replay()
        strategy = make_strategy(ContinualConfig(sequence="x", method="agem", memory_per_task=20), learner, [0, 1],
                                 seed=seed)
        strategy.end_task(_context(replay, 0))
        bc = make_strategy(ContinualConfig(sequence="x", method="bc", memory_per_task=20), learner, [0, 1], seed=seed)
        bc.end_task(_context(replay, 0))
        picked.setdefault(seed, []).append((strategy.memory["obs"], strategy._memory_batch().obs, bc.memory[0]["obs"]))
    for a, b in zip(*picked[0]):
        assert torch.equal(a, b)  # the same seed draws the same memory
    assert not torch.equal(picked[0][0][0], picked[1][0][0]) and not torch.equal(picked[0][0][2], picked[1][0][2])


# -- real runs: fine-tuning forgets, every method forgets less ----------------------------------

STEPS_PER_TASK = 1000
RUNS = {  # name -> extra flags; hnet needs a hypernetwork, so it has a fine-tuning baseline of its own
    "none": [], **{m: ["--method", m] for m in METHODS if m not in ("none", "hnet")},
    "none-hyper": ["--set", "sac.head=hyper", "--set", "sac.hyper_generates=all"],
    "hnet": ["--method", "hnet", "--set", "sac.head=hyper", "--set", "sac.hyper_generates=all"],
}


@pytest.fixture(scope="module")
def pm2_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pm2")
    common = ["--suite", "pointmass", "--sequence", "PM2", "--steps-per-task", STEPS_PER_TASK, "--backend", "single",
              "--seed", 0, "--set", "run.threads=1"]
    results = train_many({name: [*common, "--run-dir", root / name, *flags] for name, flags in RUNS.items()})
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
    runs = _Runs({name: read_run(root / name) for name in RUNS})
    runs.dirs = {name: root / name for name in RUNS}
    return runs


class _Runs(dict):
    """name -> Run, and .dirs: name -> run directory."""


def test_continual_run_records_schedule_and_evaluates_every_task_at_every_stage_end(pm2_runs):
    run = pm2_runs["none"]
    assert run.tasks == ("reach-e", "reach-w")
    assert [(s.tasks, s.start, s.end) for s in run.schedule] == [
        (("reach-e",), 0, STEPS_PER_TASK), (("reach-w",), STEPS_PER_TASK, 2 * STEPS_PER_TASK)]
    for end in (STEPS_PER_TASK, 2 * STEPS_PER_TASK):
        row = list(run.steps).index(end)  # an evaluation exactly at each stage's end
        assert not np.isnan(run.success[row]).any()
    assert not np.isnan(run.success).any()  # both tasks evaluated at every evaluation
    # Training episodes come from the stage's task only.
    first = run.episodes.step <= STEPS_PER_TASK
    assert set(run.episodes.task[first]) == {0} and set(run.episodes.task[~first]) == {1}


LAST_K = 2  # evaluations averaged at a window's end (5 per stage here: CW's 5 would reach back to the start)


def test_finetuning_forgets_the_first_task(pm2_runs):
    run = pm2_runs["none"]
    learned = continual.value_at_end(run, "reach-e", run.training_window("reach-e"), LAST_K)
    assert learned >= 0.8  # it learned reach-e ...
    assert continual.forgetting(run, LAST_K).per_task[0] >= 0.6  # ... and lost it training reach-w


@pytest.mark.parametrize("method", [m for m in RUNS if not m.startswith("none")])
def test_every_method_forgets_less_than_finetuning_and_still_learns_the_new_task(pm2_runs, method):
    baseline = pm2_runs["none-hyper" if method == "hnet" else "none"]
    run = pm2_runs[method]
    forgot = continual.forgetting(run, LAST_K).per_task[0]
    assert forgot <= continual.forgetting(baseline, LAST_K).per_task[0] - 0.4, (method, forgot)
    # ... and not by refusing to learn: reach-w is learned in its stage as well as fine-tuning learns it.
    learned = continual.value_at_end(run, "reach-w", run.training_window("reach-w"), LAST_K)
    assert learned >= 0.7, (method, learned)


def _updates(run) -> int:
    from launch import checkpoint
    return checkpoint.load_latest(run / "checkpoints")["learner"]["num_updates"]


@pytest.mark.parametrize("method, save_replay", [("replay", False), ("ewc", True)])
def test_continual_run_killed_at_a_boundary_and_mid_stage_resumes_as_if_never_stopped(tmp_path, pm2_runs, method,
                                                                                       save_replay):
    """SIGKILL right after the checkpoint at the stage boundary (1,000), resume, SIGKILL right
    after the one in the middle of stage 2 (1,500), resume: the run finishes with the same
    evaluation and logging steps as the uninterrupted run, keeps reach-e and learns reach-w.
    replay (rehearsal, replay not checkpointed): stage 2 rehearses reach-e from the replay
    written at the end of stage 1; after the mid-stage resume reach-w's buffer refills with 300
    steps first, so exactly 300 updates fewer. ewc with the replay checkpointed: exactly the
    uninterrupted run's updates."""
    run = tmp_path / method
    flags = ["--suite", "pointmass", "--sequence", "PM2", "--steps-per-task", STEPS_PER_TASK, "--backend", "single",
             "--seed", 0, "--set", "run.threads=1", "--method", method, "--set", "run.checkpoint_every=500",
             "--set", f"replay.save_in_checkpoint={str(save_replay).lower()}"]
    proc = start_train(*flags, "--run-dir", run)
    kill_after_checkpoint(proc, run, 1000)
    proc = start_train("--resume", run)
    kill_after_checkpoint(proc, run, 1500)
    assert max(checkpoint_steps(run)) == 1500
    finished = run_train("--resume", run)
    assert finished.returncode == 0, finished.stderr
    assert "resuming" in finished.stdout and "from step 1,500" in finished.stdout

    resumed, uninterrupted = read_run(run), pm2_runs[method]
    assert list(resumed.steps) == list(uninterrupted.steps)  # every evaluation once, none missing
    assert not np.isnan(resumed.success).any()
    assert scalars(run / "tb", "eval/success_mean")[-1][0] == 2 * STEPS_PER_TASK
    assert sorted(set(resumed.episodes.step.tolist())) == sorted(set(uninterrupted.episodes.step.tolist()))
    refill = 0 if save_replay else 300
    assert _updates(run) == _updates(pm2_runs.dirs[method]) - refill == 2 * (STEPS_PER_TASK - 300) - refill
    assert continual.forgetting(resumed, LAST_K).per_task[0] <= 0.2
    reach_w = resumed.success[:, 1]
    assert reach_w[list(resumed.steps).index(STEPS_PER_TASK)] <= 0.1 and reach_w[-1] >= 0.4  # it learned reach-w
    if method == "replay":
        assert (run / "checkpoints" / "rehearsal" / "task-0000.pt").is_file()


def test_single_task_reference_mode_writes_one_run_per_task(tmp_path):
    root = tmp_path / "refs"
    result = run_train("--suite", "pointmass", "--sequence", "reach-e:400,reach-w,reach-e", "--steps-per-task", 300,
                       "--mode", "single-task", "--backend", "single", "--run-dir", root,
                       "--set", "eval.every=200", "--set", "sac.warmup_steps_per_task=100")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in root.iterdir()) == ["reach-e", "reach-w"]
    ref = read_run(root / "reach-e")
    assert ref.trained_tasks() == {"reach-e"} and ref.schedule[0].end == 400  # its longest stage
    config = yaml.safe_load((root / "reach-e" / "config.yaml").read_text())
    assert config["continual"]["sequence"] == "" and config["env"]["tasks"] == "reach-e"
    assert evallog.read(root / "reach-w" / "evals.jsonl")[-1]["step"] == 300


def test_cw10_is_in_v3_names_and_a_short_metaworld_sequence_covers_every_stage(tmp_path):
    """Every CW10 task is a Meta-World v3 env; a short continual run on its first three tasks
    trains each stage and evaluates every task at every stage end (the full CW10 would spend a
    minute on its 11 x 10 evaluation episodes of 500 steps, checking nothing more)."""
    from envs import metaworld_suite
    assert metaworld_suite.SEQUENCES["CW10"] == CW10
    assert set(CW10) <= set(metaworld_suite._env_dict().ALL_V3_ENVIRONMENTS)
    run_dir = tmp_path / "cw3"
    result = run_train("--suite", "metaworld", "--sequence", ",".join(CW10[:3]), "--steps-per-task", 30,
                       "--backend", "single", "--run-dir", run_dir, "--set", "eval.goals=1",
                       "--set", "eval.every=1000000", "--set", "sac.warmup_steps_per_task=10",
                       "--set", "sac.batch_size_per_task=8", "--set", "sac.hidden_sizes=[32,32]",
                       "--set", "run.log_every=30", timeout=600)
    assert result.returncode == 0, result.stderr
    run = read_run(run_dir)
    assert run.tasks == tuple(CW10[:3])
    assert [(s.tasks, s.start, s.end) for s in run.schedule] == [((n,), 30 * i, 30 * (i + 1)) for i, n in enumerate(CW10[:3])]
    assert list(run.steps) == [0, 30, 60, 90]  # the start, then every stage's end
    assert not np.isnan(run.success).any()
    assert all(f"stage {i}/3" in result.stdout for i in range(1, 4))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())  # Continual World's preset applied
    assert config["sac"]["task_input"] is False and config["eval"]["policy"] == "sample"
    assert {r["policy"] for r in evallog.read(run_dir / "evals.jsonl")} == {"sample"}


def test_a_repeated_task_is_scored_against_its_base_tasks_reference_run():
    from metrics.runs import make_run
    run = make_run(["a", "a#2"], [10, 20, 30, 40], [[0.2, 0.0], [0.4, 0.0], [0.0, 0.6], [0.0, 0.8]],
                   [(["a"], 0, 20), (["a#2"], 20, 40)])
    reference = make_run(["a"], [10, 20], [[0.0], [0.5]], [(["a"], 0, 20)])
    # AUC: a = (0.2 + 0.4) / 2 = 0.3, a#2 = (0.6 + 0.8) / 2 = 0.7; reference AUC = 0.25
    ft = continual.forward_transfer(run, [reference]).per_task
    np.testing.assert_allclose(ft, [(0.3 - 0.25) / 0.75, (0.7 - 0.25) / 0.75])
