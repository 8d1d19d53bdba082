"""Multi-task loss balancers (agents/balancers): each against its paper's definition on inputs
small enough to compute by hand, our wiring against a plain per-task computation, and the
learned weights' update rules on toy problems. `mean` giving bit-identical updates to the
learner before the balancer seat: tests/test_architecture.py::test_no_behaviour_change_pinned_evaluations.
Two torchrun ranks with PCGrad: tests/test_runtime.py (tests/scripts/torchrun_gradient.py)."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from agents.balancers import BalanceConfig, TaskLosses
from agents.balancers.gradients import cagrad, mgda, nashmtl, pcgrad, upgrad
from agents.balancers.jacobian import task_jacobian
from agents.balancers.weighting import FAMO, GradNorm, UncertaintyWeighting
from agents.replay import Batch, MultiTaskReplay
from agents.sac import SACConfig, SACLearner
from launch.config import build_config

CONFLICTING = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])    # g1 . g2 = -1
AGREEING = torch.tensor([[1.0, 0.0], [1.0, 1.0]])        # g1 . g2 = 1


def combine(make, jacobian, **kw):
    return make(seed=0, network="critic", **kw).combine(jacobian)


def test_pcgrad_projects_conflicting_gradients_and_takes_the_mean():
    # g1' = g1 - (g1.g2 / |g2|^2) g2 = (0.5, 0.5);  g2' = g2 - (g2.g1 / |g1|^2) g1 = (0, 1)
    assert torch.allclose(combine(pcgrad, CONFLICTING), torch.tensor([0.25, 0.75]))
    assert torch.allclose(combine(pcgrad, AGREEING), AGREEING.mean(0))  # no conflict: the mean


def _cagrad_by_grid(g: torch.Tensor, c: float) -> torch.Tensor:
    """The paper's dual by brute force over w in [0, 1]: min_w g_w.g0 + c |g0| |g_w|, then
    d = g0 + c |g0| / |g_w| g_w, divided by 1 + c^2 as the authors' MT-SAC code."""
    g = g.double()
    g0 = g.mean(0)
    w = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:, None]
    gw = w * g[0] + (1 - w) * g[1]
    best = gw[(gw @ g0 + c * g0.norm() * gw.norm(dim=1)).argmin()]
    return ((g0 + c * g0.norm() / best.norm() * best) / (1 + c * c)).float()


@pytest.mark.parametrize("jacobian", [CONFLICTING, AGREEING, torch.tensor([[3.0, 0.5], [-0.2, 1.0]])])
def test_cagrad_solves_its_dual(jacobian):
    out = combine(cagrad, jacobian, cagrad_c=0.5)
    assert torch.allclose(out, _cagrad_by_grid(jacobian, 0.5), atol=1e-4), out
    assert not torch.allclose(out, jacobian.mean(0), atol=1e-2)  # it moves away from the mean


def test_cagrad_of_agreeing_tasks_is_the_scaled_mean():
    g = torch.tensor([[0.3, -0.4], [0.3, -0.4]])
    assert torch.allclose(combine(cagrad, g, cagrad_c=0.9), g[0] * 1.9 / 1.81, atol=1e-5)


@pytest.mark.parametrize("jacobian", [CONFLICTING, AGREEING, torch.tensor([[1.0, 0.0], [0.5, 0.1]])])
def test_mgda_is_the_minimum_norm_point_of_the_hull(jacobian):
    g1, g2 = jacobian
    w = float(((g2 - g1) @ g2 / (g1 - g2).pow(2).sum()).clamp(0, 1))  # 2 tasks: closed form
    assert torch.allclose(combine(mgda, jacobian), w * g1 + (1 - w) * g2, atol=2e-3)


def test_upgrad_averages_the_projections_onto_the_dual_cone():
    # the cone {x : x1 >= 0, x2 >= x1}: g1 -> (0.5, 0.5), g2 -> (0, 1); torchjd regularises G by 1e-4
    assert torch.allclose(combine(upgrad, CONFLICTING), torch.tensor([0.25, 0.75]), atol=5e-4)
    assert torch.allclose(combine(upgrad, AGREEING), AGREEING.mean(0), atol=1e-6)
    # three tasks, against a plain projection by scipy
    jac = np.array([[1.0, 0.2], [-0.6, 1.0], [0.4, -0.3]])  # in one half-plane: the cone is not {0}
    cone = {"type": "ineq", "fun": lambda x: jac @ x}
    projections = [minimize(lambda x, g=g: ((x - g) ** 2).sum(), g * 0, constraints=[cone], tol=1e-12).x
                   for g in jac]
    expected = torch.tensor(np.mean(projections, axis=0), dtype=torch.float32)
    assert expected.norm() > 0.1
    assert torch.allclose(combine(upgrad, torch.tensor(jac, dtype=torch.float32)), expected, atol=1e-3)


def test_nashmtl_solves_the_bargaining_condition():
    """Orthogonal gradients of norms 1 and 4: G alpha = 1 / alpha gives alpha_i = 1 / |g_i|, so
    d = (1, 1); then clipped to norm max_norm."""
    g = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert torch.allclose(combine(nashmtl, g, nashmtl_max_norm=10.0), torch.tensor([1.0, 1.0]), atol=1e-2)
    assert torch.allclose(combine(nashmtl, g, nashmtl_max_norm=1.0), torch.tensor([1.0, 1.0]) / 2 ** 0.5, atol=1e-2)


def _tiny_learner(method: str, networks=(), **sac) -> SACLearner:
    torch.manual_seed(0)
    cfg = SACConfig(hidden_sizes=(16, 16), **sac)
    return SACLearner(cfg, 3, 2, 2, torch.device("cpu"), balance=BalanceConfig(method=method, networks=networks))


def _batch(per_task=8, tasks=2, seed=1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    n = per_task * tasks
    task = torch.arange(tasks).repeat_interleave(per_task)
    return Batch(torch.randn(n, 3, generator=g), torch.rand(n, 2, generator=g) * 2 - 1,
                 torch.randn(n, generator=g) * (1 + 5 * task), torch.randn(n, 3, generator=g), torch.zeros(n), task)


def test_pcgrad_wiring_every_critic_parameter_and_each_tasks_bellman_loss():
    """The learner's critic gradient under PCGrad equals PCGrad applied by hand to per-task
    gradients computed one task at a time from the plain soft Bellman loss."""
    learner = _tiny_learner("pcgrad")
    batch = _batch()._replace(reward=torch.tensor([3.0, -3.0]).repeat_interleave(8))  # opposite targets
    torch.manual_seed(5)
    losses, _, _ = learner.critic_loss(batch)
    learner._gradients("critic", losses, {}, ())
    ours = torch.cat([p.grad.flatten() for p in learner.critic.parameters()])

    torch.manual_seed(5)  # the same next-action draws
    obs, action, reward, next_obs, terminated, task = batch
    with torch.no_grad():
        next_action, next_log_pi = learner.actor.sample(next_obs, task)
        target = learner.critic_target(next_obs, next_action, task).min(dim=0).values
        y = reward + 0.99 * (target - learner.log_alpha.exp()[task] * next_log_pi)
    grads = []
    for t in range(2):
        rows = task == t
        q = learner.critic(obs[rows], action[rows], task[rows])
        loss = ((q[0] - y[rows]) ** 2).mean() + ((q[1] - y[rows]) ** 2).mean()
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(learner.critic.parameters()))]))
    g1, g2 = grads
    assert g1 @ g2 < 0  # the projection fires
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    assert torch.allclose(ours, (p1 + p2) / 2, atol=1e-6)
    assert not torch.allclose(ours, (g1 + g2) / 2, atol=1e-3)


@pytest.mark.parametrize("sac", [{}, {"layer_norm": True, "task_input": False}, {"trunk": "care", "task_input": False},
                                 {"trunk": "moore"}, {"trunk": "bronet", "task_embedding_dim": 4},
                                 {"trunk": "hyper", "head": "hyper"}, {"encoder": "mlp", "encoder_sizes": (8,)}],
                         ids=["mlp", "cw", "care", "moore", "bronet", "hyper", "encoder"])
def test_one_backward_jacobian_equals_torchjds(sac):
    """The per-task gradients from one backward (linear layers) + jac (the rest) equal torchjd's
    Jacobian of every parameter, for the critic's and the actor's losses, on every trunk."""
    from torchjd.autojac import jac
    learner = _tiny_learner("pcgrad", **sac)
    batch = _batch(tasks=2)
    critic, _, _ = learner.critic_loss(batch)
    actor, _, _ = learner.actor_loss(batch)
    for losses, params in ((critic, learner.params["critic"]), (actor, learner.params["actor"])):
        assert losses.calls or sac.get("trunk") == "hyper"  # the linear layers were recorded (hyper: none)
        ours = task_jacobian(losses.per_task(), losses.task, params, losses.calls, retain_graph=True)
        plain = torch.cat([j.flatten(1) for j in jac(losses.per_task(), params, retain_graph=True)], dim=1)
        assert ours.shape == plain.shape and torch.allclose(ours, plain, atol=1e-5, rtol=1e-4)
        assert plain.abs().sum() > 0


class _Penalty:
    """A hook's loss term (as a continual penalty): k |theta|^2 on the critic."""

    def __init__(self, learner, k=0.3):
        self.learner, self.k = learner, k

    def loss_terms(self, network, batch, features):
        if network != "critic":
            return {}
        return {"penalty": self.k * sum(p.pow(2).sum() for p in self.learner.critic.parameters())}

    def observe_gradients(self, network):
        self.seen = torch.cat([p.grad.flatten() for p in self.learner.critic.parameters()]).clone()


def test_penalty_terms_are_added_after_balancing():
    learner = _tiny_learner("pcgrad")
    hook = _Penalty(learner)
    losses, features, _ = learner.critic_loss(_batch())
    terms = learner._terms("critic", _batch(), features, [hook])
    learner._gradients("critic", losses, terms, [hook])
    total = torch.cat([p.grad.flatten() for p in learner.critic.parameters()])
    theta = torch.cat([p.detach().flatten() for p in learner.critic.parameters()])
    assert torch.allclose(total, hook.seen + 2 * hook.k * theta, atol=1e-6)  # PCGrad(tasks) + the penalty's


def test_gradnorm_moves_weights_toward_equal_training_rates():
    """Two tasks through one shared layer, task 0's loss 20x larger: GradNorm lowers its weight,
    raises the other's (summing to 2), and brings the weighted gradient norms together."""
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 4, bias=False)
    heads = torch.randn(2, 4)
    x, y = torch.randn(64, 4), torch.randn(2, 64)
    scale = torch.tensor([20.0, 1.0])
    balancer = GradNorm(num_tasks=2, layer=shared.weight, lr=0.01, gradnorm_alpha=1.5)
    optimizer = torch.optim.Adam(shared.parameters(), lr=1e-3)
    task = torch.arange(2).repeat_interleave(64)

    def norms():
        out = shared(x) @ heads.T  # [64, 2]
        per = [(scale[i] * (out[:, i] - y[i]) ** 2).mean() for i in range(2)]
        return torch.stack([torch.autograd.grad(loss, shared.weight, retain_graph=True)[0].norm() for loss in per])

    before = norms()
    for _ in range(300):
        out = shared(x) @ heads.T
        losses = TaskLosses([(scale[:, None] * (out.T - y) ** 2).flatten()], task)
        optimizer.zero_grad()
        balancer.backward(losses, list(shared.parameters()), "critic")
        optimizer.step()
        balancer.after_step("critic", losses)
    w = balancer.weights.detach()
    assert w[0] < 0.7 < 1.3 < w[1] and torch.isclose(w.sum(), torch.tensor(2.0))
    weighted = w * norms()
    assert abs(float((weighted[0] / weighted[1]).log())) < 0.5 * abs(float((before[0] / before[1]).log()))


def test_uncertainty_weights_converge_to_the_log_loss():
    task = torch.arange(2).repeat_interleave(3)
    fixed = torch.tensor([4.0, 0.25]).repeat_interleave(3)
    theta = torch.zeros(1, requires_grad=True)  # the network: the losses do not depend on it
    balancer = UncertaintyWeighting(num_tasks=2, lr=0.05)
    for _ in range(1500):
        losses = TaskLosses([fixed + 0 * theta], task)
        balancer.backward(losses, [theta], "critic")
        balancer.after_step("critic", losses)
    assert torch.allclose(balancer.log_var.detach(), torch.tensor([4.0, 0.25]).log(), atol=0.02)


@pytest.mark.parametrize("make", [lambda: UncertaintyWeighting(num_tasks=3),
                                  lambda: FAMO(num_tasks=3),
                                  lambda: GradNorm(num_tasks=3, layer=torch.nn.Parameter(torch.ones(2, 2)))])
def test_weights_of_tasks_not_in_the_batch_stay_put(make):
    """A continual stage trains tasks {0, 1}; task 2's weight must not drift (Adam momentum, decay)."""
    balancer = make()
    learned = next(v for v in balancer.state_dict().values() if isinstance(v, torch.Tensor) and v.numel() == 3)
    with torch.no_grad():
        learned.copy_(torch.tensor([0.5, 1.0, 1.5]))
    layer = getattr(balancer, "layer", torch.nn.Parameter(torch.ones(2, 2)))
    for step in range(6):
        tasks = [0, 1, 2] if step == 0 else [0, 1]
        task = torch.tensor(tasks).repeat_interleave(2)
        per_row = (layer.sum() * torch.arange(1.0, len(task) + 1)) ** 2 / 10
        losses = TaskLosses([per_row], task, recompute=lambda n=len(tasks): torch.full((n,), 0.5))
        balancer.backward(losses, [layer], "critic")
        balancer.after_step("critic", losses)
        if step == 0:
            third = float(learned[2])
    assert float(learned[2]) == third and not torch.allclose(learned[:2], torch.tensor([0.5, 1.0]))


def test_gradnorm_balances_the_last_shared_weight_matrix():
    learner = _tiny_learner("gradnorm")
    layer = learner.balancers["critic"].layer
    assert layer is learner.critic.net.trunk.layers[-1].weight and layer.shape[-2:] == (16, 16)


def test_famo_weights_follow_its_update_rule_on_a_hand_made_sequence():
    befores = [[1.0, 2.0], [0.6, 1.7], [0.5, 1.3]]
    afters = [[0.5, 1.8], [0.55, 1.2], [0.45, 1.25]]
    lr, decay = 0.025, 0.01
    balancer = FAMO(num_tasks=2, lr=lr, famo_decay=decay)
    task = torch.tensor([0, 0, 1, 1])
    # by hand: z = softmax(xi); grad = (diag z - z z^T) delta, delta = log before - log after;
    # then Adam (beta 0.9, 0.999, eps 1e-8) with L2 weight decay added to the gradient
    xi, m, v = np.zeros(2), np.zeros(2), np.zeros(2)
    for step, (before, after) in enumerate(zip(befores, afters), start=1):
        theta = torch.tensor(before, requires_grad=True)
        losses = TaskLosses([theta.repeat_interleave(2)], task, recompute=lambda a=after: torch.tensor(a))
        balancer.backward(losses, [theta], "critic")
        z = np.exp(xi) / np.exp(xi).sum()
        c = (z / (np.array(before) + 1e-8)).sum()
        # the network's gradient: d/d L_i of sum_j z_j log L_j / c = z_i / (c L_i)
        assert np.allclose(theta.grad.numpy(), z / (c * np.array(before)), atol=1e-6)
        balancer.after_step("critic", losses)
        delta = np.log(before) - np.log(after)
        g = (np.diag(z) - np.outer(z, z)) @ delta + decay * xi
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        xi = xi - lr * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
        assert np.allclose(balancer.logits.detach().numpy(), xi, atol=1e-6), step
    assert xi[0] < xi[1]  # task 0 improved faster: FAMO moves weight to task 1


@pytest.mark.parametrize("method", ["pcgrad", "famo", "nashmtl", "gradnorm", "uncertainty"])
def test_a_balancers_state_survives_a_checkpoint(method, tmp_path):
    """A learner restored from its saved state (weights_only) continues exactly as the original."""
    learners = [_tiny_learner(method) for _ in range(2)]  # each on its default networks
    batch = _batch()
    torch.manual_seed(3)
    for _ in range(3):
        learners[0].update(batch)
    torch.save(learners[0].state_dict(), tmp_path / "state.pt")
    learners[1].load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    after = []
    for learner in learners:
        torch.manual_seed(4)
        for _ in range(2):
            learner.update(batch)
        after.append(torch.cat([p.detach().flatten() for p in learner.critic.parameters()]))
    assert torch.equal(after[0], after[1])


def test_rewards_are_normalised_per_task_when_sampled_and_stored_raw():
    replay = MultiTaskReplay(2, 100, 1, 1, normalize_rewards=True)
    rewards = {0: np.array([1.0, 3.0, 5.0, 7.0]), 1: np.array([100.0, 100.0, 300.0, 300.0])}
    for t, r in rewards.items():
        n = len(r)
        replay.add(np.full(n, t), np.zeros((n, 1)), np.zeros((n, 1)), r, np.zeros((n, 1)), np.zeros(n))
    batch = replay.sample(64, np.random.default_rng(0), tasks=[0, 1])
    for t, r in rewards.items():
        sampled = batch.reward[batch.task == t].numpy()
        expected = r / r.std()  # the std over every reward added (not subtracting the mean)
        assert np.abs(sampled[:, None] - expected[None]).min(axis=1).max() < 1e-5 and len(set(sampled)) > 1
        assert np.array_equal(replay.buffers[t]["reward"][:4], r)  # stored raw


def test_kurin_preset_is_their_setting():
    cfg = build_config("metaworld", "launch/presets/mt10-kurin.yaml")
    assert cfg.balance.method == "mean" and cfg.sac.head == "single" and cfg.sac.shared_temperature
    assert not cfg.sac.task_input and cfg.sac.log_std_min == -20 and cfg.sac.warmup_steps_per_task == 1500
    assert cfg.sac.actor_weight_decay == 3e-4 and cfg.replay.normalize_rewards
    assert cfg.env.tasks == "MT10" and cfg.replay.capacity_per_task == 400_000 and cfg.run.steps == 20_000_000


def test_actor_weight_decay_and_gradient_clipping_act():
    batch = _batch()
    learners = {}
    for name, sac in (("plain", {}), ("decay", {"actor_weight_decay": 0.5}), ("clip", {"max_grad_norm": 1e-3})):
        learners[name] = _tiny_learner("mean", actor_lr=0.1, **sac)
        torch.manual_seed(0)
        learners[name].update(batch)

    def flat(values):
        return torch.cat([v.flatten() for v in values])
    assert not torch.allclose(flat(learners["plain"].actor.parameters()), flat(learners["decay"].actor.parameters()))
    # Adam's first moment after one step is 0.1 x the gradient it stepped with: clipped, its norm
    # is at most 0.1 x max_norm, for each network (the plain update's is far larger)
    for name, bound in (("clip", 1e-4 * (1 + 1e-4)), ("plain", None)):
        for optimizer in (learners[name].critic_optimizer, learners[name].actor_optimizer):
            norm = flat(s["exp_avg"] for s in optimizer.state.values()).norm()
            assert norm <= bound if bound else norm > 1e-2


def test_a_run_with_every_stabilizer_and_a_combiner(tmp_path):
    """End to end on pointmass: PCGrad with Kurin's stabilizers (one shared temperature, reward
    normalisation, actor weight decay, clipping) trains, logs one temperature for every task and
    checkpoints the reward statistics."""
    from launch import checkpoint
    from tests.conftest import scalars, train_in_process
    run = tmp_path / "run"
    proc = train_in_process("--suite", "pointmass", "--backend", "single", "--steps", 1500, "--balancer", "pcgrad",
                            "--eval-every", 0, "--run-dir", run, "--set", "sac.shared_temperature=true",
                            "--set", "replay.normalize_rewards=true", "--set", "sac.actor_weight_decay=3e-4",
                            "--set", "sac.max_grad_norm=10", "--set", "run.log_every=500")
    assert proc.returncode == 0, proc.stderr
    alphas = {scalars(run / "tb", f"alpha/{t}")[-1][1] for t in ("reach-e", "reach-n", "reach-w", "reach-s")}
    assert len(alphas) == 1 and alphas != {1.0}  # one temperature, and it moved
    state = checkpoint.load_latest(run / "checkpoints")
    assert state["reward_stats"][0][:, 0].sum() == 1500 and state["learner"]["num_updates"] > 0
