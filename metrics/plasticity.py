"""Plasticity over a run: how fast each stage's task is learned, and the diagnostics the learner logged.

    stage_aucs(run)           [S]: each stage's learning speed, the mean of its tasks' evaluations
                              within the stage (Continual World's AUC, per stage: metrics/continual.py)
    read_diagnostics(dir)     plasticity.jsonl's rows (agents/plasticity/diagnostics.py): step and
                              "<network>/<measure>" values, one row per log point
    final_diagnostics(dir)    the last row's values
    speed_change(aucs)        mean AUC of the last `k` stages minus that of the first `k`
    group_plasticity(runs)    the report's entry: per-stage AUC and the diagnostics at the end, means over seeds
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metrics import evallog
from metrics.continual import window_mean
from metrics.runs import Run

PLASTICITY_LOG = "plasticity.jsonl"


def stage_aucs(run: Run, measure: str = "success") -> np.ndarray:
    """[S]: per stage, the mean over its tasks of each task's mean evaluation in the stage's window."""
    return np.array([np.nanmean([window_mean(run, task, (stage.start, stage.end), measure) for task in stage.tasks])
                     for stage in run.schedule])


def speed_change(aucs: np.ndarray, k: int = 5) -> float:
    """Mean AUC of the last k stages minus the first k's (negative: learning got slower)."""
    k = min(k, len(aucs) // 2) or 1
    return float(np.nanmean(aucs[-k:]) - np.nanmean(aucs[:k]))


def group_plasticity(runs: list[Run]) -> dict:
    """Per-stage AUC (mean over seeds, and per seed), its change from the first to the last stages, and
    each diagnostic's last value (mean over the seeds that logged it)."""
    aucs = np.array([stage_aucs(r) for r in runs])
    ends = [r.diagnostics[-1] for r in runs if r.diagnostics]
    keys = sorted({k for row in ends for k in row if k != "step"})
    return {"stage_auc": {"mean": np.nanmean(aucs, 0).tolist(), "per_seed": aucs.tolist(),
                          "change": float(np.mean([speed_change(a) for a in aucs]))},
            "end": {k: float(np.mean([row[k] for row in ends if k in row])) for k in keys}}


def read_diagnostics(run_dir: Path | str) -> list[dict]:
    path = Path(run_dir) / PLASTICITY_LOG
    return evallog.read(path) if path.exists() else []


def final_diagnostics(run_dir: Path | str) -> dict:
    rows = read_diagnostics(run_dir)
    return rows[-1] if rows else {}
