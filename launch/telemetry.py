"""What a run reports besides its evaluations: every `run.log_every` env steps the progress line,
the TensorBoard scalars and the finished training episodes; at the end learners.json (each learner
rank's summary, the cross-rank check of everything learned, the state digests) and the final line.

Every learner rank calls these at the same steps (they gather from every rank); rank 0 writes,
through the run log (launch/runlog.py). The loop (launch/trainer.py) hands over what it counted.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from launch.distributed import Dist, state_digest
from launch.progress import Progress


class Telemetry:
    def __init__(self, dist: Dist, suite, runlog, log=print):
        """runlog: rank 0's RunLog (None on the other ranks)."""
        self.dist, self.suite, self.runlog, self.log = dist, suite, runlog, log

    def training(self, step: int, progress: Progress, learner, losses: dict, steps_to_go: tuple[int, int],
                 episodes: dict, restarts: int, steps_by_actor: dict, lags: list[int]) -> None:
        """One log point: this rank's finished episodes, actor restarts, steps per actor and policy
        lags since the last one; steps_to_go: (warm-up, learning) env steps left, for the ETA."""
        gathered = self.dist.gather_objects((dict(episodes), restarts, dict(steps_by_actor), lags))
        if not self.dist.is_main:
            return
        steps_per_s, updates_per_s = progress.rates(step, learner.num_updates)
        every_task = torch.arange(len(self.suite.tasks), device=learner.device)
        alphas = learner.alpha(every_task).detach().exp().cpu().numpy()  # one shared, or one per task
        restarts = sum(g[1] for g in gathered)
        lags = [lag for g in gathered for lag in g[3]]
        scalars = {"perf/env_steps_per_s": steps_per_s, "perf/updates_per_s": updates_per_s, **losses,
                   "perf/lr_factor": learner.lr_factor(),
                   "actors/restarts": restarts, **({"actors/policy_lag": np.mean(lags)} if lags else {}),
                   **{f"actors/steps/actor{a}": n for g in gathered for a, n in g[2].items()},
                   **{f"alpha/{task.name}": alphas[task.index] for task in self.suite.tasks}}
        scalars.update({f"sync/{k}": v for k, v in learner.synchronizer.stats().items() if v is not None})
        eta = progress.eta(*steps_to_go)
        if eta is not None:
            scalars["perf/eta_hours"] = eta / 3600
        self.runlog.scalars(step, scalars)
        by_task = defaultdict(list)
        for rank_episodes, *_ in gathered:
            for task, eps in rank_episodes.items():
                by_task[task] += eps
        train_success = self.runlog.episodes(step, [
            {"task": self.suite.tasks[t].name, "task_index": t, "success": bool(e.success), "return": float(e.ret)}
            for t, eps in sorted(by_task.items()) for e in eps])
        line = progress.line(step, steps_per_s, updates_per_s, train_success, self.runlog.eval_success, eta,
                             progress.bound())
        progress.show(line + (f" | actor restarts {restarts}" if restarts else ""))

    def gather_summaries(self, learner, summary: dict) -> list[dict] | None:
        """Every rank's `summary` (its tasks, env steps, updates, ...) with its learned state's digest
        and flat copy, on rank 0 (None elsewhere). Call after the final sync point."""
        state = learner.synced_tensors()  # everything learned that ranks must hold alike
        params = torch.cat([state[name].detach().cpu().float().flatten() for name in sorted(state)])
        return self.dist.gather_objects({**summary, "params": params, "state_digest": state_digest(state)})

    def finish(self, step: int, progress: Progress, ranks: list[dict], run: dict, run_dir) -> None:
        """Rank 0: learners.json (run: the run-wide entries), the final line, the headline metrics."""
        mine = ranks[self.dist.rank]["params"]
        max_difference = max(float((r["params"] - mine).abs().max()) for r in ranks)
        for r in ranks:
            del r["params"]
        restarts = sum(r["actor_restarts"] for r in ranks)
        self.runlog.learners({"world_size": self.dist.world, "sync": run["sync"], "step": step,
                              "actor_restarts": restarts, "max_parameter_difference_across_ranks": max_difference,
                              "train_env_steps_per_s": run["train_env_steps_per_s"], "workers": run["workers"],
                              "bound_by": progress.bound("run"), "ranks": ranks})
        final = "n/a" if self.runlog.eval_success is None else f"{self.runlog.eval_success:.3f}"
        by_actor = ", ".join(f"{k}: {v:,}" for r in ranks for k, v in sorted(r["steps_by_actor"].items()))
        progress.done(f"done: step {step:,} | eval success {final} | training "
                      f"{run['train_env_steps_per_s']:,.0f} env-steps/s (evaluation excluded) | "
                      f"actor restarts {restarts} | env steps by actor {{{by_actor}}} | run dir {run_dir}")
        self.log(self.runlog.headline_metrics(step))
