"""Run under torchrun by tests/test_sync.py: W learner ranks, each holding the rows of its
shard of the tasks, sync the critic's gradient; every rank compares the result with the
gradient of the task-balanced mean loss over the whole batch, computed by one process.
Each rank writes OUT_DIR/rank<r>.json: {"rank", "tasks", "weighted", "unweighted"}, maximum
absolute errors (unweighted: what plain averaging of per-rank means would have given).

Then PCGrad on every network: each rank runs three whole updates on its shard's rows and a
single-process learner runs them on the whole batch; the rank records its parameters after each
update ("pcgrad_params"), their largest difference from the single process's ("pcgrad_error")
and the bytes of per-task gradient rows it received ("pcgrad_bytes"), and how far from the single
process averaging each rank's own combination would have ended ("averaged_error")."""

import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agents.balancers import BalanceConfig  # noqa: E402
from agents.hooks import Synchronizer  # noqa: E402
from agents.replay import Batch  # noqa: E402
from agents.sac import SACConfig, SACLearner  # noqa: E402
from launch.distributed.ranks import EveryStepSync, init_from_env  # noqa: E402

NUM_TASKS, PER_TASK = 3, 16


def main():
    dist = init_from_env()
    torch.manual_seed(0)  # identical networks and batch on every rank
    # A near-deterministic policy and a tiny temperature: the sampled next actions (drawn per
    # call) then do not depend on which rows are in the batch.
    sac = SACConfig(hidden_sizes=(16, 16), log_std_min=-30.0, log_std_max=-29.0, init_alpha=1e-12)
    learner = SACLearner(sac, 3, 2, NUM_TASKS, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    n = NUM_TASKS * PER_TASK
    task = torch.arange(NUM_TASKS).repeat_interleave(PER_TASK)
    batch = Batch(torch.randn(n, 3, generator=g), torch.rand(n, 2, generator=g) * 2 - 1,
                  torch.randn(n, generator=g) * (1 + task), torch.randn(n, 3, generator=g), torch.zeros(n), task)
    params = learner.params["critic"]

    def critic_grad(rows):
        loss = learner.critic_loss(Batch(*(x[rows] for x in batch)))[0].mean()
        return torch.autograd.grad(loss, params)

    expected = critic_grad(torch.ones(n, dtype=torch.bool))
    own = dist.shard(NUM_TASKS)
    mine = torch.isin(task, torch.tensor(own))
    results = {"rank": dist.rank, "tasks": own}
    for name, share in (("weighted", len(own) / NUM_TASKS), ("unweighted", 1 / dist.world)):
        for p, grad in zip(params, critic_grad(mine)):
            p.grad = grad.clone()
        EveryStepSync(dist, share).after_backward(params)
        results[name] = max(float((p.grad - e).abs().max()) for p, e in zip(params, expected))
    results.update(pcgrad_updates(dist, sac, batch, mine))
    (Path(sys.argv[1]) / f"rank{dist.rank}.json").write_text(json.dumps(results))
    dist.close()


class AveragedCombinations(EveryStepSync):
    """What not gathering would give: each rank combines its own tasks' rows, then the ranks average."""

    def gather_rows(self, rows, task_ids):
        return rows


def pcgrad_updates(dist, sac, batch, mine) -> dict:
    pcgrad = BalanceConfig(method="pcgrad")
    sac = dataclasses.replace(sac, actor_lr=1e-2, critic_lr=1e-2)  # large steps: differences show
    share = float(mine.float().mean())
    learners = []
    for sync in (EveryStepSync(dist, share), Synchronizer(), AveragedCombinations(dist, share)):
        torch.manual_seed(0)  # the same networks
        learners.append(SACLearner(sac, 3, 2, NUM_TASKS, torch.device("cpu"), sync, balance=pcgrad, seed=7))
    rank_learner, single, averaged = learners
    shard = Batch(*(x[mine] for x in batch))
    params, errors = [], []
    for _ in range(3):
        rank_learner.update(shard)
        single.update(batch)
        averaged.update(shard)
        flat = [torch.cat([p.detach().flatten() for p in learner.params[net]])
                for learner in learners for net in ("critic", "actor")]
        params.append(torch.cat([*flat[:2], rank_learner.log_alpha.detach()]).tolist())
        errors.append(max(float((flat[k] - flat[k + 2]).abs().max()) for k in (0, 1)))
    averaged_error = max(float((flat[k] - flat[k + 2]).abs().max()) for k in (2, 3))
    return {"pcgrad_params": params, "pcgrad_error": max(errors), "averaged_error": averaged_error,
            "pcgrad_bytes": rank_learner.synchronizer.bytes_gathered}


if __name__ == "__main__":
    main()
