"""Learning-rate schedules, local SGD and the Quadratic Synchronization Rule (launch/local_sgd.py)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from agents.replay import Batch
from agents.sac import SACConfig, SACLearner
from agents.sac.schedule import lr_factor
from launch.local_sgd import LocalSGDSync
from tests.conftest import REPO


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


def test_local_sgd_on_two_ranks_averages_every_fourth_update(tmp_path):
    """2 torchrun ranks on different data: their networks differ between averages and are equal
    right after each; 1,000 updates make 1/4 of `step`'s all-reduces (one per network per average,
    against one per network per update). Then an uneven shard's weighting, and averaged moments."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(REPO / "tests" / "scripts" / "torchrun_local_sgd.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["since"] == [1, 2, 3, 0] * 3
        for drift, since in zip(r["drift"], r["since"]):
            assert (drift == 0.0) == (since == 0), r
        assert r["allreduces"] == {"local": 750, "step": 3000}
        # An uneven shard (2 tasks of 3 on rank 0) weighs rank 0's parameters 2/3.
        assert r["weighted"] < 1e-6, r
        assert r["moments"][0] == 0.0 and r["moments"][1] > 0.0, r
