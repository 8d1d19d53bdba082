"""The fast learner path (issue 16): replay kept and sampled on the learner's device, compiled
network passes, and the same on CUDA where a GPU is present. On CPU the device replay and the
compiled passes run for real; the CUDA tests skip with their reason when no GPU is there."""

import json

import numpy as np
import pytest
import torch

from agents.auxiliary import AuxConfig, make_auxiliary_tasks
from agents.replay import Batch, DeviceReplay, MultiTaskReplay
from agents.sac import SACConfig, SACLearner
from tests.conftest import REPO, train_in_process

NO_CUDA = "no CUDA device here: the GPU learner path is tested only on a machine with one"


def _fill(replays, rng, rounds=6, rows=90, tasks=3, obs=5, act=2):
    """The same random chunks into every replay: more rows than the capacity (the rings wrap),
    tasks interleaved within a chunk."""
    for _ in range(rounds):
        task = rng.integers(0, tasks, rows)
        chunk = (task, rng.standard_normal((rows, obs), np.float32), rng.uniform(-1, 1, (rows, act)).astype(np.float32),
                 (rng.standard_normal(rows) * 3 + 1).astype(np.float32), rng.standard_normal((rows, obs), np.float32),
                 (rng.random(rows) < 0.1).astype(np.float32))
        for replay in replays:
            replay.add(*chunk)


@pytest.mark.parametrize("normalize", [False, True])
def test_device_replay_samples_the_host_replays_batches(normalize):
    """Same chunks and the same generator: the device replay (on the CPU here) returns bit for bit
    the host replay's batches, for every task and for a subset; its state loads into the host one."""
    host = MultiTaskReplay(3, 100, 5, 2, normalize_rewards=normalize)
    device = DeviceReplay(3, 100, 5, 2, torch.device("cpu"), normalize_rewards=normalize)
    _fill([host, device], np.random.default_rng(0))
    assert list(host.size) == list(device.size) == [100, 100, 100] and list(host.cursor) == list(device.cursor)
    for tasks in (None, [2, 0]):
        a, b = host.sample(16, np.random.default_rng(1), tasks), device.sample(16, np.random.default_rng(1), tasks)
        for field, x, y in zip(Batch._fields, a, b):
            assert x.dtype == y.dtype and torch.equal(x, y), field
    rows = np.array([3, 99, 0])
    assert all(np.array_equal(host.rows(1, rows)[f], device.rows(1, rows)[f]) for f in MultiTaskReplay.FIELDS)
    restored = MultiTaskReplay(3, 100, 5, 2, normalize_rewards=normalize)
    restored.load_state_dict(device.state_dict())
    assert torch.equal(restored.sample(8, np.random.default_rng(2)).obs, host.sample(8, np.random.default_rng(2)).obs)
    device.clear([1])
    assert device.size[1] == 0 and device.allocated_rows(1) == 0
    assert device.nbytes() == 2 * 100 * (5 + 2 + 1 + 5 + 1) * 4  # two tasks' full rings of float32 rows


@pytest.mark.integration
def test_runs_with_the_replay_on_the_learner_device_give_the_pinned_evaluations(tmp_path):
    """The multi-task and the continual (EWC: importances read replay rows) pointmass runs whose
    evaluations tests/data/pinned_evals.json pins give the same numbers bit for bit with the
    replay on the learner's device (the CPU here)."""
    pinned = json.loads((REPO / "tests" / "data" / "pinned_evals.json").read_text())
    from tests.data.pin_evals import JOBS, evaluations, matches_pinned
    for name, args in JOBS.items():
        result = train_in_process(*args, "--set", "replay.device=learner", "--run-dir", tmp_path / name)
        assert result.returncode == 0, result.stderr[-2000:]
        assert matches_pinned(evaluations(tmp_path / name), pinned, name), name


def _learners(device, mode, **sac):
    """An eager learner and one with compiled passes, the same initial networks, each with a
    reward-prediction hook (its loss reads the critic pass's features)."""
    out = []
    for compile_mode in ("none", mode):
        torch.manual_seed(0)
        cfg = SACConfig(hidden_sizes=(32, 32), compile=compile_mode, **sac)
        learner = SACLearner(cfg, 5, 2, 3, device)
        hooks = make_auxiliary_tasks(AuxConfig(reward=1.0), learner, 5, 2, seed=0)
        learner.add_hook_parameters(hooks)
        out.append((learner, hooks))
    return out


def _batch(generator, device) -> Batch:
    task = torch.arange(3).repeat_interleave(8)
    n = len(task)
    return Batch(*(x.to(device) for x in (
        torch.randn(n, 5, generator=generator), torch.rand(n, 2, generator=generator) * 2 - 1,
        torch.randn(n, generator=generator), torch.randn(n, 5, generator=generator),
        (torch.rand(n, generator=generator) < 0.2).float(), task)))


def _compare(device, mode, updates=4, **sac):
    (eager, eager_hooks), (compiled, compiled_hooks) = _learners(device, mode, **sac)
    initial = [p.detach().clone() for p in eager.actor.parameters()]
    generator = torch.Generator().manual_seed(1)
    for k in range(updates):
        batch = _batch(generator, device)
        torch.manual_seed(100 + k)
        eager_out = eager.update(batch, eager_hooks)
        torch.manual_seed(100 + k)
        compiled_out = compiled.update(batch, compiled_hooks)
        for key in eager_out:
            torch.testing.assert_close(compiled_out[key], eager_out[key], rtol=1e-4, atol=1e-5, msg=key)
    # Tolerance: Inductor fuses and reorders float32 sums; after 4 Adam steps the networks agree to
    # ~1e-6. A compiled pass that drew other noise, or dropped a term, is off by >1e-2.
    for a, b in ((eager.actor, compiled.actor), (eager.critic, compiled.critic),
                 (eager.critic_target, compiled.critic_target)):
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(compiled.log_alpha, eager.log_alpha, rtol=1e-4, atol=1e-5)
    assert all(not torch.equal(p, q) for p, q in zip(initial, compiled.actor.parameters()))  # it did learn


@pytest.mark.integration
def test_compiled_update_matches_the_eager_update_on_cpu():
    """torch.compile (Inductor, C++ on this CPU) of the critic and actor passes, with an auxiliary
    loss on the critic's features: losses and networks equal the eager learner's after 4 updates."""
    from torch._dynamo.utils import counters
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    _compare(torch.device("cpu"), "default")
    assert counters["stats"]["unique_graphs"] >= graphs + 2  # both passes ran compiled, not eager ...
    assert sum(counters["graph_break"].values()) == breaks  # ... each as whole graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.gpu
def test_cuda_graph_update_matches_the_eager_update_on_the_gpu():
    """mode reduce-overhead (the passes replayed as CUDA graphs) against eager CUDA updates."""
    _compare(torch.device("cuda"), "reduce-overhead", updates=6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.gpu
def test_device_replay_on_the_gpu_samples_the_host_replays_batches():
    host = MultiTaskReplay(3, 100, 5, 2, normalize_rewards=True)
    device = DeviceReplay(3, 100, 5, 2, torch.device("cuda"), normalize_rewards=True)
    _fill([host, device], np.random.default_rng(0))
    a, b = host.sample(16, np.random.default_rng(1)), device.sample(16, np.random.default_rng(1))
    assert b.obs.device.type == "cuda"
    assert all(torch.equal(x, y.cpu()) for x, y in zip(a, b))


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.gpu
@pytest.mark.integration
def test_pointmass_learns_on_the_gpu_with_compiled_passes(tmp_path):
    result = train_in_process("--suite", "pointmass", "--backend", "single", "--steps", 6000, "--eval-every", 6000,
                              "--device", "cuda", "--set", "sac.compile=reduce-overhead", "--set", "eval.goals=5",
                              "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "learners.json").read_text())
    assert summary["step"] == 6000
    from metrics import evallog
    rows = evallog.read(tmp_path / "run" / "evals.jsonl")
    final = [r["success"] for r in rows if r["step"] == 6000]
    assert np.mean(final) >= 0.75, final


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.gpu
def test_weight_publisher_hands_over_every_copy_it_starts_and_the_weights_of_its_version():
    """A GPU learner's weights reach the actors through one pinned copy at a time: every copy
    started is published once it has arrived (none dropped while the GPU runs behind), and what
    is published is the policy as it was at that version."""
    from launch.actors.weights import WeightPublisher

    class Source:  # what an actor source's publish receives; weights() read later, as a pool may
        def __init__(self):
            self.published = []

        def publish(self, weights, version):
            self.published.append((version, weights))

    policy = torch.nn.Linear(64, 64).cuda()
    publisher, source, snapshots = WeightPublisher(policy, "local"), Source(), {}
    for version in range(1, 41):
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn_like(p).matmul(torch.randn(p.shape[-1], p.shape[-1], device="cuda")))  # GPU work
        snapshots[version] = torch.nn.utils.parameters_to_vector(policy.parameters()).detach().cpu()
        publisher(source, version)
    torch.cuda.synchronize()
    publisher(source, 41)  # the pending copy has arrived: published now
    versions = [v for v, _ in source.published]
    assert versions == sorted(set(versions)) and versions[-1] >= 2, versions
    assert all(torch.equal(weights(), snapshots[v]) for v, weights in source.published)
    publisher.reset()  # a new stage: nothing of the last one is published
    assert publisher(source, 1) is None


@pytest.mark.integration
def test_compiled_update_matches_the_eager_update_in_bf16():
    """sac.precision=bf16 (agents/sac/precision.py) with compiled passes: the autocast regions are
    compiled with the passes, and losses and networks equal the eager bf16 learner's after 4
    updates (an auxiliary loss on the critic's features included)."""
    _compare(torch.device("cpu"), "default", precision="bf16")
