"""Runs as l2logger logs and back, so `l2metrics` scores our runs and our metrics score theirs.

l2logger (1.8.2) format: SCENARIO/logger_info.json ({"metrics_columns": [...]}),
SCENARIO/scenario_info.json (complexity, difficulty, scenario_type) and one
SCENARIO/<worker>/<block_num>-<train|test>/data-log.tsv per block, with the columns
block_num, exp_num, worker_id, block_type, block_subtype, task_name, task_params, exp_status,
timestamp, then the metric columns (sorted). exp_num counts experiences over the whole scenario.

How a run becomes a scenario (`run_regimes`):
  test block   every task's evaluation at the schedule's start (the latest at or before it),
  then for each stage:
  train block  the stage's training episodes (logged in (start, end]), task after task (one
               regime per task; l2logger cuts a regime at every task change),
  test block   every task's evaluation at the stage's end (the latest in (start, end]).
A test experience is one evaluation of one task (success = fraction of goals solved); a train
experience is one training episode. Intermediate evaluations are not exported: l2metrics reads
consecutive blocks of one task as relearning, so splitting a stage would invent recoveries.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from metrics.l2m import Regime
from metrics.runs import Run

STANDARD_COLUMNS = ("block_num", "exp_num", "worker_id", "block_type", "block_subtype", "task_name",
                    "task_params", "exp_status", "timestamp")
METRIC_COLUMNS = ("return", "success")   # what we export; l2logger orders extra columns by name
WORKER = "polytask"
TIME_FORMAT = "%Y%m%dT%H%M%S.%f"


def _latest(steps: np.ndarray, lo: int | None, hi: int) -> int | None:
    """Index of the latest evaluation with lo < step <= hi (lo None: no lower bound)."""
    ok = (steps <= hi) & (steps > lo if lo is not None else True)
    return int(np.flatnonzero(ok)[-1]) if ok.any() else None


def _rows(run: Run) -> list[dict]:
    """The run as l2logger records (without exp_num/block_num), block by block."""
    blocks = []
    fallback_time = time.time()

    def eval_block(e):
        t = run.eval_time[e] if run.eval_time is not None else np.nan
        return ("test", [{"task_name": task, "success": run.success[e, j], "return": run.returns[e, j],
                          "step": int(run.steps[e]), "time": t}
                         for j, task in enumerate(run.tasks) if not np.isnan(run.success[e, j])])

    first = _latest(run.steps, None, run.schedule[0].start)
    if first is not None:
        blocks.append(eval_block(first))
    ep = run.episodes
    for stage in run.schedule:
        rows = []
        for task in stage.tasks:
            idx = np.flatnonzero((ep.task == run.task_index(task)) & (ep.step > stage.start) & (ep.step <= stage.end))
            rows += [{"task_name": task, "success": ep.success[i], "return": ep.returns[i],
                      "step": int(ep.step[i]), "time": ep.time[i]} for i in idx]
        if rows:
            blocks.append(("train", rows))
        last = _latest(run.steps, stage.start, stage.end)
        if last is not None:
            blocks.append(eval_block(last))
    out, exp = [], 0
    for block_num, (block_type, rows) in enumerate(blocks):
        for row in rows:
            t = row.pop("time")
            out.append({"block_num": block_num, "exp_num": exp, "worker_id": WORKER, "block_type": block_type,
                        "block_subtype": "wake", "task_params": "{}", "exp_status": "complete",
                        "timestamp": datetime.fromtimestamp(fallback_time if np.isnan(t) else t).strftime(TIME_FORMAT),
                        **row})
            exp += 1
    return out


def _regimes(rows: list[dict], measure: str) -> list[Regime]:
    """l2logger's reading: sort by (exp_num, block_num), lower-case task names, keep complete
    experiences with a value, cut a regime wherever block, type, subtype or task changes."""
    rows = sorted(rows, key=lambda r: (int(r["exp_num"]), int(r["block_num"])))
    regimes: list[Regime] = []
    key = None
    exp, vals = [], []
    for r in rows:
        value = _float(r.get(measure))
        if r.get("exp_status") != "complete" or np.isnan(value):
            continue
        k = (int(r["block_num"]), r["block_type"], r.get("block_subtype") or "wake", str(r["task_name"]).lower())
        if k != key:
            if key is not None:
                regimes.append(Regime(*key, np.array(exp, np.int64), np.array(vals)))
            key, exp, vals = k, [], []
        exp.append(int(r["exp_num"]))
        vals.append(value)
    if key is not None:
        regimes.append(Regime(*key, np.array(exp, np.int64), np.array(vals)))
    return regimes


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return np.nan


def run_regimes(run: Run, measure: str = "success") -> list[Regime]:
    """The run's lifelong log as L2M regimes: exactly what exporting it and reading it back gives."""
    return _regimes(_rows(run), measure)


def export_run(run: Run, scenario_dir: Path | str) -> Path:
    """Write the run as an l2logger scenario directory (atomically: a temp dir renamed into place)."""
    scenario_dir = Path(scenario_dir)
    if scenario_dir.exists():
        raise FileExistsError(f"{scenario_dir} already exists")
    scenario_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{scenario_dir.name}.", dir=scenario_dir.parent))
    try:
        (tmp / "logger_info.json").write_text(json.dumps(
            {"metrics_columns": list(METRIC_COLUMNS), "log_format_version": "1.1"}, indent=2))
        continual = len(run.schedule) > 1
        (tmp / "scenario_info.json").write_text(json.dumps(
            {"complexity": "1-low", "difficulty": "2-medium", "scenario_type": "condensed" if continual else "custom",
             "polytask_run": run.name, "tasks": list(run.tasks)}, indent=2))
        columns = list(STANDARD_COLUMNS) + sorted(METRIC_COLUMNS + ("step",))
        by_block: dict = {}
        for row in _rows(run):
            by_block.setdefault((row["block_num"], row["block_type"]), []).append(row)
        for (block_num, block_type), rows in by_block.items():
            block_dir = tmp / WORKER / f"{block_num}-{block_type}"
            block_dir.mkdir(parents=True)
            with open(block_dir / "data-log.tsv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns, delimiter="\t", lineterminator="\n")
                writer.writeheader()
                writer.writerows({k: (repr(float(v)) if k in METRIC_COLUMNS else v) for k, v in row.items()}
                                 for row in rows)
        os.replace(tmp, scenario_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return scenario_dir


def read_l2logger(scenario_dir: Path | str, measure: str = "reward") -> list[Regime]:
    """An l2logger scenario's experiences as regimes of `measure` (a metrics column)."""
    scenario_dir = Path(scenario_dir)
    info_path = scenario_dir / "logger_info.json"
    if not info_path.is_file():
        raise ValueError(f"{scenario_dir} is not an l2logger scenario (no logger_info.json)")
    try:
        columns = json.loads(info_path.read_text())["metrics_columns"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{info_path} is malformed ({type(e).__name__}: {e})") from None
    if measure not in columns:
        raise ValueError(f"performance measure {measure!r} is not among the log's metrics columns {columns}")
    rows = []
    for path in sorted(scenario_dir.rglob("data-log.tsv")):
        with open(path, newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            missing = set(STANDARD_COLUMNS) - {"block_subtype"} - set(reader.fieldnames or ())
            if missing or measure not in (reader.fieldnames or ()):
                raise ValueError(f"{path} lacks columns {sorted(missing) or [measure]}")
            rows += list(reader)
    if not rows:
        raise ValueError(f"{scenario_dir} has no data-log.tsv rows")
    try:
        regimes = _regimes(rows, measure)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{scenario_dir} has a malformed row ({type(e).__name__}: {e})") from None
    if not regimes:
        raise ValueError(f"{scenario_dir} has no complete experiences with a {measure!r} value")
    return regimes


def ste_regimes(scenario_dir: Path | str, measure: str = "reward") -> tuple[str, list[Regime]]:
    """A single-task expert log: (its trained task, its regimes)."""
    regimes = read_l2logger(scenario_dir, measure)
    trained = {r.task for r in regimes if r.block_type == "train"}
    if len(trained) != 1:
        raise ValueError(f"expected 1 trained task in {scenario_dir}, found {len(trained)}")
    return trained.pop(), regimes
