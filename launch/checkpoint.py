"""Checkpoints: written atomically (temp file + rename), loaded with weights_only=True.

checkpoints/step-<N>.pt holds the learner, strategy, counters and RNG states at env step N (the
newest `keep` are kept). A rehearsing continual strategy also needs the replay of earlier tasks,
which no longer changes once their stage is over: it is written once per task, at the end of
its stage, to checkpoints/rehearsal/task-<t>.pt, instead of into every checkpoint.

What a trainer's checkpoint holds (`Trainer.state_dict()`, laid out by `pack`): the learner
(networks, optimizers, temperatures, balancers), the continual strategy and auxiliary tasks, and
per learner rank: its env steps, RNG states, replay reward statistics, its balancers' state (a
loss weighting learns the weights of the rank's own tasks only: uncertainty weighting's s_i live
on the task's rank) and, when ranks' optimizer states differ (local SGD without averaged
moments), its own optimizer state. Everything logged at steps <= N is logged before it is
written (`save_run`); a preempted run also keeps the evaluations it had asked for but not
received, and its resume asks for them again. This module knows the files and their layout, not
the trainer (launch/loop/trainer.py)."""

from __future__ import annotations

import contextlib
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


# replay.save_in_checkpoint; hidden boundaries' detector; plasticity remedies and diagnostics (agents/plasticity/)
OPTIONAL_SHARED = ("replay", "detector", "remedies", "diagnostics")


def pack(shared: dict, ranks: list[dict]) -> dict:
    """A trainer checkpoint's layout from what every rank holds alike (`shared`: learner, strategy,
    auxiliary, replay if it is kept, a boundary detector's state, the plasticity remedies' and
    diagnostics' states; rank 0's) and each rank's own part,
    in rank order (steps, rng, steps_by_actor, reward_stats, optimizers: None where ranks share them,
    balancers)."""
    own = {key: [part[key] for part in ranks] for key in ranks[0]}
    state = {"learner": shared["learner"], "rank_steps": own["steps"], "rng": own["rng"],
             "steps_by_actor": {str(k): v for counts in own["steps_by_actor"] for k, v in counts.items()},
             "reward_stats": own["reward_stats"], "strategy": shared["strategy"], "auxiliary": shared["auxiliary"],
             "pending_evaluations": []}  # save_run's
    if own["optimizers"][0] is not None:
        state["rank_optimizers"] = own["optimizers"]
    if len(ranks) > 1:
        state["rank_balancers"] = own["balancers"]
    for key in OPTIONAL_SHARED:
        if key in shared:
            state[key] = shared[key]
    return state


def unpack(state: dict, rank: int, world: int) -> dict:
    """What rank `rank` of `world` takes from a checkpoint `pack` laid out: the shared parts, its own
    (optimizers, balancers: None where the checkpoint keeps none per rank), the global env step
    and every actor's env steps. UserError if another number of ranks wrote it."""
    if len(state["rank_steps"]) != world:
        raise UserError(f"checkpoint was written by {len(state['rank_steps'])} learner rank(s), this run has {world}")
    shared = {key: state[key] for key in ("learner", "strategy", "auxiliary", *OPTIONAL_SHARED) if key in state}
    return {**shared, "step": int(state["step"]), "steps": int(state["rank_steps"][rank]), "rng": state["rng"][rank],
            "steps_by_actor": {int(k): v for k, v in state["steps_by_actor"].items()},
            "reward_stats": state["reward_stats"][rank],
            "optimizers": state["rank_optimizers"][rank] if "rank_optimizers" in state else None,
            "balancers": state["rank_balancers"][rank] if "rank_balancers" in state else None}


def save_run(ckpt_dir: Path, step: int, state: dict, keep: int, evaluator, runlog, preempted: bool) -> Path:
    """A run's checkpoint at env step `step` (rank 0; state: Trainer.state_dict()), holding
    everything logged at steps <= step: the evaluations that came back are logged first (a normal
    checkpoint waits for the pending ones; a preempted one records them in the state instead, to
    be asked for again on resume: an evaluation may take minutes, a grace period is ~30 s), and
    the run log (metrics/runlog.py) is flushed."""
    for rows in evaluator.results() if preempted else evaluator.wait():
        runlog.evaluation(rows)
    state["pending_evaluations"] = [list(r) for r in evaluator.unfinished()] if preempted else []
    runlog.flush()
    return save(ckpt_dir, step, state, keep)


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def last_good(ckpt_dir: Path) -> str:
    """The newest checkpoint's file name, for a diverged run's message."""
    found = list_checkpoints(ckpt_dir)
    return found[-1].name if found else "none written yet"


def load_latest(ckpt_dir: Path) -> dict:
    """The newest checkpoint's state; UserError if there is none, or it is corrupt or incompatible."""
    found = list_checkpoints(ckpt_dir)
    if not found:
        raise UserError(f"no checkpoint in {ckpt_dir}")
    return read(found[-1])


def load_latest_on_every_rank(ckpt_dir: Path, dist) -> dict:
    """The newest checkpoint's state, read on rank 0 and sent to every rank (dist:
    launch/distributed/ranks.py); the same UserError on every rank if there is none or it is
    corrupt or incompatible."""
    return dist.from_main(lambda: load_latest(ckpt_dir))


@contextlib.contextmanager
def loading_into_this_run():
    """Loading a checkpoint's state into this run's parts: what says that it does not fit (a
    missing key, a tensor of another shape, another number of tasks) becomes one UserError line."""
    try:
        yield
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint does not match this run's config: {first}") from None


def rehearsal_path(ckpt_dir: Path, task: int) -> Path:
    """Where a rehearsing strategy's kept replay of a finished task is written, once."""
    return ckpt_dir / "rehearsal" / f"task-{task:04d}.pt"


def save_rehearsal(ckpt_dir: Path, task: int, state: dict) -> None:
    write_atomic(rehearsal_path(ckpt_dir, task), {"format_version": FORMAT_VERSION, **state})


def load_rehearsal(ckpt_dir: Path, task: int) -> dict:
    return read(rehearsal_path(ckpt_dir, task))


def rng_state(numpy_rng) -> dict:
    """This process's torch (and CUDA) RNG states and `numpy_rng`'s, as a checkpoint keeps them."""
    state = {"torch": torch.get_rng_state(), "numpy": numpy_rng.bit_generator.state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, numpy_rng) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_rng.bit_generator.state = state["numpy"]


def to_device(tree, device: torch.device):
    """A checkpoint's nested dicts/lists of tensors, moved to `device`."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_device(v, device) for v in tree)
    return tree
