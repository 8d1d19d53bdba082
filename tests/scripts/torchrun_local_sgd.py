"""Run under torchrun by tests/test_sync.py: 2 learner ranks, each updating on its own shard of
4 tasks (different data: their networks drift apart), with `LocalSGDSync(period=4)`.

Writes OUT_DIR/rank<r>.json:
  "drift"      per update of the first 12: the largest parameter difference between the ranks
               (every trained tensor and the target critics), gathered after the update
  "since"      per update: local updates since the last average, after the update
  "allreduces" {"local": n, "step": n}: all-reduces over 1,000 updates with each synchronizer
  "weighted"   with shares 2/3 and 1/3 (an uneven shard), the largest difference between the
               averaged parameters and 2/3 theta_0 + 1/3 theta_1 computed from the gathered ones
  "moments"    with average_optimizer_state: the largest difference of Adam's moments across the
               ranks after an average (0), and before it (> 0)
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as tdist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agents.replay import Batch  # noqa: E402
from agents.sac import SACConfig, SACLearner  # noqa: E402
from launch.distributed import EveryStepSync, init_from_env  # noqa: E402
from launch.local_sgd import LocalSGDSync, network_tensors  # noqa: E402

NUM_TASKS, PER_TASK, UPDATES = 4, 8, 1000


def shard_batch(rank: int, generator: torch.Generator) -> Batch:
    task = torch.tensor([rank, rank + 2]).repeat_interleave(PER_TASK)  # tasks r and r + 2
    n = len(task)
    return Batch(torch.randn(n, 3, generator=generator), torch.rand(n, 2, generator=generator) * 2 - 1,
                 torch.randn(n, generator=generator), torch.randn(n, 3, generator=generator), torch.zeros(n), task)


def build(dist, sync) -> SACLearner:
    torch.manual_seed(0)  # the same initial networks on both ranks
    return SACLearner(SACConfig(hidden_sizes=(16, 16)), 3, 2, NUM_TASKS, torch.device("cpu"), sync)


def flat(learner) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for ts in network_tensors(learner, False).values() for t in ts])


def main():
    dist = init_from_env()
    out = {"rank": dist.rank, "drift": [], "since": [], "allreduces": {}}
    generator = torch.Generator().manual_seed(100 + dist.rank)  # each rank its own data
    local = build(dist, LocalSGDSync(dist.world, 0.5, period=4))
    for update in range(UPDATES):
        local.update(shard_batch(dist.rank, generator))
        if update < 12:
            mine = flat(local)
            theirs = [torch.empty_like(mine) for _ in range(dist.world)]
            tdist.all_gather(theirs, mine)
            out["drift"].append(float((theirs[0] - theirs[1]).abs().max()))
            out["since"].append(local.synchronizer.since)
    out["allreduces"]["local"] = local.synchronizer.allreduces
    step = build(dist, EveryStepSync(dist, 0.5))
    for _ in range(UPDATES):
        step.update(shard_batch(dist.rank, generator))
    out["allreduces"]["step"] = step.synchronizer.allreduces
    out.update(uneven_and_moments(dist, generator))
    (Path(sys.argv[1]) / f"rank{dist.rank}.json").write_text(json.dumps(out))
    dist.close()


def gathered(dist, tensor: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(tensor) for _ in range(dist.world)]
    tdist.all_gather(out, tensor)
    return out


def moments(learner) -> torch.Tensor:
    return torch.cat([state[k].flatten() for opt in learner.optimizers.values() for state in opt.state.values()
                      for k in ("exp_avg", "exp_avg_sq")])


def uneven_and_moments(dist, generator) -> dict:
    share = 2 / 3 if dist.rank == 0 else 1 / 3
    learner = build(dist, LocalSGDSync(dist.world, share, period=10**9, average_optimizer_state=True))
    for _ in range(3):
        learner.update(shard_batch(dist.rank, generator))
    before, moments_before = gathered(dist, flat(learner)), gathered(dist, moments(learner))
    learner.synchronizer.average(learner)
    expected = 2 / 3 * before[0] + 1 / 3 * before[1]
    after_moments = gathered(dist, moments(learner))
    return {"weighted": float((flat(learner) - expected).abs().max()),
            "moments": [float((after_moments[0] - after_moments[1]).abs().max()),
                        float((moments_before[0] - moments_before[1]).abs().max())]}


if __name__ == "__main__":
    main()
