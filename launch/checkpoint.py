"""Checkpoints: written atomically (temp file + rename), loaded with weights_only=True.

checkpoints/step-<N>.pt holds the learner, strategy, counters and RNG states at env step N (the
newest `keep` are kept). A rehearsing continual strategy also needs the replay of earlier tasks,
which no longer changes once their stage is over: it is written once per task, at the end of
its stage, to checkpoints/rehearsal/task-<t>.pt, instead of into every checkpoint."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from launch.errors import UserError

FORMAT_VERSION = 3  # 2: replay saved as filled rows per task; eval.policy. 3: balancers, reward statistics
_NAME = re.compile(r"^step-(\d+)\.pt$")


def path_for(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step-{step:012d}.pt"


def write_atomic(path: Path, state: dict) -> None:
    """torch.save `state` to `path` so that a crash never leaves a partial file under its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def read(path: Path) -> dict:
    """A file written by write_atomic, loaded with weights_only=True; UserError if it is damaged."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"missing {path}") from None
    except Exception as e:  # torch raises many types for a damaged file
        raise UserError(f"corrupt checkpoint {path}: {type(e).__name__}") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise UserError(f"corrupt checkpoint {path}: not a polytask checkpoint")
    if state["format_version"] != FORMAT_VERSION:
        raise UserError(f"incompatible checkpoint {path}: format version {state['format_version']}, "
                        f"this polytask reads version {FORMAT_VERSION}")
    return state


def save(ckpt_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write `state` for `step`; keep the newest `keep` checkpoints."""
    path = path_for(ckpt_dir, step)
    write_atomic(path, {"format_version": FORMAT_VERSION, "step": step, **state})
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_latest(ckpt_dir: Path) -> dict:
    """The newest checkpoint's state; UserError if there is none, or it is corrupt or incompatible."""
    found = list_checkpoints(ckpt_dir)
    if not found:
        raise UserError(f"no checkpoint in {ckpt_dir}")
    return read(found[-1])


def rehearsal_path(ckpt_dir: Path, task: int) -> Path:
    """Where a rehearsing strategy's kept replay of a finished task is written, once."""
    return ckpt_dir / "rehearsal" / f"task-{task:04d}.pt"


def to_device(tree, device: torch.device):
    """A checkpoint's nested dicts/lists of tensors, moved to `device`."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_device(v, device) for v in tree)
    return tree
