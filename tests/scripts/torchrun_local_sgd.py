"""Run under torchrun by tests/test_sync.py: 2 learner ranks, each updating on its own shard of
4 tasks (rank r: tasks r and r + 2; different data: their networks drift apart).

Writes OUT_DIR/rank<r>.json:
  "drift"      local SGD (period 4), with auxiliary tasks (reward prediction and PVN on the actor's
               trunk): per update of the first 12, the largest difference between the ranks over
               every learned tensor (`SACLearner.synced_tensors`: the modules' state dicts, the
               temperatures, the hooks' heads and PVN's target heads), gathered after the update
  "since"      per update: local updates since the last average, after the update
  "allreduces" {"local": n, "step": n}: all-reduces over 1,000 updates with each synchronizer
  "weighted"   with shares 2/3 and 1/3 (an uneven shard), the largest difference between the
               averaged shared parameters and 2/3 theta_0 + 1/3 theta_1 computed from the gathered ones
  "moments"    with average_optimizer_state: the largest difference of Adam's moments across the
               ranks after an average (0), and before it (> 0)
  "qsr"        QSR with a 10-update warm-up of a cosine schedule over 40 updates: the updates at
               which it averaged, the drift after each of the 40 updates, the rates it saw
  "head_ratio" per task: how far its actor head moved on 2 local-SGD ranks over 8 updates, over
               how far it moved in one process on the whole batch (the same data)
  "reason"     Dist.first_reason when only rank 1 has one
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as tdist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agents.auxiliary import AuxConfig, make_auxiliary_tasks
from agents.hooks import Synchronizer
from agents.replay import Batch
from agents.sac import SACConfig, SACLearner
from launch.distributed.local_sgd import LocalSGDSync, network_tensors
from launch.distributed.ranks import EveryStepSync, init_from_env

NUM_TASKS, PER_TASK, UPDATES = 4, 8, 1000


def task_rows(task: int, update: int) -> Batch:
    """Task `task`'s rows for update `update`: the same on whichever process draws them."""
    g = torch.Generator().manual_seed(1000 * update + task)
    n = PER_TASK
    return Batch(torch.randn(n, 3, generator=g), torch.rand(n, 2, generator=g) * 2 - 1, torch.randn(n, generator=g),
                 torch.randn(n, 3, generator=g), torch.zeros(n), torch.full((n,), task))


def batch_of(tasks, update: int) -> Batch:
    return Batch(*(torch.cat(parts) for parts in zip(*(task_rows(t, update) for t in tasks))))


def own(dist) -> list[int]:
    return dist.shard(NUM_TASKS)  # tasks r and r + 2


def build(sync, sac: SACConfig | None = None, aux: bool = False) -> tuple[SACLearner, list]:
    torch.manual_seed(0)  # the same initial networks on both ranks
    learner = SACLearner(sac or SACConfig(hidden_sizes=(16, 16)), 3, 2, NUM_TASKS, torch.device("cpu"), sync)
    hooks = make_auxiliary_tasks(AuxConfig(reward=0.5, pvn=0.5, pvn_tasks=4, hidden=8, on="actor"),
                                 learner, 3, 2, seed=0) if aux else []
    learner.add_hook_parameters(hooks)
    return learner, hooks


def flat(learner) -> torch.Tensor:
    state = learner.synced_tensors()
    return torch.cat([state[k].detach().flatten() for k in sorted(state)])


def drift(dist, learner) -> float:
    theirs = gathered(dist, flat(learner))
    return float((theirs[0] - theirs[1]).abs().max())


def main():
    dist = init_from_env()
    out = {"rank": dist.rank, "drift": [], "since": [], "allreduces": {}}
    local, hooks = build(LocalSGDSync(dist.world, 0.5, period=4, own_tasks=own(dist)), aux=True)
    for update in range(UPDATES):
        local.update(batch_of(own(dist), update), hooks)
        if update < 12:
            out["drift"].append(drift(dist, local))
            out["since"].append(local.synchronizer.since)
    out["allreduces"]["local"] = local.synchronizer.allreduces
    step, _ = build(EveryStepSync(dist, 0.5))
    for update in range(UPDATES):
        step.update(batch_of(own(dist), update))
    out["allreduces"]["step"] = step.synchronizer.allreduces
    out.update(uneven_and_moments(dist))
    out["qsr"] = qsr_with_warmup(dist)
    out["head_ratio"] = per_task_heads(dist)
    out["reason"] = dist.first_reason("a non-finite temperature" if dist.rank == 1 else None)
    (Path(sys.argv[1]) / f"rank{dist.rank}.json").write_text(json.dumps(out))
    dist.close()


def gathered(dist, tensor: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(tensor) for _ in range(dist.world)]
    tdist.all_gather(out, tensor)
    return out


def moments(learner) -> torch.Tensor:
    return torch.cat([state[k].flatten() for opt in learner.optimizers.values() for state in opt.state.values()
                      for k in ("exp_avg", "exp_avg_sq")])


def uneven_and_moments(dist) -> dict:
    share = 2 / 3 if dist.rank == 0 else 1 / 3
    # A single head and one temperature: every tensor is shared, so all of it is share-weighted.
    sac = SACConfig(hidden_sizes=(16, 16), head="single", shared_temperature=True)
    learner, _ = build(LocalSGDSync(dist.world, share, period=10**9, average_optimizer_state=True,
                                    own_tasks=own(dist)), sac)
    for update in range(3):
        learner.update(batch_of(own(dist), update))

    def shared() -> torch.Tensor:
        return torch.cat([t.detach().flatten() for ts in network_tensors(learner, False).values() for t in ts])
    before, moments_before = gathered(dist, shared()), gathered(dist, moments(learner))
    learner.synchronizer.average(learner)
    expected = 2 / 3 * before[0] + 1 / 3 * before[1]
    after_moments = gathered(dist, moments(learner))
    return {"weighted": float((shared() - expected).abs().max()),
            "moments": [float((after_moments[0] - after_moments[1]).abs().max()),
                        float((moments_before[0] - moments_before[1]).abs().max())]}


def qsr_with_warmup(dist) -> dict:
    sac = SACConfig(hidden_sizes=(16, 16), actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, lr_schedule="cosine",
                    lr_warmup_updates=10, lr_schedule_updates=40)
    learner, _ = build(LocalSGDSync(dist.world, 0.5, period=2, qsr_alpha=2e-3, own_tasks=own(dist)), sac)
    drifts, rates = [], []
    for update in range(40):
        learner.update(batch_of(own(dist), update))
        drifts.append(drift(dist, learner))
        rates.append(learner.critic_optimizer.param_groups[0]["lr"])
    return {"averaged_at": [u for u, _ in learner.synchronizer.recent], "drift": drifts, "rates": rates}


def per_task_heads(dist) -> list[float]:
    """Each task's actor-head columns: distance moved on the ranks / in one process."""
    def head(learner) -> torch.Tensor:
        return learner.actor.net.head.linear.weight.detach().clone().view(16, NUM_TASKS, -1)
    updates = 8
    ranks, _ = build(LocalSGDSync(dist.world, 0.5, period=4, own_tasks=own(dist)))
    single, _ = build(Synchronizer())
    start = head(single)
    for update in range(updates):
        ranks.update(batch_of(own(dist), update))
        single.update(batch_of(range(NUM_TASKS), update))
    moved_ranks = (head(ranks) - start).abs().mean(dim=(0, 2))
    moved_single = (head(single) - start).abs().mean(dim=(0, 2))
    return (moved_ranks / moved_single).tolist()


if __name__ == "__main__":
    main()
