"""The run's JSON-lines logs, appended row by row and truncated on resume.

evals.jsonl: one object per evaluated task per evaluation: step (env steps at evaluation), task
(name), task_index, success (fraction of goals solved), return (mean episode return), episodes
(goals evaluated), time. episodes.jsonl: one object per finished training episode: step (logged
at), task, task_index, success, return, time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def append(path: Path, rows: list[dict]) -> None:
    """Append whole rows and fsync, so a crash leaves at most a torn final line."""
    with open(path, "a") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


def read(path: Path) -> list[dict]:
    """All complete rows (a torn final line from a crash is skipped)."""
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def keep_only(path: Path, keep) -> None:
    """Rewrite the log with the rows for which keep(row) is true (resume drops rows logged after
    the checkpoint and rows of evaluations it will redo). Atomic."""
    if not Path(path).exists():
        return
    rows = [r for r in read(path) if keep(r)]
    tmp = Path(f"{path}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
