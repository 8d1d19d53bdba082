"""The run directory's writers, for any training loop (ours, or one that is not ours, like RLlib's):

    config.yaml      the resolved config, the package versions and (continual runs) the schedule
    evals.jsonl      one row per evaluated task per evaluation (metrics/evallog.py)
    episodes.jsonl   one row per finished training episode
    plasticity.jsonl one row per log point: the plasticity diagnostics (agents/plasticity/diagnostics.py)
    tb/              TensorBoard scalars
    learners.json    the end-of-run summary of the learners
and the end-of-run headline metrics (from the run's own logs, metrics/summary.py).

A loop that writes through `RunLog` produces a run directory that metrics/runs.py reads and
launch/report.py reports, whatever trained it. Resume: `RunLog(run_dir, resume_step=S)` drops
the rows logged after S and TensorBoard purges its events after S.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import yaml
from torch.utils.tensorboard import SummaryWriter

from metrics import evallog

EVALS, EPISODES, PLASTICITY = "evals.jsonl", "episodes.jsonl", "plasticity.jsonl"


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("polytask", "torch", "numpy", "gymnasium", "metaworld", "mujoco", "tensorboard"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def write_config(run_dir: Path, tree: dict, schedule: list[dict] | None = None, launch: dict | None = None) -> None:
    """config.yaml: the resolved config tree, the package versions, (continual runs) which tasks
    each stage trained, in env steps (for the metrics), and how it was launched (learner ranks,
    torchrun's run id: an elastic restart recognises its run by it). Atomic."""
    tree = {**tree, "versions": versions()}
    if schedule:
        tree["schedule"] = schedule
    if launch:
        tree["launch"] = launch
    tmp = run_dir / "config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(tree, sort_keys=False))
    os.replace(tmp, run_dir / "config.yaml")


class RunLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        if resume_step is not None:  # drop what a killed run logged after its checkpoint
            for name in (EVALS, EPISODES, PLASTICITY):
                evallog.keep_only(self.run_dir / name, lambda r: r["step"] <= resume_step)
        # purge_step hides the TensorBoard events a killed run wrote after its last checkpoint
        self.writer = SummaryWriter(str(self.run_dir / "tb"),
                                    purge_step=resume_step + 1 if resume_step is not None else None)
        self.eval_success: float | None = None  # mean success of the latest evaluation

    def scalars(self, step: int, values: dict) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, float(value), step)

    def plasticity(self, step: int, values: dict) -> None:
        """One log point's plasticity diagnostics {"plasticity/<network>/<measure>": value}: TensorBoard and
        plasticity.jsonl (the report's plots)."""
        self.scalars(step, values)
        evallog.append(self.run_dir / PLASTICITY, [{"step": step, **{k.removeprefix("plasticity/"): float(v)
                                                                     for k, v in values.items()}}])

    def evaluation(self, rows: list[dict]) -> None:
        """One evaluation: a row per task {"step", "task", "task_index", "env", "success", "return",
        "episodes", "policy", ...}."""
        now = time.time()
        evallog.append(self.run_dir / EVALS, [{**row, "time": now} for row in rows])
        step = rows[0]["step"]
        for row in rows:
            self.writer.add_scalar(f"eval/success/{row['task']}", row["success"], step)
            self.writer.add_scalar(f"eval/return/{row['task']}", row["return"], step)
        self.eval_success = float(np.mean([r["success"] for r in rows]))
        self.writer.add_scalar("eval/success_mean", self.eval_success, step)

    def episodes(self, step: int, rows: list[dict]) -> float | None:
        """Training episodes finished since the last call, logged at `step`: rows {"task",
        "task_index", "success", "return"}. Returns their mean success over tasks (None if none)."""
        now = time.time()
        evallog.append(self.run_dir / EPISODES, [{"step": step, **row, "time": now} for row in rows])
        by_task: dict[str, list[dict]] = {}
        for row in rows:
            by_task.setdefault(row["task"], []).append(row)
        successes = []
        for task, task_rows in by_task.items():
            success = float(np.mean([r["success"] for r in task_rows]))
            successes.append(success)
            self.writer.add_scalar(f"train/success/{task}", success, step)
            self.writer.add_scalar(f"train/return/{task}", float(np.mean([r["return"] for r in task_rows])), step)
        return float(np.mean(successes)) if successes else None

    def learners(self, summary: dict) -> None:
        (self.run_dir / "learners.json").write_text(json.dumps(summary, indent=2) + "\n")

    def headline_metrics(self, step: int) -> str:
        """The run's headline lifelong metrics, computed from its own logs, to TensorBoard; returns
        the line to print."""
        from metrics.runs import RunReadError, read_run
        from metrics.summary import run_summary
        try:
            run = read_run(self.run_dir)
            summary = run_summary(run)
        except (RunReadError, ValueError) as e:
            return f"metrics: unavailable ({e})"
        for name, value in summary.items():
            if not np.isnan(value):
                self.writer.add_scalar(f"metrics/{name}", value, step)
        self.writer.flush()
        policy = (run.config.get("eval") or {}).get("policy", "mean")
        shown = " | ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in summary.items() if not np.isnan(v))
        return (f"metrics: {shown}"
                + f" (evaluation policy: {policy}; full report: python launch/report.py {self.run_dir})")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
