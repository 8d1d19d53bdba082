"""One trial: a Ray Tune function trainable that trains one ordinary run directory with
launch/train.py, in a process of its own, and reports its progress to Tune.

- A finished run (learners.json: written when a run ends) is left exactly as it is.
- A run with a checkpoint continues from it (`train.py --resume`): Tune's retries after a failure
  and a resumed study both land here, so a trial never trains a step twice.
- A run started but not yet checkpointed starts again in an emptied directory.
- The trial holds a lock on its run (an flock, shared with its train.py process): a train.py left
  over from a killed study (it gets SIGTERM when its trial's worker dies, and checkpoints) is
  waited for, so two processes never write one run.
- train.py's exit code 2 (a setting it refuses) is final: the trial ends as refused, not retried.
  Any other failure raises, and Tune retries it up to the study's `retries`.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

TRAIN = Path(__file__).resolve().parent.parent / "train.py"
POLL_S = 2.0  # how often a running trial reports its progress


class TrialFailed(RuntimeError):
    pass


def finished(run_dir: Path) -> bool:
    return (run_dir / "learners.json").is_file()


def checkpointed(run_dir: Path) -> bool:
    """Has the run a checkpoint to continue from (ours, or the RLlib engine's)?"""
    from launch.checkpoint import list_checkpoints
    return bool(list_checkpoints(run_dir / "checkpoints")) or any((run_dir / "rllib_checkpoints").glob("step-*"))


def trained_steps(run_dir: Path) -> int:
    """The env step of the run's latest evaluation (0 before the first): its progress."""
    path = run_dir / "evals.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


# looked up here, in the parent: a symbol lookup after fork in a threaded Ray worker can deadlock
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl
PR_SET_PDEATHSIG = 1


def _term_with(parent: int):
    """For the train.py child: SIGTERM when the thread that started it dies (a killed Ray worker),
    so that the run checkpoints and stops rather than training on unwatched; a child whose parent
    died before it could ask for that exits at once."""
    def preexec() -> None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(143)
    return preexec


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def train_trial(config: dict) -> None:
    """The Tune trainable: config = {"trial": Trial.record(), "study_dir": str, "ranks": learner ranks
    (more than 1: torchrun --standalone starts them)}."""
    from ray import tune

    trial, study_dir = config["trial"], Path(config["study_dir"])
    run_dir = study_dir / trial["run_dir"]
    log_path = study_dir / "logs" / f"{trial['name']}.log"
    where = _where()
    lock_path = study_dir / "locks" / f"{trial['name']}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a train.py of a killed session may still be checkpointing
        if finished(run_dir):
            tune.report({"status": "done", "fraction": 1.0, "step": trial["steps"], **where})
            return
        if checkpointed(run_dir):
            argv = ["--resume", str(run_dir)]
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            argv = [*trial["argv"], "--run-dir", str(run_dir)]
            if trial["reference"]:
                argv += ["--config", str(study_dir / "references" / f"{trial['name']}.yaml")]
        with open(log_path, "a") as log:
            log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} train.py {' '.join(argv)}\n")
            log.flush()
            launcher = [sys.executable, str(TRAIN)] if config["ranks"] == 1 else [
                sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={config['ranks']}",
                str(TRAIN)]
            proc = subprocess.Popen([*launcher, *argv], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, pass_fds=(lock.fileno(),), start_new_session=True,
                                    preexec_fn=_term_with(os.getpid()))
            where["train_pid"] = proc.pid  # (Tune fills "pid" itself: the worker's)
            while proc.poll() is None:
                step = trained_steps(run_dir)
                tune.report({"status": "running", "step": step, "fraction": min(1.0, step / trial["steps"]), **where})
                try:
                    proc.wait(POLL_S)
                except subprocess.TimeoutExpired:
                    pass
    code, last = proc.returncode, _last_line(log_path)
    if code == 2:  # train.py refused a setting: the same again would be refused again
        tune.report({"status": "refused", "step": 0, "fraction": 1.0, "message": last, **where})
        return
    if code != 0:
        raise TrialFailed(f"train.py exited with code {code}: {last}")
    tune.report({"status": "done", "step": trial["steps"], "fraction": 1.0, **where})


def _where() -> dict:
    """The Ray node this trial runs on: a cluster's trials are placed on several."""
    import ray
    return {"node_id": ray.get_runtime_context().get_node_id()}
