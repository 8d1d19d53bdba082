"""Run under torchrun by tests/test_runtime.py: W learner ranks, each holding the rows of its
shard of the tasks, sync the critic's gradient; every rank compares the result with the
gradient of the task-balanced mean loss over the whole batch, computed by one process.
Each rank writes OUT_DIR/rank<r>.json: {"rank", "tasks", "weighted", "unweighted"}, maximum
absolute errors (unweighted: what plain averaging of per-rank means would have given)."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agents.replay import Batch  # noqa: E402
from agents.sac import SACConfig, SACLearner  # noqa: E402
from launch.distributed import EveryStepSync, init_from_env  # noqa: E402

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
    (Path(sys.argv[1]) / f"rank{dist.rank}.json").write_text(json.dumps(results))
    dist.close()


if __name__ == "__main__":
    main()
