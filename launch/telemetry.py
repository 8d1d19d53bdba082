"""What a run reports besides its evaluations: every `run.log_every` env steps the progress line,
the TensorBoard scalars and the finished training episodes; at the end learners.json (each learner
rank's summary, the cross-rank check of everything learned, the state digests) and the final line.

Every learner rank calls these at the same steps (they gather from every rank); rank 0 writes,
through the run log (metrics/runlog.py). The loop (launch/loop/trainer.py) hands over what it counted.

The progress line (`Progress`): steps, env-steps/s, updates/s, success, ETA. The ETA is honest
about the two speeds of a run: during a warm-up actors step at random and nothing is learned (fast),
afterwards updates bound the speed (slow). Wall time is attributed to the phase it was spent in,
and the ETA is remaining warm-up steps / warm-up rate + remaining learning steps / learning rate.
Until a learning rate has been measured it says "estimating" instead of extrapolating the
warm-up's speed.

What bounds the run: with actor workers, the learner's time in the learning phase is either
spent waiting for experience (polling the actors) or updating. If it waits for a quarter of
its time or more, the actors bound the run (add actors or envs); otherwise the learner does
(a faster device, fewer updates). The line shows it since the previous line; learners.json
over the whole run.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import numpy as np
import torch

from launch.distributed.ranks import Dist, state_digest


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Rates on the line are over the last interval; the ETA uses each phase's rate since this
    process started."""

    def __init__(self, total_steps: int, start_step: int, start_updates: int, stream=None):
        self.total, self.stream = total_steps, stream or sys.stdout
        self.last_time = self._tick = time.perf_counter()
        self.last_step, self.last_updates = start_step, start_updates
        self.phase = {"warmup": [0, 0.0], "learning": [0, 0.0]}  # phase -> [env steps, seconds]
        self.tty = self.stream.isatty()
        self.learner_time = {"line": [0.0, 0.0], "run": [0.0, 0.0]}  # [waiting for experience, updating]

    def learner(self, waited: float, updated: float) -> None:
        """Learning-phase time of the learner: waiting for experience, and updating."""
        for record in self.learner_time.values():
            record[0] += waited
            record[1] += updated

    def bound(self, span: str = "line") -> str | None:
        """'learner' or 'actors' with the learner's waiting share, over `span` (line: since the
        previous line, then restarted; run: the whole run); None before learning started."""
        waited, updated = self.learner_time[span]
        if span == "line":
            self.learner_time["line"] = [0.0, 0.0]
        if waited + updated <= 0:
            return None
        share = waited / (waited + updated)
        return f"{'actors' if share >= 0.25 else 'learner'} (learner waited {100 * share:.0f}% for experience)"

    def advance(self, steps: int, learning: bool) -> None:
        """Attribute the time since the previous call, and `steps` new env steps, to a phase."""
        now = time.perf_counter()
        record = self.phase["learning" if learning else "warmup"]
        record[0] += steps
        record[1] += now - self._tick
        self._tick = now

    def eta(self, warmup_left: int, learning_left: int) -> float | None:
        """Seconds to go for the given remaining steps of each phase; None while a needed rate
        is unknown (no learning step measured yet)."""
        def rate(name):
            steps, seconds = self.phase[name]
            return steps / seconds if steps and seconds > 0 else None
        learning, warmup = rate("learning"), rate("warmup")
        if learning_left and learning is None:
            return None
        warmup = warmup or learning  # a resumed run may not have seen a warm-up yet
        return (warmup_left / warmup if warmup_left else 0.0) + (learning_left / learning if learning_left else 0.0)

    def rates(self, step: int, updates: int) -> tuple[float, float]:
        """(env-steps/s, updates/s) since the previous call."""
        now = time.perf_counter()
        dt = max(now - self.last_time, 1e-9)
        rates = ((step - self.last_step) / dt, (updates - self.last_updates) / dt)
        self.last_time, self.last_step, self.last_updates = now, step, updates
        return rates

    def line(self, step: int, steps_per_s: float, updates_per_s: float,
             train_success: float | None, eval_success: float | None, eta: float | None,
             bound: str | None = None) -> str:
        parts = [f"step {step:,}/{self.total:,} ({100 * step / self.total:.1f}%)",
                 f"{steps_per_s:,.0f} env-steps/s", f"{updates_per_s:,.1f} updates/s"]
        if bound is not None:
            parts.append(f"bound by {bound}")
        if train_success is not None:
            parts.append(f"train success {train_success:.2f}")
        if eval_success is not None:
            parts.append(f"eval success {eval_success:.2f}")
        parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA estimating (warm-up)")
        return " | ".join(parts)

    def show(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()


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
        alphas = learner.temperature.log_alphas.detach().exp().cpu().numpy()  # per network task (or one, shared)
        alphas = {task.name: alphas[min(task.index, len(alphas) - 1)] for task in self.suite.tasks}  # hidden: one
        restarts = sum(g[1] for g in gathered)
        lags = [lag for g in gathered for lag in g[3]]
        scalars = {"perf/env_steps_per_s": steps_per_s, "perf/updates_per_s": updates_per_s, **losses,
                   "perf/lr_factor": learner.lr_factor(),
                   "actors/restarts": restarts, **({"actors/policy_lag": np.mean(lags)} if lags else {}),
                   **{f"actors/steps/actor{a}": n for g in gathered for a, n in g[2].items()},
                   **{f"alpha/{name}": alpha for name, alpha in alphas.items()}}
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
            {"task": self.suite.tasks[t].name, "task_index": t, "success": bool(e.success), "return": float(e.ret),
             "start_step": e.start}
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
                              "bound_by": progress.bound("run"), "ranks": ranks,
                              **{k: run[k] for k in ("boundaries", "detected_boundaries") if k in run}})
        final = "n/a" if self.runlog.eval_success is None else f"{self.runlog.eval_success:.3f}"
        by_actor = ", ".join(f"{k}: {v:,}" for r in ranks for k, v in sorted(r["steps_by_actor"].items()))
        progress.done(f"done: step {step:,} | eval success {final} | training "
                      f"{run['train_env_steps_per_s']:,.0f} env-steps/s (evaluation excluded) | "
                      f"actor restarts {restarts} | env steps by actor {{{by_actor}}} | run dir {run_dir}")
        self.log(self.runlog.headline_metrics(step))
