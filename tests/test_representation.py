"""Shared representation: the encoders (CARE, MOORE, BroNet, a learned task embedding), the
shared encoder, and the auxiliary tasks (reward, latent dynamics, inverse dynamics, PVN)."""

import numpy as np
import pytest
import torch

from agents.auxiliary import AuxConfig, ProtoValues, Representation, make_auxiliary_tasks
from agents.replay import Batch, MultiTaskReplay
from agents.sac import SACConfig, SACLearner
from agents.trunks import CARETrunk, MOORETrunk, gram_schmidt
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


def _learner(**sac):
    torch.manual_seed(0)
    cfg = SACConfig(hidden_sizes=(16, 16), batch_size_per_task=8, update_order="simultaneous", **sac)
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

def _one_update(aux: AuxConfig | None, **sac):
    learner = _learner(**sac)
    hooks = make_auxiliary_tasks(aux, learner, 3, 2, seed=0) if aux else []
    learner.add_hook_parameters(hooks)
    torch.manual_seed(1)
    learner.update(_batch(), hooks)
    return learner, hooks


def _params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("name", ["reward", "dynamics", "inverse", "pvn"])
def test_an_auxiliary_task_on_the_shared_encoder_changes_only_its_head_and_the_encoder(name):
    """One update from the same state and draws, with and without the auxiliary task: the actor
    (which reads the encoder detached) and every critic parameter but the encoder's are bit for
    bit the same; the encoder moves differently; the task's head is trained."""
    base, _ = _one_update(None, encoder="mlp", encoder_sizes=(8,))
    aux, hooks = _one_update(AuxConfig(**{name: 1.0}), encoder="mlp", encoder_sizes=(8,))
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
    base, _ = _one_update(None)
    aux, hooks = _one_update(AuxConfig(reward=1.0, inverse=1.0))
    assert {h.rep.network for h in hooks} == {"actor"}
    for n, p in _params(aux.critic).items():
        assert torch.equal(p, _params(base.critic)[n]), n
    for n, p in _params(aux.actor).items():
        assert torch.equal(p, _params(base.actor)[n]) == n.startswith("net.head."), n


def test_pvn_indicators_fire_at_the_configured_rate_after_fitting():
    learner = _learner(encoder="mlp", encoder_sizes=(8,))
    cfg = AuxConfig(pvn=1.0, pvn_tasks=20, pvn_rate=0.05)
    pvn = ProtoValues(1.0, Representation(learner, "encoder"), 3, 2, cfg, gamma=0.99, seed=0)
    states = torch.randn(8192, 3)
    assert abs(float((pvn.indicators(states) > 0).float().mean()) - 0.05) > 0.2  # before fitting (b = 0): far off
    optimizer = torch.optim.Adam([pvn.head.bias], lr=0.05)
    for _ in range(600):
        batch = states[torch.randint(0, len(states), (512,))]
        u = pvn.indicators(batch)
        loss = (u * ((1 - cfg.pvn_rate) - (u < 0).float())).mean()  # the pinball loss PVN's loss() adds
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
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
    pinball = float((u * (0.5 - (u < 0).float())).mean())
    assert float(pvn.loss(batch)) == pytest.approx(td + pinball, rel=1e-6)


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
def test_every_encoder_learns_the_pointmass_suite(encoder_runs, name):
    first, last = _success(encoder_runs / name, 0), _success(encoder_runs / name, STEPS)
    assert first <= 0.2 and last >= 0.8, (name, first, last)


@pytest.mark.parametrize("aux", ["reward", "dynamics", "inverse", "pvn"])
def test_each_auxiliary_loss_decreases_and_is_logged_on_its_own(encoder_runs, aux):
    values = [v for _, v in scalars(encoder_runs / "aux" / "tb", f"loss/aux/{aux}")]
    assert len(values) >= 5
    assert np.mean(values[-2:]) < 0.85 * np.mean(values[:2]), values  # each value: one update's batch
    assert "aux" in (encoder_runs / "aux" / "config.yaml").read_text()
