"""Shared representation: the encoders (CARE, MOORE, BroNet, a learned task embedding), the
shared encoder, and the auxiliary tasks (reward, latent dynamics, inverse dynamics, PVN)."""

import numpy as np
import pytest
import torch

from agents.auxiliary import AuxConfig, ProtoValues, Representation, make_auxiliary_tasks
from agents.replay import Batch, MultiTaskReplay
from agents.sac import SACConfig, SACLearner
from agents.trunks import BroNetTrunk, CARETrunk, MOORETrunk, gram_schmidt
from continual.strategies import make_strategy
from launch.config import ContinualConfig
from metrics import evallog
from tests.conftest import scalars, train_many

# -- encoders -------------------------------------------------------------------------------------


def test_moore_expert_outputs_are_orthonormal_per_sample_and_gram_schmidt_is_qr():
    torch.manual_seed(0)
    trunk = MOORETrunk(2, 5, (32, 16), num_tasks=3, experts=4)
    x, task = torch.randn(7, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    # The experts by hand: K x k MLPs, ReLU between layers, the last linear.
    h = x.expand(8, 7, 5)
    h = trunk.layers[1](torch.relu(trunk.layers[0](h))).view(2, 4, 7, 16).transpose(1, 2)  # [K, B, k, d]
    u = gram_schmidt(h)
    torch.testing.assert_close(u @ u.transpose(-1, -2), torch.eye(4).expand(2, 7, 4, 4), atol=1e-5, rtol=0)
    # Classical Gram-Schmidt in expert order = QR with a positive diagonal.
    q, r = torch.linalg.qr(h.transpose(-1, -2))
    q = q.transpose(-1, -2) * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-1)
    torch.testing.assert_close(u, q, atol=1e-5, rtol=0)
    # features = tanh(sum_j w_task,j u_j) with each member's own task weights
    expected = torch.tanh(torch.einsum("kbe,kbed->kbd", trunk.task_weights[:, task], u))
    torch.testing.assert_close(trunk(x, task), expected)


def test_care_attention_weights_sum_to_one_per_task_and_depend_on_the_task_only():
    torch.manual_seed(0)
    trunk = CARETrunk(2, 5, (32,), num_tasks=3, experts=4)
    task = torch.tensor([0, 1, 2, 1])
    context = trunk.context(torch.relu(trunk.embedding(task)))
    alpha = torch.softmax(trunk.gate(context), dim=-1)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(4))
    torch.testing.assert_close(alpha[1], alpha[3])          # the same task, the same weights
    assert not torch.allclose(alpha[0], alpha[1])
    # The trunk is the mixture (and the context) through the MLP: recompute it by hand.
    x = torch.randn(4, 5)
    experts = trunk.experts[1](torch.relu(trunk.experts[0](x.expand(4, 4, 5))))  # [k, B, 50]
    mixture = (experts * alpha.T.unsqueeze(-1)).sum(0)
    h = torch.relu(trunk.layers[0](torch.cat([mixture, context], -1).expand(2, 4, -1)))
    torch.testing.assert_close(trunk(x, task), h)


def test_care_is_initialised_as_mtrl_xavier_uniform_weights_and_zero_biases():
    """mtrl's weight_init on every Linear of CARE (context and gate MLPs, experts, the MLP after
    the mixture): U(+-sqrt(6 / (in + out))) per expert / member, zero biases; the task embedding
    keeps nn.Embedding's N(0, 1)."""
    torch.manual_seed(0)
    trunk = CARETrunk(2, 43, (400,), num_tasks=10, experts=4)
    layers = [*trunk.context[0::2], *trunk.gate[0::2], *trunk.experts, *trunk.layers]
    assert len(layers) == 3 + 3 + 2 + 1
    for layer in layers:
        weights = layer.weight.detach()
        weights = weights if weights.dim() == 3 else weights.unsqueeze(0)   # [members, ., .]
        bound = (6 / sum(weights.shape[1:])) ** 0.5
        for w in weights:  # each expert / member drawn over the whole bound (torch's default: 1/sqrt(in))
            assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound, (layer, bound)
            assert float(w.std()) == pytest.approx(bound / 3 ** 0.5, rel=0.1)
        assert not layer.bias.any()
    assert float(trunk.embedding.weight.detach().std()) == pytest.approx(1.0, rel=0.2)


def test_bronet_is_brcs_block_by_hand_with_orthogonal_init():
    """BRC's jaxrl/networks.py: x = relu(LN(Dense(x))); per block res = LN(Dense(relu(LN(Dense(x))))),
    x = res + x; Dense orthogonal (gain sqrt 2), zero biases; Flax LayerNorm (eps 1e-6)."""
    torch.manual_seed(0)
    trunk = BroNetTrunk(2, 5, (32, 32, 32), num_tasks=3)
    denses = [trunk.first, *(layer for block in trunk.blocks for layer in block[0::2])]
    for dense in denses:
        assert not dense.bias.any()
        for w in dense.weight:  # [in, out]: orthonormal rows or columns, times sqrt(2)
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            torch.testing.assert_close(gram, 2 * torch.eye(len(gram)), atol=1e-5, rtol=0)
    with torch.no_grad():  # non-trivial biases and LayerNorm affines, so the forward checks them too
        for p in trunk.parameters():
            p.add_(0.1 * torch.randn_like(p))

    def norm(h, ln):  # LayerNorm over the features, eps 1e-6, each member's own affine
        mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + 1e-6) * ln.weight + ln.bias

    def dense(h, layer):
        return h @ layer.weight + layer.bias

    x, task = torch.randn(7, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    h = torch.relu(norm(dense(x.expand(2, 7, 5), trunk.first), trunk.first_norm))
    for d1, n1, d2, n2 in trunk.blocks:
        h = norm(dense(torch.relu(norm(dense(h, d1), n1)), d2), n2) + h
    torch.testing.assert_close(trunk(x, task), h, atol=1e-5, rtol=1e-5)


def _learner(**sac):
    torch.manual_seed(0)
    cfg = SACConfig(**{"hidden_sizes": (16, 16), "batch_size_per_task": 8, "update_order": "simultaneous", **sac})
    return SACLearner(cfg, obs_dim=3, action_dim=2, num_tasks=2, device=torch.device("cpu"))


def _batch():
    replay = MultiTaskReplay(2, 50, 3, 2)
    rng = np.random.default_rng(0)
    replay.add(np.repeat([0, 1], 25), rng.normal(size=(50, 3)).astype(np.float32),
               rng.uniform(-1, 1, (50, 2)).astype(np.float32), rng.normal(size=50).astype(np.float32),
               rng.normal(size=(50, 3)).astype(np.float32), np.zeros(50, np.float32))
    return replay.sample(8, rng)


@pytest.mark.parametrize("trunk, per_task", [("care", {"net.trunk.embedding.weight"}),
                                             ("moore", {"net.trunk.task_weights"})])
def test_continual_methods_leave_task_embeddings_and_heads_to_their_task(trunk, per_task):
    learner = _learner(trunk=trunk, task_input=False, task_embedding_dim=4)
    all_names = {n for n, _ in learner.actor.named_parameters()}
    per_task |= {"net.task_input.embedding", "net.head.linear.weight", "net.head.linear.bias"}
    assert per_task <= all_names
    for method in ("ewc", "packnet"):
        strategy = make_strategy(ContinualConfig(sequence="x", method=method, importance_samples=16), learner, [0, 1])
        shared = {n for n, _ in strategy.shared("actor")}
        assert shared == all_names - per_task, method
    # EWC computes importances, and its penalty has gradients, on exactly those.
    replay = MultiTaskReplay(2, 50, 3, 2)
    replay.add(np.zeros(50, int), np.random.randn(50, 3).astype(np.float32), np.random.rand(50, 2).astype(np.float32),
               np.zeros(50, np.float32), np.random.randn(50, 3).astype(np.float32), np.zeros(50, np.float32))
    from continual.strategies import TaskContext
    ewc = make_strategy(ContinualConfig(sequence="x", method="ewc", importance_samples=16), learner, [0, 1])
    ewc.end_task(TaskContext(0, 2, (0,), (), 100, replay, np.random.default_rng(0)))
    with torch.no_grad():
        for p in learner.actor.parameters():
            p.add_(0.1)
    learner.actor.zero_grad()
    ewc.penalty("actor").backward()
    grads = {n: p.grad for n, p in learner.actor.named_parameters()}
    assert all(grads[n] is None for n in per_task) and all(grads[n] is not None for n in all_names - per_task)


# -- shared encoder and auxiliary tasks ----------------------------------------------------------

def _with_hooks(aux: AuxConfig | None, **sac):
    learner = _learner(**sac)
    hooks = make_auxiliary_tasks(aux, learner, 3, 2, seed=0) if aux else []
    learner.add_hook_parameters(hooks)
    return learner, hooks


def _one_update(aux: AuxConfig | None, **sac):
    """(learner, hooks, the update's logged values) after one update from a fixed state and draws."""
    learner, hooks = _with_hooks(aux, **sac)
    torch.manual_seed(1)
    out = learner.update(_batch(), hooks)
    return learner, hooks, out


def _params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("name", ["reward", "dynamics", "inverse", "pvn"])
def test_an_auxiliary_task_on_the_shared_encoder_changes_only_its_head_and_the_encoder(name):
    """One update from the same state and draws, with and without the auxiliary task: the actor
    (which reads the encoder detached) and every critic parameter but the encoder's are bit for
    bit the same; the encoder moves differently; the task's head is trained."""
    base, *_ = _one_update(None, encoder="mlp", encoder_sizes=(8,))
    aux, hooks, _ = _one_update(AuxConfig(**{name: 1.0}), encoder="mlp", encoder_sizes=(8,))
    (task,) = hooks
    assert task.rep.network == "critic"
    for n, p in _params(aux.actor.net).items():  # the actor's own parameters (the encoder is the critic's)
        assert torch.equal(p, _params(base.actor.net)[n]), n
    for n, p in _params(aux.critic).items():
        same = torch.equal(p, _params(base.critic)[n])
        assert same != n.startswith("encoder."), n
    head = [p for p in task.head.parameters() if p.requires_grad]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)
    assert any(p is q for p in head for g in aux.critic_optimizer.param_groups for q in g["params"])
    assert all(p is not q for p in head for q in aux.actor.parameters())  # not in the policy sent to actors


def test_auxiliary_tasks_on_the_actor_trunk_train_it_and_leave_the_critic_and_actor_head_alone():
    base, *_ = _one_update(None)
    aux, hooks, _ = _one_update(AuxConfig(reward=1.0, inverse=1.0))
    assert {h.rep.network for h in hooks} == {"actor"}
    for n, p in _params(aux.critic).items():
        assert torch.equal(p, _params(base.critic)[n]), n
    for n, p in _params(aux.actor).items():
        assert torch.equal(p, _params(base.actor)[n]) == n.startswith("net.head."), n


@pytest.mark.parametrize("encoder, encoder_tau", [("mlp", 0.0), ("mlp", 0.05), ("", 0.05)])
def test_the_target_encoder_moves_at_encoder_tau_and_the_q_layers_at_tau(encoder, encoder_tau):
    """One update: theta' <- theta' + rate (theta - theta'), rate = sac.encoder_tau for the shared
    encoder (when set; mtrl's 0.05), sac.tau for the rest (and everything, without an encoder)."""
    sac = dict(encoder=encoder, encoder_sizes=(8,)) if encoder else dict(trunk="mlp")
    learner = _learner(**sac, tau=0.005, encoder_tau=encoder_tau, critic_lr=1e-2)
    before = _params(learner.critic_target)
    assert all(torch.equal(p, before[n]) for n, p in learner.critic.named_parameters())
    torch.manual_seed(1)
    learner.update(_batch())
    online, target = dict(learner.critic.named_parameters()), dict(learner.critic_target.named_parameters())
    assert any(n.startswith("encoder.") for n in online) == bool(encoder)
    for n, old in before.items():
        rate = encoder_tau if encoder_tau and n.startswith("encoder.") else 0.005
        torch.testing.assert_close(target[n], old.lerp(online[n], rate), atol=1e-7, rtol=0, msg=n)
        other = 0.005 if rate == 0.05 else 0.05  # the check can tell the two rates apart
        assert not torch.allclose(target[n], old.lerp(online[n], other), atol=1e-7, rtol=0), n


@pytest.mark.parametrize("name", ["reward", "dynamics", "inverse", "pvn"])
def test_an_auxiliary_loss_is_scaled_by_its_weight(name):
    """aux.<name> = 0.25 against 1: the same state and draws, the logged term and the head's
    gradient (the head is trained by that term only) are a quarter."""
    _, ones, out_one = _one_update(AuxConfig(**{name: 1.0}), encoder="mlp", encoder_sizes=(8,))
    _, quarters, out_quarter = _one_update(AuxConfig(**{name: 0.25}), encoder="mlp", encoder_sizes=(8,))
    assert float(out_quarter[f"loss/aux/{name}"]) == pytest.approx(0.25 * float(out_one[f"loss/aux/{name}"]))
    heads = [[p for p in hooks[0].head.parameters() if p.requires_grad] for hooks in (ones, quarters)]
    for one, quarter in zip(*heads):
        assert one.grad.abs().sum() > 0
        torch.testing.assert_close(quarter.grad, 0.25 * one.grad)


def test_latent_dynamics_target_is_a_stop_gradient():
    """The encoder's gradient of the dynamics loss is that of 0.5 mse(head(phi(s), a), sg(phi(s'))):
    phi(s') is a target only (mtrl's deepmdp.py: next_h.detach())."""
    learner, (dynamics,) = _with_hooks(AuxConfig(dynamics=1.0), encoder="mlp", encoder_sizes=(8,))
    batch, encoder = _batch(), list(learner.critic.encoder.parameters())
    got = torch.autograd.grad(dynamics.loss_terms("critic", batch, None)["aux/dynamics"], encoder)
    z, z_next = (learner.critic.encoder(obs, batch.task) for obs in (batch.obs, batch.next_obs))
    predicted = dynamics.head(torch.cat([z, batch.action], -1))
    stopped = torch.autograd.grad(0.5 * (predicted - z_next.detach()).pow(2).mean(), encoder, retain_graph=True)
    through = torch.autograd.grad(0.5 * (predicted - z_next).pow(2).mean(), encoder)
    for g, s in zip(got, stopped):
        torch.testing.assert_close(g, s)
    assert any(not torch.allclose(s, t) for s, t in zip(stopped, through))  # the two differ


@pytest.mark.parametrize("order", ["simultaneous", "sequential"])
def test_pvn_target_heads_follow_the_value_heads_at_pvn_tau_through_the_learner(order):
    """After one SACLearner.update with the hook: Q'_i <- Q'_i + pvn_tau (Q_i - Q'_i), once (the
    critic steps once per update in either order)."""
    learner, (pvn,) = _with_hooks(AuxConfig(pvn=1.0, pvn_tau=0.1), encoder="mlp", encoder_sizes=(8,),
                                  critic_lr=1e-2, update_order=order)
    before = [p.detach().clone() for p in pvn.head.target.parameters()]
    assert all(torch.equal(b, v) for b, v in zip(before, pvn.head.values.parameters()))  # starts as a copy
    torch.manual_seed(1)
    learner.update(_batch(), [pvn])
    for old, target, values in zip(before, pvn.head.target.parameters(), pvn.head.values.parameters()):
        assert not torch.allclose(values, old)
        torch.testing.assert_close(target, old.lerp(values.detach(), 0.1), atol=1e-7, rtol=0)


def test_pvn_biases_get_the_pinball_gradient_and_are_stepped_by_the_critic_optimizer():
    """d/db_i of w mean_{b,i}(u ((1 - p) - 1[u < 0])) = w ((1 - p) - P_b[u_bi < 0]) / T, and Adam's first
    step moves each b_i by -lr sign(grad)."""
    learner, (pvn,) = _with_hooks(AuxConfig(pvn=0.5, pvn_tasks=20, pvn_rate=0.05), encoder="mlp",
                                  encoder_sizes=(8,))
    batch = _batch()
    u = pvn.indicators(batch.obs).detach()
    expected = 0.5 * ((1 - 0.05) - (u < 0).float()).mean(0) / 20
    torch.manual_seed(1)
    learner.update(batch, [pvn])
    torch.testing.assert_close(pvn.head.bias.grad, expected)
    torch.testing.assert_close(pvn.head.bias.detach(), -learner.cfg.critic_lr * expected.sign(), atol=1e-9, rtol=1e-5)


@pytest.fixture
def one_thread():
    """Many tiny updates: one torch thread (on a shared 2-core machine, 2 threads ran 70x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pvn_indicators_fire_at_the_configured_rate_when_the_learner_trains_them(one_thread):
    """The biases, trained only by SACLearner.update (PVN's pinball term in the critic's optimizer),
    make each indicator fire on about pvn_rate of states."""
    learner, (pvn,) = _with_hooks(AuxConfig(pvn=1.0, pvn_tasks=20, pvn_rate=0.05, hidden=16, pvn_actions=2),
                                  encoder="mlp", encoder_sizes=(8,), critic_lr=0.05)
    rng = np.random.default_rng(0)
    replay = MultiTaskReplay(2, 4096, 3, 2)
    replay.add(np.repeat([0, 1], 4096), rng.normal(size=(8192, 3)).astype(np.float32),
               rng.uniform(-1, 1, (8192, 2)).astype(np.float32), rng.normal(size=8192).astype(np.float32),
               rng.normal(size=(8192, 3)).astype(np.float32), np.zeros(8192, np.float32))
    states = torch.randn(8192, 3)
    assert abs(float((pvn.indicators(states) > 0).float().mean()) - 0.05) > 0.2  # before fitting (b = 0): far off
    for _ in range(300):
        learner.update(replay.sample(128, rng), [pvn])
    rates = (pvn.indicators(states) > 0).float().mean(0)
    assert abs(float(rates.mean()) - 0.05) < 0.01 and float(rates.max()) < 0.1 and float(rates.min()) > 0.01


def test_pvn_td_target_by_hand():
    """Constant value heads: Q = q0, Q' = c; indicators with known biases. With gamma 0.5 and the
    first row terminal: y_i = r_i + 0.5 (1 - d) c, loss = 0.5 mean (q0 - y)^2 + pinball."""
    learner = _learner(encoder="mlp", encoder_sizes=(8,))
    cfg = AuxConfig(pvn=1.0, pvn_tasks=2, pvn_rate=0.5, hidden=4)
    pvn = ProtoValues(1.0, Representation(learner, "encoder"), 3, 2, cfg, gamma=0.5, seed=0)
    with torch.no_grad():
        for head, value in ((pvn.head.values, 0.25), (pvn.head.target, 3.0)):
            head[-1].weight.zero_()
            head[-1].bias.fill_(value)
        pvn.head.bias.copy_(torch.tensor([-1e6, 1e6]))  # indicator 0 never fires, indicator 1 always
    batch = Batch(torch.randn(2, 3), torch.rand(2, 2), torch.zeros(2), torch.randn(2, 3), torch.tensor([1.0, 0.0]),
                  torch.tensor([0, 1]))
    # y: row 0 (terminal) [0, 1], row 1 [0 + 1.5, 1 + 1.5]; (q0 - y)^2 / 2 averaged over 4 entries
    td = 0.5 * np.mean([(0.25 - 0) ** 2, (0.25 - 1) ** 2, (0.25 - 1.5) ** 2, (0.25 - 2.5) ** 2])
    u = pvn.indicators(batch.obs)
    pinball = float((u * (0.5 - (u < 0).float())).mean().detach())
    assert float(pvn.loss(batch).detach()) == pytest.approx(td + pinball, rel=1e-6)


# -- real runs -------------------------------------------------------------------------------------

STEPS = 4000  # the MLP learns this suite too (tests/test_learning.py)
ENCODERS = {"care": ["--set", "sac.trunk=care", "--set", "sac.task_input=false"],
            "moore": ["--set", "sac.trunk=moore", "--set", "sac.task_input=false"],
            "bronet": ["--set", "sac.trunk=bronet", "--set", "sac.task_input=false",
                       "--set", "sac.task_embedding_dim=8"],
            "aux": ["--set", "sac.encoder=mlp", "--set", "sac.encoder_sizes=[64]", "--set", "aux.reward=1",
                    "--set", "aux.dynamics=1", "--set", "aux.inverse=1", "--set", "aux.pvn=1",
                    "--set", "aux.pvn_rate=0.05"]}


@pytest.fixture(scope="module")
def encoder_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    common = ["--suite", "pointmass", "--backend", "single", "--steps", STEPS, "--eval-every", 2000, "--seed", 1,
              "--set", "eval.goals=20", "--set", "run.threads=1", "--set", "run.log_every=400"]
    results = train_many({name: [*common, *flags, "--run-dir", root / name] for name, flags in ENCODERS.items()})
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
    return root


def _success(run_dir, step):
    rows = [r["success"] for r in evallog.read(run_dir / "evals.jsonl") if r["step"] == step]
    return sum(rows) / len(rows)


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.multiproc
@pytest.mark.integration
def test_every_encoder_learns_the_pointmass_suite(encoder_runs, name):
    first, last = _success(encoder_runs / name, 0), _success(encoder_runs / name, STEPS)
    assert first <= 0.2 and last >= 0.8, (name, first, last)


@pytest.mark.parametrize("aux", ["reward", "dynamics", "inverse", "pvn"])
@pytest.mark.multiproc
@pytest.mark.integration
def test_each_auxiliary_loss_decreases_and_is_logged_on_its_own(encoder_runs, aux):
    values = [v for _, v in scalars(encoder_runs / "aux" / "tb", f"loss/aux/{aux}")]
    assert len(values) >= 5
    assert np.mean(values[-2:]) < 0.85 * np.mean(values[:2]), values  # each value: one update's batch
    assert "aux" in (encoder_runs / "aux" / "config.yaml").read_text()
