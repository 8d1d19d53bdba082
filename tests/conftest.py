import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "launch" / "train.py"


@pytest.fixture(scope="session", autouse=True)
def goal_cache_dir(tmp_path_factory):
    """Keep the Meta-World goal cache inside the test's temp dir, shared by the whole session."""
    path = tmp_path_factory.mktemp("goal-cache")
    old = os.environ.get("POLYTASK_CACHE_DIR")
    os.environ["POLYTASK_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("POLYTASK_CACHE_DIR", None)
    else:
        os.environ["POLYTASK_CACHE_DIR"] = old


@pytest.fixture(scope="session", autouse=True)
def private_cache_and_config_dirs(tmp_path_factory):
    """XDG_CACHE_HOME and XDG_CONFIG_HOME inside the session's temp dir, for this process and every
    process it starts: Chromium's profiles, Mesa's shader cache (OSMesa renders the videos) and
    matplotlib's font cache are written there, not under HOME."""
    saved = {key: os.environ.get(key) for key in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    for key in saved:
        os.environ[key] = str(tmp_path_factory.mktemp(key.lower()))
    yield
    for key, old in saved.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def env_with_tmpdir(tmp: Path) -> dict:
    """This process's environment with TMPDIR set to `tmp`: torchrun's agent writes its log
    directories (torchelastic_*) under TMPDIR, which must be the test's own."""
    return {**os.environ, "TMPDIR": str(tmp)}


def env_with_home(home: Path, tmp: Path, **extra: str) -> dict:
    """This process's environment with HOME and TMPDIR of their own (for tests that check nothing is
    written to HOME) and without the session's XDG directories, so that HOME's defaults apply."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    return {**env, "HOME": str(home), "TMPDIR": str(tmp), **extra}


def run_train(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """Run launch/train.py as a user would, in a subprocess."""
    return subprocess.run([sys.executable, str(TRAIN), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy(), **kwargs)


def train_in_process(*args) -> subprocess.CompletedProcess:
    """launch/train.py's main in this process (no interpreter start-up): its exit code and output,
    as run_train returns them. For runs that need no process of their own."""
    import contextlib
    import io

    from launch.train import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _train_job(job):
    name, args = job
    return name, train_in_process(*args)


def train_many(jobs: dict, workers: int = 2) -> dict[str, subprocess.CompletedProcess]:
    """Several train.py runs, `workers` at a time, each in a pool worker that starts Python (and
    imports torch) once for all the runs it trains. {name: args} -> {name: result}."""
    from multiprocessing import get_context
    with get_context("spawn").Pool(workers) as pool:
        return dict(pool.imap_unordered(_train_job, list(jobs.items())))


def start_train(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())


class Lines:
    """Collects a process's stdout lines in the background."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True)
        self.thread.start()

    def wait_for(self, predicate, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [line for line in list(self.lines) if predicate(line)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"timed out; output so far: {self.lines[-10:]}")


def scalars(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one TensorBoard tag, after TensorBoard's own purge of orphaned events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def checkpoint_steps(run: Path) -> list[int]:
    from launch import checkpoint
    return [int(p.stem.split("-")[1]) for p in checkpoint.list_checkpoints(run / "checkpoints")]


def kill_after_checkpoint(proc: subprocess.Popen, run: Path, step: int, timeout: float = 300) -> None:
    """SIGKILL the training process as soon as its checkpoint at `step` exists (polled every
    20 ms: far less than one checkpoint interval of a test run)."""
    import signal
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        if step in checkpoint_steps(run):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before its checkpoint at {step}: "
                                 f"{proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint at step {step} within {timeout} s")
