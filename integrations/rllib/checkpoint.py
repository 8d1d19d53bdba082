"""The RLlib engine's checkpoints (launch/rllib_engine.py): RUN_DIR/rllib_checkpoints/step-<N>/ holds
RLlib's own checkpoint of the Algorithm (algorithm/, written by Algorithm.save_to_path), the continual
strategy's state (strategy.pt, continual runs; the strategy lives in the learner) and the driver's
counters (polytask.json: step, stage, next_eval, next_ckpt, stage_steps). Written atomically: into a
temp folder, renamed into place; the newest `keep` are kept. Errors are ValueErrors (the engine
reports them as one line)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

DIR = "rllib_checkpoints"


def save(root: Path, step: int, save_algorithm: Callable[[str], None], strategy: dict | None, driver: dict,
         keep: int) -> Path:
    """Write step `step`'s checkpoint under `root`: save_algorithm(path) writes RLlib's part,
    `strategy` the strategy's state (None: no strategy.pt), `driver` polytask.json."""
    final, tmp = root / f"step-{step:012d}", root / f".tmp-step-{step:012d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_algorithm(str((tmp / "algorithm").resolve()))
    if strategy is not None:
        torch.save(strategy, tmp / "strategy.pt")
    (tmp / "polytask.json").write_text(json.dumps(driver))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path) -> dict:
    """The newest checkpoint's driver counters, its folder (`path`: RLlib's part is path/algorithm)
    and the strategy's state (`strategy`; None when it has none). ValueError if there is no
    checkpoint or it is damaged."""
    found = sorted(p for p in root.glob("step-*") if (p / "polytask.json").is_file()) if root.is_dir() else []
    if not found:
        raise ValueError(f"no RLlib checkpoint in {root}")
    path = found[-1]
    try:
        state = json.loads((path / "polytask.json").read_text())
        strategy = torch.load(path / "strategy.pt", weights_only=True) if (path / "strategy.pt").is_file() else None
    except (ValueError, OSError, RuntimeError) as e:
        raise ValueError(f"corrupt checkpoint {path}: {type(e).__name__}") from None
    return {**state, "path": path, "strategy": strategy}
