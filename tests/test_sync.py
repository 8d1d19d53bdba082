"""Learning-rate schedules, local SGD and the Quadratic Synchronization Rule (launch/distributed/local_sgd.py)."""

import json
import math
import subprocess
import sys

import pytest
import torch

from agents.replay import Batch
from agents.sac import SACConfig, SACLearner
from agents.sac.lr_schedule import lr_factor
from launch.distributed.local_sgd import LocalSGDSync
from tests.conftest import REPO, env_with_tmpdir


def test_learning_rate_schedules_by_hand():
    # cosine over 100 updates after 10 warm-up updates, ending at 10% of the base rate
    assert lr_factor("cosine", 0, 110, warmup=10, final=0.1) == pytest.approx(0.1)   # warm-up: 1/10
    assert lr_factor("cosine", 9, 110, warmup=10, final=0.1) == pytest.approx(1.0)   # warm-up: 10/10
    assert lr_factor("cosine", 10, 110, warmup=10, final=0.1) == pytest.approx(1.0)
    assert lr_factor("cosine", 60, 110, warmup=10, final=0.1) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert lr_factor("cosine", 35, 110, warmup=10, final=0.1) == pytest.approx(0.1 + 0.9 * (1 + 0.5 ** 0.5) / 2)
    assert lr_factor("cosine", 110, 110, warmup=10, final=0.1) == pytest.approx(0.1)
    assert lr_factor("cosine", 500, 110, warmup=10, final=0.1) == pytest.approx(0.1)  # past the end: held
    assert lr_factor("linear", 25, 100) == pytest.approx(0.75)
    assert lr_factor("linear", 100, 100) == pytest.approx(0.0)
    assert lr_factor("constant", 99, 100) == 1.0


def _batch(generator, tasks=(0, 1), per_task=8) -> Batch:
    task = torch.tensor(tasks).repeat_interleave(per_task)
    n = len(task)
    return Batch(torch.randn(n, 3, generator=generator), torch.rand(n, 2, generator=generator) * 2 - 1,
                 torch.randn(n, generator=generator), torch.randn(n, 3, generator=generator), torch.zeros(n), task)


def test_qsr_period_follows_a_decaying_cosine_schedule():
    """QSR on a real learner (one rank: the averages communicate nothing but are scheduled alike):
    H = max(H_min, floor((alpha / lr)^2)), at most the updates left, with lr the cosine-decayed
    rate of the first update after each average."""
    total, base, alpha, h_min = 120, 1e-3, 2e-3, 2
    sac = SACConfig(hidden_sizes=(8,), actor_lr=base, critic_lr=base, alpha_lr=base, lr_schedule="cosine",
                    lr_schedule_updates=total)
    sync = LocalSGDSync(world=1, share=1.0, period=h_min, qsr_alpha=alpha)
    learner = SACLearner(sac, 3, 2, 2, torch.device("cpu"), sync)
    generator = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(total):
        learner.update(_batch(generator))
        rates.append(learner.critic_optimizer.param_groups[0]["lr"])

    def lr(u):  # the paper's cosine decay, by hand
        return base * 0.5 * (1 + math.cos(math.pi * u / total))
    expected, start = [], 0
    while start < total:
        h = max(min(max(math.floor((alpha / lr(start)) ** 2) if lr(start) else total, h_min), total - start), 1)
        start += h
        expected.append(start)
    assert rates[0] == pytest.approx(base)
    assert rates[60] == pytest.approx(lr(60)) and rates[-1] == pytest.approx(lr(119))
    assert [u for u, _ in sync.recent] == expected
    periods = [b - a for a, b in zip([0, *expected], expected)]
    assert periods[:2] == [4, 4] and max(periods) > 20, periods  # H grows as the rate decays
    assert sync.averages == len(expected)


def test_qsr_uses_the_base_period_during_the_learning_rate_warm_up():
    """The reference (hmgxr128/QSR localopt.py): `if step_ctr < warmup_steps: h = init_h`. The
    quadratic rule on a warm-up rate (base / 100 at update 0) would give H = the whole schedule."""
    sac = SACConfig(hidden_sizes=(8,), lr_warmup_updates=100, lr_schedule="cosine", lr_schedule_updates=100_000)
    learner = SACLearner(sac, 3, 2, 2, torch.device("cpu"))
    sync = LocalSGDSync(world=1, share=1.0, period=2, qsr_alpha=6e-4)
    assert [sync.next_period(learner, u) for u in (0, 50, 99)] == [2, 2, 2]
    assert sync.next_period(learner, 100) == 4  # (6e-4 / 3e-4)^2 at the full rate


def _expected_qsr_averages(total, warmup, base, alpha, h_min):
    def lr(u):  # cosine after the warm-up, by hand
        return base * 0.5 * (1 + math.cos(math.pi * (u - warmup) / (total - warmup)))
    expected, start = [], 0
    while start < total:
        h = h_min if start < warmup else max(min(max(math.floor((alpha / lr(start)) ** 2), h_min), total - start), 1)
        start += h
        expected.append(start)
    return expected


@pytest.mark.multiproc
@pytest.mark.integration
def test_local_sgd_and_qsr_on_two_ranks(tmp_path):
    """2 torchrun ranks on different data (with auxiliary heads and PVN's target heads): every
    learned tensor differs between averages and is equal right after each; 1,000 updates make 1/4
    of `step`'s all-reduces. An uneven shard's weighting, averaged moments; QSR with a warm-up
    averages every H_min updates from the start; per-task heads move as far as on one learner."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(REPO / "tests" / "scripts" / "torchrun_local_sgd.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env_with_tmpdir(tmp_path), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    expected_qsr = _expected_qsr_averages(40, 10, 1e-3, 2e-3, 2)
    assert expected_qsr[:5] == [2, 4, 6, 8, 10] and expected_qsr[-1] == 40
    for r in ranks:
        assert r["since"] == [1, 2, 3, 0] * 3
        for drift, since in zip(r["drift"], r["since"]):
            assert (drift == 0.0) == (since == 0), r
        assert r["allreduces"] == {"local": 750, "step": 3000}
        # An uneven shard (2 tasks of 3 on rank 0) weighs rank 0's parameters 2/3.
        assert r["weighted"] < 1e-6, r
        assert r["moments"][0] == 0.0 and r["moments"][1] > 0.0, r
        qsr = r["qsr"]
        assert qsr["averaged_at"] == expected_qsr, qsr
        assert qsr["rates"][0] == pytest.approx(1e-4)  # the warm-up's first rate
        assert [u + 1 for u, d in enumerate(qsr["drift"]) if d == 0.0] == expected_qsr, qsr
        # Each task's head is trained by its rank alone; averaging must keep the owner's step
        # (a plain average keeps half of it on 2 ranks).
        assert all(0.8 < ratio < 1.25 for ratio in r["head_ratio"]), r["head_ratio"]
        assert r["reason"] == "a non-finite temperature on rank 1"


@pytest.mark.multiproc
def test_every_step_gradient_is_the_task_balanced_mean_with_an_uneven_shard(tmp_path):
    """3 tasks on 2 ranks (2 + 1): the synced gradient equals one process's gradient of the mean
    over all tasks; plain averaging of the ranks' means would weight task 1 twice as much. Then
    PCGrad under the same shards: every rank combines every task's gathered rows, so the ranks stay
    identical and equal the single-process PCGrad updates (tests/scripts/torchrun_gradient.py)."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(REPO / "tests" / "scripts" / "torchrun_gradient.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env_with_tmpdir(tmp_path), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.glob("torchelastic_*"))  # torchrun's log directory, in the test's own
    results = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["tasks"] for r in results) == [[0, 2], [1]]
    for r in results:
        assert r["weighted"] < 1e-5, r
        assert r["unweighted"] > 1e-2, r  # the check can tell the two apart
    assert results[0]["pcgrad_params"] == results[1]["pcgrad_params"]
    for r in results:
        assert r["pcgrad_error"] < 1e-5 and r["pcgrad_bytes"] > 0, r
        assert r["averaged_error"] > 1e-4, r  # not gathering would be caught
