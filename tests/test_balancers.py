"""Multi-task loss balancers (agents/balancers): each against its paper's definition on inputs
small enough to compute by hand, our wiring against a plain per-task computation, and Kurin et
al.'s stabilizers; the learned weights' update rules and every balancer's checkpointed state:
tests/test_balancer_weights.py. `mean` giving bit-identical updates to the
learner before the balancer seat: tests/test_architecture.py::test_no_behaviour_change_pinned_evaluations.
Two torchrun ranks with PCGrad: tests/test_runtime.py (tests/scripts/torchrun_gradient.py)."""

import copy

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from agents import seeding
from agents.balancers import BalanceConfig, Balancer, TaskLosses
from agents.balancers.gradients import GradientCombiner, UnitRows, cagrad, mgda, nashmtl, pcgrad, upgrad
from agents.balancers.jacobian import task_jacobian
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


def _conflicting(tasks=4, seed=0):
    return torch.randn(tasks, 6, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def cuda_reseeds(monkeypatch):
    """Every reseeding of the CUDA generators (torch.manual_seed makes one, GPU or not)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    return calls


@pytest.mark.parametrize("make", [pcgrad, cagrad, mgda, nashmtl, upgrad])
def test_a_combiner_leaves_the_global_generators_alone(make, cuda_reseeds):
    """Its draws come from its own stream: torch's CPU generator ends as it was, no CUDA
    generator is reseeded, and PCGrad's task orders are the ones that stream gives."""
    torch.manual_seed(0)
    cuda_reseeds.clear()
    before = torch.get_rng_state()
    out = make(seed=0, network="critic").combine(_conflicting())
    assert torch.equal(torch.get_rng_state(), before) and cuda_reseeds == []
    if make is pcgrad:  # the same permutations as before the fix: torch's CPU generator seeded from the stream
        from torchjd.aggregation import PCGrad
        stream = torch.Generator().manual_seed(seeding.seed_for(0, "balancer", 0))
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=stream)))
        assert torch.equal(out, PCGrad()(_conflicting()) / 4)
        assert not torch.equal(out, make(seed=1, network="critic").combine(_conflicting()))  # T = 4: order matters


def test_a_learner_update_with_a_combiner_draws_what_the_means_draws(cuda_reseeds):
    """A whole update with PCGrad (critic, actor, temperatures) consumes torch's CPU generator
    exactly as the mean's does, and reseeds no CUDA generator."""
    states = {}
    for method in ("mean", "pcgrad"):
        learner = _tiny_learner(method, tasks=4)
        torch.manual_seed(3)
        cuda_reseeds.clear()
        learner.update(_batch(tasks=4))
        states[method] = torch.get_rng_state()
        assert cuda_reseeds == [], method
    assert torch.equal(states["mean"], states["pcgrad"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the CUDA generators' states")
@pytest.mark.gpu
def test_a_combiner_leaves_the_cuda_generators_alone():
    torch.cuda.init()
    before = torch.cuda.get_rng_state_all()
    pcgrad(seed=0, network="critic").combine(_conflicting().cuda())
    assert all(torch.equal(a, b) for a, b in zip(before, torch.cuda.get_rng_state_all()))


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
    # the dual's term c |g0| / |g_w| g_w is there: not the mean alone (times the authors' 1 / (1 + c^2))
    assert (out - jacobian.mean(0) / 1.25).norm() > 0.1


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


def test_mgda_l2_normalises_each_tasks_gradient():
    """Kurin et al.'s MT10 MGDA (normalize="l2"): on unit-length gradients the minimum-norm point
    weighs two orthogonal tasks equally; on the raw ones (the paper) it follows the small one."""
    g = torch.tensor([[10.0, 0.0], [0.0, 0.1]])
    assert torch.allclose(combine(mgda, g), torch.tensor([0.001, 0.1]), atol=1e-4)
    assert torch.allclose(combine(mgda, g, mgda_normalize="l2"), torch.tensor([0.5, 0.5]), atol=1e-4)
    # through the config: the learner's combiners get it
    learner = _tiny_learner("mgda", balance={"mgda_normalize": "l2"})
    assert isinstance(learner.balancers["critic"].aggregator, UnitRows)
    assert torch.allclose(learner.balancers["actor"].combine(g), torch.tensor([0.5, 0.5]), atol=1e-4)


def test_nashmtl_solves_the_bargaining_condition():
    """Orthogonal gradients of norms 1 and 4: G alpha = 1 / alpha gives alpha_i = 1 / |g_i|, so
    d = (1, 1); then clipped to norm max_norm."""
    g = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert torch.allclose(combine(nashmtl, g, nashmtl_max_norm=10.0), torch.tensor([1.0, 1.0]), atol=1e-2)
    assert torch.allclose(combine(nashmtl, g, nashmtl_max_norm=1.0), torch.tensor([1.0, 1.0]) / 2 ** 0.5, atol=1e-2)
    # a solve's norm is sqrt(T) (alpha_i (G^T G alpha)_i = 1), so max_norm 1 clips every solve; 0: no clip
    jacobian = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    assert abs(float(combine(nashmtl, jacobian, nashmtl_max_norm=0.0).norm()) - 3 ** 0.5) < 1e-3
    assert abs(float(combine(nashmtl, jacobian, nashmtl_max_norm=1.0).norm()) - 1.0) < 1e-5


def _linear_losses(rows: torch.Tensor, tasks: list[int], theta: torch.Tensor) -> TaskLosses:
    """Task i's loss rows[i] . theta (2 batch rows each): its gradient is rows[i]."""
    task = torch.tensor(tasks).repeat_interleave(2)
    return TaskLosses([(rows.repeat_interleave(2, dim=0) * theta).sum(1)], task)


def test_nashmtl_keeps_one_solver_per_set_of_tasks():
    """A continual stage with as many tasks as the last but other ones solves for its own weights
    (update_every 2: a solver keyed by the task count would reuse the last stage's)."""
    theta = torch.zeros(2, requires_grad=True)
    first, second = torch.tensor([[1.0, 0.0], [0.0, 4.0]]), torch.tensor([[4.0, 0.0], [0.0, 1.0]])
    combiner = nashmtl(seed=0, network="critic", nashmtl_max_norm=0.0, nashmtl_update_every=2)
    combiner.backward(_linear_losses(first, [0, 1], theta), [theta], "critic")
    assert torch.allclose(theta.grad, torch.tensor([1.0, 1.0]), atol=1e-2)
    saved = copy.deepcopy(combiner.state_dict())
    combiner.backward(_linear_losses(second, [2, 3], theta), [theta], "critic")
    assert torch.allclose(theta.grad, torch.tensor([1.0, 1.0]), atol=1e-2)  # its own solve (reused: (4, 0.25))
    combiner.backward(_linear_losses(second, [0, 1], theta), [theta], "critic")  # tasks 0, 1 again: their weights
    assert torch.allclose(theta.grad, torch.tensor([4.0, 0.25]), atol=1e-2)
    # a checkpoint from before the solvers were keyed by task ids (one per task count) still loads:
    # the first set of that many tasks continues it (here: reuses its weights, as it did then)
    old = nashmtl(seed=0, network="critic", nashmtl_max_norm=0.0, nashmtl_update_every=2)
    old.load_state_dict({"draws": saved["draws"], "aggregator": {"2": saved["aggregator"]["by_tasks"]["0,1"]}})
    old.backward(_linear_losses(second, [5, 6], theta), [theta], "critic")
    assert torch.allclose(theta.grad, torch.tensor([4.0, 0.25]), atol=1e-2)
    assert list(old.state_dict()["aggregator"]["by_tasks"]) == ["5,6"]


def _tiny_learner(method: str, networks=(), tasks: int = 2, balance: dict | None = None, **sac) -> SACLearner:
    torch.manual_seed(0)
    cfg = SACConfig(hidden_sizes=(16, 16), **sac)
    return SACLearner(cfg, 3, 2, tasks, torch.device("cpu"),
                      balance=BalanceConfig(method=method, networks=networks, **(balance or {})))


def _batch(per_task=8, tasks=2, seed=1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    n = per_task * tasks
    task = torch.arange(tasks).repeat_interleave(per_task)
    return Batch(torch.randn(n, 3, generator=g), torch.rand(n, 2, generator=g) * 2 - 1,
                 torch.randn(n, generator=g) * (1 + 5 * task), torch.randn(n, 3, generator=g), torch.zeros(n), task)


# task 0's log pi above the target entropy (-2), task 1's below: their temperature gradients
# -(log pi + target) = -1 and 7 disagree in sign
DISAGREEING_LOG_PI = torch.tensor([3.0, -5.0]).repeat_interleave(4)


def _temperature_gradient(learner) -> tuple[torch.Tensor, torch.Tensor]:
    """(the learner's temperature gradient, the mean's) for DISAGREEING_LOG_PI."""
    def losses():
        return learner.temperature_loss(DISAGREEING_LOG_PI, torch.arange(2).repeat_interleave(4))
    (mean,) = torch.autograd.grad(losses().mean(), learner.log_alpha)
    learner._gradients("alpha", losses(), {}, ())
    return learner.log_alpha.grad, mean


@pytest.mark.parametrize("method", ["pcgrad", "mgda"])
def test_a_shared_temperature_takes_the_mean_under_a_combiner(method):
    """One temperature for every task: its T x 1 Jacobian would be combined to 0 whenever two
    tasks disagree (PCGrad, MGDA); by default it takes the mean (Kurin's alpha_use_naive_opt)."""
    learner = _tiny_learner(method, shared_temperature=True)
    assert type(learner.balancers["alpha"]) is Balancer and isinstance(learner.balancers["critic"], GradientCombiner)
    ours, mean = _temperature_gradient(learner)
    assert torch.equal(ours, mean) and torch.allclose(mean, torch.tensor([3.0]))
    # named in balance.networks, it is combined (as mtrl's PCGrad): the disagreeing tasks cancel
    ours, _ = _temperature_gradient(_tiny_learner(method, networks=("critic", "actor", "alpha"),
                                                  shared_temperature=True))
    assert float(ours.abs()) < 1e-6


@pytest.mark.parametrize("method", ["pcgrad", "mgda"])
def test_per_task_temperatures_are_still_combined(method):
    learner = _tiny_learner(method)
    ours, mean = _temperature_gradient(learner)
    by_hand = combine({"pcgrad": pcgrad, "mgda": mgda}[method], torch.diag(torch.tensor([-1.0, 7.0])))
    assert torch.allclose(ours, by_hand, atol=1e-6) and torch.allclose(mean, torch.tensor([-0.5, 3.5]))
    if method == "mgda":  # orthogonal rows: the minimum-norm point weighs them 1/|g_i|^2, not the mean
        assert not torch.allclose(ours, mean, atol=0.1)


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


def test_losses_are_prepared_only_as_their_balancer_needs():
    """The learner's losses carry what their balancer reads and nothing more (agents/balancers/
    prepare.py): the mean neither recorded layers nor a re-computation; a combiner the recorded
    layers; FAMO a re-computation that, before any step, gives the losses again exactly: the same
    batch, the critic's same target, the actor's same random draws (replayed, not drawn anew)."""
    batch, log_pi = _batch(), torch.tensor([3.0, -5.0]).repeat_interleave(8)
    mean, pcgrad_learner = _tiny_learner("mean"), _tiny_learner("pcgrad")
    for learner in (mean, pcgrad_learner):
        for losses in (learner.critic_loss(batch)[0], learner.actor_loss(batch)[0]):
            assert losses.recompute is None and bool(losses.calls) == (learner is pcgrad_learner)
    famo = _tiny_learner("famo", networks=("critic", "actor", "alpha"))
    for loss in (lambda: famo.critic_loss(batch)[0], lambda: famo.actor_loss(batch)[0],
                 lambda: famo.temperature_loss(log_pi, batch.task)):
        torch.manual_seed(3)
        losses = loss()
        torch.randn(5)  # the generators move on before FAMO recomputes
        with torch.no_grad():
            assert torch.equal(losses.recompute(), losses.per_task().detach())


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


# Kurin et al. 2022's MT10 runs: yobibyte/unitary-scalarization-dmtl @875031d, rl_experiments/mtrl/
# configs_mt10/run_mtsac_mt10_buffer_rewnorm_4x_buf_actor_reg_3em4.sh (MT-SAC; MGDA:
# run_mgda_mt10_buffer_rewnorm_4x_buf_def_lr.sh, mtrl/agent/mtl_optimizer.py:57) and the mtrl configs
# they load (mtrl's config folder: agent/components/metaworld_actor.yaml, agent/state_sac.yaml,
# agent/optimizers/metaworld_*.yaml, experiment/metaworld.yaml).
KURIN_MT10 = {"num_envs": 10, "batch_size": 1280, "capacity": 4_000_000, "num_train_steps": 2_000_000,
              "init_steps": 1500, "actor_weight_decay": 3e-4, "num_layers": 3, "hidden_dim": 400,
              "log_std_bounds": (-20.0, 2.0), "lr": 3e-4, "discount": 0.99, "critic_tau": 0.005,
              "init_temperature": 1.0}


def test_kurin_preset_builds_their_learner():
    """The preset's learner, built for MT10's shapes, behaves as theirs: one temperature, no task
    information reaching either network (single head, no task id), Adam's L2 term on the actor
    only, their sizes and rates; per row, their batch, buffer and step counts. Their MGDA run is
    the preset with balance.mgda_normalize=l2, the temperature by the mean and no actor decay."""
    k = KURIN_MT10
    cfg = build_config("metaworld", "launch/config/presets/mt10-kurin.yaml")
    assert cfg.env.tasks == "MT10" and cfg.balance.method == "mean"
    assert cfg.sac.batch_size_per_task * k["num_envs"] == k["batch_size"]
    assert cfg.replay.capacity_per_task * k["num_envs"] == k["capacity"] and cfg.replay.normalize_rewards
    assert cfg.run.steps == k["num_train_steps"] * k["num_envs"] and cfg.sac.warmup_steps_per_task == k["init_steps"]
    assert (cfg.sac.log_std_min, cfg.sac.log_std_max) == k["log_std_bounds"] and cfg.sac.max_grad_norm == 0
    assert (cfg.sac.gamma, cfg.sac.tau, cfg.sac.init_alpha) == (k["discount"], k["critic_tau"], k["init_temperature"])
    learner = SACLearner(cfg.sac, 39, 4, k["num_envs"], torch.device("cpu"), balance=cfg.balance)
    assert learner.log_alpha.shape == (1,) and float(learner.log_alpha.detach().exp()) == k["init_temperature"]
    obs, action = torch.randn(5, 39), torch.rand(5, 4) * 2 - 1
    for task in range(1, k["num_envs"]):
        other = torch.full((5,), task)
        assert all(torch.equal(a, b) for a, b in zip(learner.actor(obs, other * 0), learner.actor(obs, other)))
        assert torch.equal(learner.critic(obs, action, other * 0), learner.critic(obs, action, other))
    matrices = [p.shape[-2:] for p in learner.actor.parameters() if p.dim() >= 2 and min(p.shape[-2:]) > 1]
    assert matrices[:k["num_layers"]] == [(39, 400), (400, 400), (400, 400)]
    groups = [o.param_groups[0] for o in (learner.actor_optimizer, learner.critic_optimizer, learner.alpha_optimizer)]
    assert [g["weight_decay"] for g in groups] == [k["actor_weight_decay"], 0, 0]
    assert all(g["lr"] == k["lr"] for g in groups)
    mgda_run = build_config("metaworld", "launch/config/presets/mt10-kurin.yaml",
                            overrides=["balance.method=mgda", "balance.mgda_normalize=l2", "sac.actor_weight_decay=0"])
    learner = SACLearner(mgda_run.sac, 39, 4, k["num_envs"], torch.device("cpu"), balance=mgda_run.balance)
    assert [type(learner.balancers[n].aggregator) for n in ("critic", "actor")] == [UnitRows, UnitRows]
    assert type(learner.balancers["alpha"]) is Balancer  # alpha_use_naive_opt=True


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


@pytest.mark.integration
def test_a_run_with_every_stabilizer_and_a_combiner(tmp_path):
    """End to end on pointmass: PCGrad with Kurin's stabilizers (one shared temperature, which
    takes the mean, reward normalisation, actor weight decay) and gradient clipping trains, logs
    one temperature for every task and checkpoints the reward statistics."""
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
