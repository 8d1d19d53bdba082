"""Shared helpers for the benchmarks: medians over repeats and a fixed-width table."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from pathlib import Path

TRAIN = Path(__file__).resolve().parent.parent / "launch" / "train.py"


def median(values) -> float:
    return statistics.median(values)


def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[f"{c:,.1f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def train_missing(out: Path, runs: dict[str, list[str]], workers: int) -> None:
    """Train every run {name: train.py arguments} that has no finished run directory out/name yet
    (one left unfinished by an interrupted benchmark starts again), `workers` at a time, each
    logged to out/name.log; the run directories stay, so a benchmark's table re-prints from them."""
    from concurrent.futures import ThreadPoolExecutor

    out.mkdir(parents=True, exist_ok=True)
    todo = [name for name in runs if not (out / name / "learners.json").exists()]

    def train(name: str) -> int:
        shutil.rmtree(out / name, ignore_errors=True)
        with open(out / f"{name}.log", "w") as log:
            return subprocess.run([sys.executable, str(TRAIN), *runs[name], "--run-dir", str(out / name)],
                                  stdout=log, stderr=subprocess.STDOUT).returncode
    if todo:
        print(f"training {len(todo)} runs, {workers} at a time", flush=True)
        with ThreadPoolExecutor(workers) as pool:
            for name, code in zip(todo, pool.map(train, todo)):
                if code:
                    print(f"failed ({code}): {name}", flush=True)
