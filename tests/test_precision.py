"""sac.precision (agents/sac/precision.py): a bf16 update is close to the fp32 update for every
trunk, head and encoder, with fp32 master weights and gradients; the gradient combiners' per-task
Jacobians work under it; `auto` picks bf16 only where the device has bf16 matrix units; refused
combinations are one line. (The fp32 path is bit-identical to before: the pinned evaluations in
tests/test_architecture.py.) Learning under bf16: tests/test_precision_runs.py."""

import numpy as np
import pytest
import torch

import agents.sac.precision as precision_module
from agents.balancers import BalanceConfig
from agents.replay import MultiTaskReplay
from agents.sac import SACConfig, SACLearner
from agents.sac.precision import resolve_precision
from tests.conftest import run_train

CPU = torch.device("cpu")
VARIANTS = {  # every trunk, the hypernetwork head, a shared encoder, Continual World's LayerNorm
    "mlp": {}, "hyper trunk": {"trunk": "hyper"}, "care": {"trunk": "care"}, "moore": {"trunk": "moore"},
    "bronet": {"trunk": "bronet", "hidden_sizes": (64, 64, 64)}, "hyper head": {"head": "hyper"},
    "shared encoder": {"encoder": "mlp"}, "layer norm": {"layer_norm": True, "activation": "leaky_relu"},
}


def _one_update(precision: str, balance: str = "mean", **sac):
    """A fresh learner (fixed seed) after one update on a fixed batch: (learner, logged values,
    each network's gradient)."""
    torch.manual_seed(0)
    cfg = SACConfig(**{"hidden_sizes": (64, 64), "batch_size_per_task": 32, "precision": precision, **sac})
    learner = SACLearner(cfg, 6, 2, 3, CPU, balance=BalanceConfig(method=balance))
    rng = np.random.default_rng(0)
    replay = MultiTaskReplay(3, 200, 6, 2)
    replay.add(np.repeat([0, 1, 2], 200), rng.normal(size=(600, 6)).astype(np.float32),
               rng.uniform(-1, 1, (600, 2)).astype(np.float32), rng.normal(size=600).astype(np.float32),
               rng.normal(size=(600, 6)).astype(np.float32), np.zeros(600, np.float32))
    torch.manual_seed(1)
    logged = learner.update(replay.sample(32, np.random.default_rng(1)))
    # every loss, the log-probability (entropy) and the Q values are computed in fp32, whatever the passes ran in
    assert {v.dtype for v in logged.values()} == {torch.float32}
    info = {k: float(v) for k, v in logged.items()}
    grads = {net: torch.cat([p.grad.flatten() for p in learner.params[net] if p.grad is not None])
             for net in ("critic", "actor")}
    return learner, info, grads


def _assert_close_but_not_equal(fp32, bf16, grad_cosine=0.98):
    (_, f_info, f_grads), (learner, b_info, b_grads) = fp32, bf16
    assert learner.precision == "bf16"
    # bf16 really ran: its losses are not fp32's bit for bit ...
    assert any(f_info[k] != b_info[k] for k in ("loss/qf1", "loss/qf2", "loss/actor"))
    # ... but close: losses within 5% (or 0.02), each network's gradient in the same direction
    for key in ("loss/qf1", "loss/qf2", "loss/actor", "loss/alpha", "policy/entropy"):
        assert b_info[key] == pytest.approx(f_info[key], rel=0.05, abs=0.02), key
    for net in ("critic", "actor"):
        cosine = float(torch.nn.functional.cosine_similarity(f_grads[net], b_grads[net], dim=0))
        assert cosine > grad_cosine, (net, cosine)
    # master weights, gradients, optimizer moments and temperatures stay fp32
    tensors = [*learner.critic.parameters(), *learner.actor.parameters(), *learner.critic_target.parameters(),
               *b_grads.values(), learner.log_alpha,
               *(v for opt in learner.optimizers.values() for s in opt.state.values() for v in s.values()
                 if torch.is_tensor(v) and v.is_floating_point())]
    assert {t.dtype for t in tensors} == {torch.float32}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_bf16_update_is_close_to_the_fp32_update(variant):
    _assert_close_but_not_equal(_one_update("fp32", **VARIANTS[variant]), _one_update("bf16", **VARIANTS[variant]))


@pytest.mark.parametrize("balance", ["pcgrad", "famo"])
def test_balancers_that_read_per_task_gradients_or_recompute_work_under_bf16(balance):
    """PCGrad's per-task Jacobian reads the linear layers' bf16 inputs and outputs; FAMO recomputes
    its losses after the step in the same precision."""
    _assert_close_but_not_equal(_one_update("fp32", balance), _one_update("bf16", balance))


def test_auto_picks_bf16_only_on_bf16_matrix_units(monkeypatch):
    assert resolve_precision("auto", CPU, units=lambda d: None) == ("fp32", "auto: no bf16 units on cpu")
    assert resolve_precision("auto", CPU, units=lambda d: "AMX") == ("bf16", "auto: AMX")
    assert resolve_precision("fp32", CPU, units=lambda d: "AMX") == ("fp32", "set")
    assert resolve_precision("bf16", CPU, units=lambda d: None) == ("bf16", "set")  # what the user set
    monkeypatch.setattr(precision_module, "bf16_units", lambda device: None)  # a CPU without them
    learner, info, _ = _one_update("auto")
    assert learner.precision == "fp32"
    assert info == _one_update("fp32")[1]  # the fp32 update, bit for bit
    monkeypatch.setattr(precision_module, "bf16_units", lambda device: "AMX")
    assert _one_update("auto")[0].precision == "bf16"


@pytest.mark.multiproc
def test_unknown_precision_and_rllib_with_bf16_are_refused_in_one_line(tmp_path):
    unknown = "unknown sac.precision 'fp16'; valid: fp32, bf16, tf32, auto"
    for flags, message in ((["--set", "sac.precision=fp16"], unknown),
                           (["--engine", "rllib", "--set", "sac.precision=bf16"],
                            "--engine rllib does not support sac.precision=bf16")):
        proc = run_train("--suite", "pointmass", "--run-dir", tmp_path / "run", *flags)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def _two_stages(method: str, precision: str) -> dict:
    """A two-stage continual sequence driven directly, as the trainer does: stage 0 trained and
    ended (importances, pruning, memories), stage 1 trained under the strategy; its last logged values."""
    from continual.strategies import METHODS, TaskContext
    from launch.config import ContinualConfig

    torch.manual_seed(0)
    hyper = {"head": "hyper", "hyper_embedding_dim": 4, "hyper_hidden": 16} if method == "hnet" else {}
    order = {"update_order": "simultaneous"} if method == "agem" else {}
    learner = SACLearner(SACConfig(hidden_sizes=(16, 16), batch_size_per_task=32, precision=precision,
                                   **hyper, **order), 3, 2, 2, CPU)
    strategy = METHODS[method](ContinualConfig(method=method, importance_samples=64, memory_per_task=64,
                                               agem_batch_size=32, packnet_retrain_steps=5), learner, [0, 1], 0)
    rng = np.random.default_rng(0)
    replay = MultiTaskReplay(2, 256, 3, 2)
    for t in range(2):
        replay.add(np.full(256, t), rng.normal(size=(256, 3)).astype(np.float32),
                   rng.uniform(-1, 1, (256, 2)).astype(np.float32), rng.normal(size=256).astype(np.float32),
                   rng.normal(size=(256, 3)).astype(np.float32), np.zeros(256, np.float32))
    info = {}
    for stage in (0, 1):
        def train(updates, stage=stage):
            nonlocal info
            for _ in range(updates):
                tasks = [0, 1] if strategy.rehearses and stage else [stage]
                info = learner.update(replay.sample(32, rng, tasks), [strategy])
        ctx = TaskContext(stage, 2, (stage,), tuple(range(stage)), 100, replay, np.random.default_rng(stage),
                          train=train)
        strategy.start_task(ctx)
        train(10)
        if stage == 0:
            strategy.end_task(ctx)
    assert bool(learner.all_finite)
    return {k: float(v) for k, v in info.items()}


@pytest.mark.parametrize("method", ["l2", "ewc", "online-ewc", "si", "mas", "packnet", "agem", "replay", "bc", "hnet"])
def test_every_continual_strategy_trains_under_bf16(method):
    """Each strategy's task end (EWC/MAS per-sample gradients, SI's path integral, PackNet's pruning and
    retraining, A-GEM's and BC's memories, hnet's anchors) and its second stage under bf16: the same
    logged terms as in fp32, finite, each loss within 25% (or 0.05) of fp32's after 20 updates."""
    fp32, bf16 = _two_stages(method, "fp32"), _two_stages(method, "bf16")
    assert set(bf16) == set(fp32)
    assert bf16 != fp32  # bf16 ran
    for key in fp32:
        assert bf16[key] == pytest.approx(fp32[key], rel=0.25, abs=0.05), (key, fp32[key], bf16[key])


def test_a_bf16_learners_checkpoint_is_fp32_and_loads_into_an_fp32_learner():
    bf16, _, _ = _one_update("bf16")
    state = bf16.state_dict()
    tensors = [t for t in torch.utils._pytree.tree_leaves(state) if torch.is_tensor(t) and t.is_floating_point()]
    assert tensors and {t.dtype for t in tensors} == {torch.float32}
    fp32, _, _ = _one_update("fp32")
    fp32.load_state_dict(state)
    for a, b in zip(fp32.synced_tensors().values(), bf16.synced_tensors().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("head", ["multi", "single"])
def test_q_values_keep_fp32_resolution_under_bf16(head):
    """The output layer runs in fp32 on the bf16 trunk's features: Q values near 1,000 (Meta-World's
    scale) stay within a fraction of a reward of fp32's. A bf16 head would round them to steps of 4."""
    torch.manual_seed(0)
    learner = SACLearner(SACConfig(hidden_sizes=(64, 64), head=head, precision="bf16"), 6, 2, 3, CPU)
    with torch.no_grad():
        for name, p in learner.critic.named_parameters():
            if name.endswith("head.linear.bias") or name.endswith("head.bias"):
                p.add_(1000.3)  # Q ~ 1,000
    obs, action, task = torch.randn(64, 6), torch.rand(64, 2) * 2 - 1, torch.arange(64) % 3
    with torch.no_grad():
        q_fp32 = learner.critic(obs, action, task)
        with learner.autocast():
            q_bf16 = learner.critic(obs, action, task)
    assert q_bf16.dtype == torch.float32 and q_fp32.abs().min() > 900
    assert (q_bf16 - q_fp32).abs().max() < 0.25


SUBNORMAL = 1e-39  # below fp32's smallest normal number, 1.2e-38


def test_adam_steps_with_subnormals_flushed_leave_every_weight_bit_identical():
    """Flushing only zeroes Adam's subnormal moments: after 20 steps on gradients that vanish on
    some entries (a dead unit), every weight is bit-identical to plain Adam's, while the moments
    show the flush really happened (zero against plain Adam's subnormals)."""
    from agents.sac.precision import subnormals_flushed

    def train(flush: bool):
        torch.manual_seed(0)
        weight = torch.nn.Parameter(torch.randn(64, 64) * 0.05)
        optimizer = torch.optim.Adam([weight], lr=3e-4, fused=True)
        for step in range(20):
            weight.grad = torch.randn(64, 64)
            weight.grad[:, :8] = 0.0 if step else SUBNORMAL  # columns 0-7: a unit that stopped learning
            with subnormals_flushed(CPU) if flush else torch.autograd.grad_mode.no_grad():
                optimizer.step()
        return weight.detach().clone(), optimizer.state[weight]["exp_avg"]

    plain, plain_moment = train(flush=False)
    flushed, flushed_moment = train(flush=True)
    assert torch.equal(plain, flushed)
    dead = plain_moment[:, :8]
    assert bool(((dead != 0) & (dead.abs() < 1.1754944e-38)).all())  # plain Adam kept subnormal moments
    assert bool((flushed_moment[:, :8] == 0).all())
    assert torch.equal(plain_moment[:, 8:], flushed_moment[:, 8:])


def test_the_learners_optimizer_steps_flush_subnormal_moments():
    """SACLearner.update steps its optimizers with subnormals flushed: a dead unit's subnormal
    first moment becomes 0 (unflushed, Adam would leave 0.9 x 1e-39, still subnormal); flushing is
    off again after the update."""
    learner, _, _ = _one_update("fp32")
    layer = learner.critic.net.trunk.layers[0]
    with torch.no_grad():
        layer.bias[:, :, :4] = -1e3  # units 0-3 of the first critic layer never fire: no gradient
    moment = learner.critic_optimizer.state[layer.weight]["exp_avg"]
    moment[:, :, :4] = SUBNORMAL
    rng = np.random.default_rng(2)
    replay = MultiTaskReplay(3, 100, 6, 2)
    replay.add(np.repeat([0, 1, 2], 100), rng.normal(size=(300, 6)).astype(np.float32),
               rng.uniform(-1, 1, (300, 2)).astype(np.float32), rng.normal(size=300).astype(np.float32),
               rng.normal(size=(300, 6)).astype(np.float32), np.zeros(300, np.float32))
    learner.update(replay.sample(32, rng))
    assert bool((moment[:, :, :4] == 0).all())
    assert bool((moment[:, :, 4:] != 0).any())
    assert torch.tensor(SUBNORMAL).item() != 0.0  # flushing did not leak out of the update


def test_the_meta_world_presets_default_to_auto_and_the_small_learners_to_fp32():
    """The default run (Meta-World MT10) takes bf16 where the machine has bf16 units; pointmass and
    Continual World's learners, which bf16 does not speed up (BENCHMARKS.md), stay fp32 unless asked."""
    from launch.config import build_config

    assert build_config("metaworld").sac.precision == "auto"
    assert build_config("metaworld", flags={"continual.sequence": "CW10"}).sac.precision == "fp32"
    assert build_config("pointmass").sac.precision == "fp32"
    assert build_config("pointmass", overrides=["sac.precision=bf16"]).sac.precision == "bf16"
    assert SACConfig().precision == "fp32"  # the library's own default: exact fp32 math


def test_tf32_is_a_cuda_gpus_and_refused_on_a_cpu_learner():
    """sac.precision=tf32 resolves on a CUDA device with TF32 tensor cores and is refused elsewhere
    (the config rule: tests/test_bad_input.py)."""
    with pytest.raises(ValueError, match="tf32"):
        resolve_precision("tf32", CPU)
    if torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0):
        assert resolve_precision("tf32", torch.device("cuda")) == ("tf32", "set")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU with TF32 tensor cores")
def test_a_tf32_learner_runs_its_cuda_matmuls_in_tf32():
    cuda = torch.device("cuda")
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("this GPU has no TF32 tensor cores")
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        learner = SACLearner(SACConfig(hidden_sizes=(64, 64), precision="tf32"), 6, 2, 3, cuda)
        assert learner.precision == "tf32" and torch.backends.cuda.matmul.allow_tf32
        assert all(p.dtype == torch.float32 for p in learner.critic.parameters())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
