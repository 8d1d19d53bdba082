"""Continual learning: schedules and the strategies' mechanics, checked exactly or by hand
(real runs: tests/test_continual_runs.py)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.networks import LOG_STD_MAX, LOG_STD_MIN
from agents.replay import MultiTaskReplay
from agents.sac import SACLearner
from agents.sac.config import SACConfig
from continual.schedule import Stage, build_schedule
from continual.strategies import METHODS, TaskContext, importance, make_strategy
from envs.registry import sequence_presets
from launch.config import ContinualConfig
from launch.train import main as train_main

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
        learner.update(replay.sample(32, rng, [task]), [strategy])


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
    assert "net.head.linear.weight" not in shared and "net.trunk.layers.0.weight" in shared  # heads are not managed
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
    w = trained["net.trunk.layers.0.weight"].abs().flatten()
    threshold = w.sort().values[int(len(w) * 0.5)]
    kept = trained["net.trunk.layers.0.weight"].abs() > threshold
    owner = strategy.owner["actor"][list(shared).index("net.trunk.layers.0.weight")]
    assert torch.equal(owner == 1, kept) and int(kept.sum()) == len(w) - int(len(w) * 0.5) - 1
    assert bool((before_prune["net.trunk.layers.0.weight"][~kept] == 0).all())           # pruned -> zero
    assert torch.equal(before_prune["net.trunk.layers.0.weight"][kept], trained["net.trunk.layers.0.weight"][kept])
    # Retraining moved only kept weights (biases frozen, as in CW) and the unmanaged head.
    layer0 = shared["net.trunk.layers.0.weight"].detach()
    assert bool((layer0[~kept] == 0).all())
    assert not torch.equal(layer0[kept], before_prune["net.trunk.layers.0.weight"][kept])
    assert torch.equal(shared["net.trunk.layers.0.bias"].detach(), before_prune["net.trunk.layers.0.bias"])
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
        learner, replay = _learner(head="hyper", trunk="hyper" if generates == "all" else "mlp"), _filled_replay()
        cfg = ContinualConfig(sequence="x", method=method, coef=1000.0)
        strategy = make_strategy(cfg, learner, [0, 1])
        generators = [part.generator for part in (learner.actor.net.trunk, learner.actor.net.head)
                      if hasattr(part, "generator")]
        _train(learner, strategy, replay, 0, 10)
        strategy.end_task(_context(replay, 0))
        def task0_weights(generators=generators):
            with torch.no_grad():
                return [x.clone() for hyper in generators for layer in hyper.generate([0])
                        for x in layer]
        assert len(generators) == (2 if generates == "all" else 1)
        before = task0_weights()
        learner.reset_optimizers()
        _train(learner, strategy, replay, 1, 40)
        after = task0_weights()
        drift[method] = max(float((a - b).abs().max()) for a, b in zip(after, before))
    assert drift["hnet"] < 0.005, drift
    assert drift["none"] > 3 * drift["hnet"], drift  # without the regularizer the old task's weights move


# -- importances ---------------------------------------------------------------------------------

def _features(net, obs, task):
    """Input of the output layer (the trunk's last activation) of a TaskNetwork, by hand."""
    h = torch.cat([obs, net.task_input.task_codes[task]], -1).expand(net.ensemble, *obs.shape[:-1], -1)
    for layer in net.trunk.layers:
        h = torch.relu(layer(h))
    return h


def test_actor_fisher_and_mas_match_hand_derivation_on_the_output_layer():
    """mu_d = h . W[:, d] + b_d and log sigma_d = LMIN + (LMAX-LMIN)/2 (tanh(z_d) + 1), z_d = h . W[:, A+d] + b:
        F(W[j, d])   = E[h_j^2 / (sigma_d^2 + 1e-6)]
        F(W[j, A+d]) = E[2 (sigma_d (LMAX-LMIN)/2 (1 - tanh(z_d)^2) h_j)^2 / (sigma_d^2 + 1e-6)]
        MAS(W[j, d]) = E[|2 mu_d h_j|],  MAS(W[j, A+d]) = E[|2 log sigma_d (LMAX-LMIN)/2 (1 - tanh(z_d)^2) h_j|]"""
    learner = _learner(head="single")
    actor, a = learner.actor, 2
    obs, task = torch.randn(40, 3), torch.randint(0, 2, (40,))
    states = importance.States((obs, task), (), torch.ones(40, 1))
    fisher = importance.actor_fisher(actor, states)
    mas = importance.actor_mas(actor, states)
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
    fisher = importance.critic_fisher(critic, importance.States((), (obs, action, task), torch.ones(40, 1)))
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
    losses, _, _ = learner.actor_loss(batch)
    task_grad = torch.autograd.grad(losses.mean(), [p for _, p in strategy.shared("actor")])
    torch.manual_seed(4)
    losses, features, _ = learner.actor_loss(batch)
    learner._gradients("actor", losses, learner._terms("actor", batch, features, [strategy]), [strategy])
    for seen, expected in zip(strategy._grads["actor"], task_grad, strict=True):
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
    assert learner.actor.net.trunk.layers[0].weight.grad.abs().sum() > 0
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
    g_critic, r_critic = _flat(grads[:1]), _flat(used[:1])
    critic_alone = g_critic - (g_critic @ r_critic) / (r_critic @ r_critic) * r_critic
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
