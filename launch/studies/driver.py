"""Run a study's unfinished trials on Ray Tune, and log what happens to each.

Tune schedules the trials (per-trial resources, on a private local Ray or a cluster) and retries
a failed one up to the study's `retries` (FailureConfig). The run directories are the study's
truth, not Tune's experiment state: each session of a study (a first start, then every
--resume) is one Tune experiment over the trials whose runs are not finished yet, under
STUDY_DIR/tune/session-N. Tune's experiment state is synced every few seconds, so a SIGKILLed
driver can lose its last transitions; a finished run cannot be lost, and launch/studies/trial.py
continues an unfinished one from its own checkpoint.

trials.jsonl: one row per event {time, session, trial, status, ...}; status is pending (the
study was created), running (attempt N, on node X), retrying (its run failed: error), done,
failed (retries used up: error) or refused (train.py refused a setting: exit code 2).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from launch.studies.spec import Study
from launch.studies.trial import _last_line, finished, trained_steps
from launch.telemetry import format_duration

PRINT_EVERY_S = 30.0
TERMINAL = ("done", "failed", "refused")


def log_rows(study_dir: Path, rows: list[dict]) -> None:
    with open(study_dir / "trials.jsonl", "a") as f:
        for row in rows:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **row}) + "\n")


def _callback_base():
    from ray.tune import Callback
    return Callback


class StudyProgress(_callback_base()):
    """Tune callback: trials.jsonl rows, and a progress line (trials pending / running / done /
    failed, the share of env steps trained, an ETA from this session's rate) on every change and
    every PRINT_EVERY_S."""

    def __init__(self, study: Study, study_dir: Path, session: int, stream=None):
        self.study_dir, self.session, self.stream = study_dir, session, stream or sys.stdout
        self.steps = {t.name: t.steps for t in study.trials}
        self.state = {t.name: "done" if finished(study_dir / t.run_dir) else "pending" for t in study.trials}
        # what each run has trained (a resumed run: up to its latest evaluation), as a fraction
        self.fraction = {t.name: 1.0 if self.state[t.name] == "done" else
                         min(1.0, trained_steps(study_dir / t.run_dir) / t.steps) for t in study.trials}
        self.node = {}
        self.started, self.start_fraction, self.printed = time.monotonic(), dict(self.fraction), 0.0

    def share(self) -> float:
        """Env steps trained over the total of the trials that can still finish (not failed or refused)."""
        live = [n for n, s in self.state.items() if s not in ("failed", "refused")]
        return sum(self.fraction[n] * self.steps[n] for n in live) / max(sum(self.steps[n] for n in live), 1)

    def line(self) -> str:
        counts = {s: sum(v == s for v in self.state.values()) for s in ("pending", "running", "done")}
        counts["failed"] = sum(v in ("failed", "refused") for v in self.state.values())
        share, elapsed = self.share(), time.monotonic() - self.started
        trained = sum((self.fraction[n] - self.start_fraction[n]) * s for n, s in self.steps.items())
        rate = trained / elapsed if elapsed > 0 else 0.0  # env steps per second, this session
        left = sum((1 - self.fraction[n]) * s for n, s in self.steps.items() if self.state[n] in ("pending", "running"))
        eta = format_duration(left / rate) if rate > 0 and counts["running"] else "unknown"
        return (f"study: {len(self.state)} trials | {counts['pending']} pending, {counts['running']} running, "
                f"{counts['done']} done, {counts['failed']} failed | {share:.0%} of env steps | "
                f"{format_duration(elapsed)} elapsed, ETA {eta if counts['pending'] + counts['running'] else '0m00s'}")

    def print(self) -> None:
        self.printed = time.monotonic()
        print(self.line(), file=self.stream, flush=True)

    def _event(self, trial, status: str, **extra) -> None:
        name = trial.config["trial"]["name"]
        self.state[name] = "running" if status == "retrying" else status
        log_rows(self.study_dir, [{"session": self.session, "trial": name, "status": status, **extra}])
        self.print()

    def _error(self, trial) -> str:
        return _last_line(self.study_dir / "logs" / f"{trial.config['trial']['name']}.log")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._event(trial, "running", attempt=trial.num_failures + 1)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name = trial.config["trial"]["name"]
        if result.get("status") != "refused":  # a refused run trained nothing
            self.fraction[name] = result.get("fraction", self.fraction[name])
        if "train_pid" in result and self.node.get(name) != result["train_pid"]:  # a new attempt: where
            self.node[name] = result["train_pid"]
            log_rows(self.study_dir, [{"session": self.session, "trial": name, "status": "placed",
                                       "node_id": result.get("node_id"), "pid": result["train_pid"]}])
        if result.get("status") in ("done", "refused"):
            self.state[name] = result["status"]
            extra = {"error": result.get("message", "")} if result["status"] == "refused" else {}
            log_rows(self.study_dir, [{"session": self.session, "trial": name, "status": result["status"], **extra}])
            self.print()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._event(trial, "retrying", error=self._error(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._event(trial, "failed", error=self._error(trial))

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.printed >= PRINT_EVERY_S:
            self.print()


def run(study: Study, study_dir: Path, ray_address: str = "") -> StudyProgress:
    """Train the study's unfinished trials; returns the progress record (state per trial)."""
    session = 1 + sum(1 for p in (study_dir / "tune").glob("session-*"))
    todo = [t for t in study.trials if not finished(study_dir / t.run_dir)]
    progress = StudyProgress(study, study_dir, session)
    print(f"study {study.name}: {len(todo)} of {len(study.trials)} trials to train "
          f"({study.resources['cpu']} CPU, {study.resources['gpu']} GPU each); session {session}; {study_dir}",
          flush=True)
    if not todo:
        return progress
    # Tune's own console tables off: our line and trials.jsonl say it (its result files stay, in tune/)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray.tune", "ray.train"):  # its "resume with Tuner.restore" advice is not ours: --resume
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    import ray
    from ray import tune

    from launch.actors.ray_pool import init_ray
    from launch.studies.trial import train_trial
    temp = tempfile.mkdtemp(prefix="polytask-study-")  # Ray's session files: under $TMPDIR
    started_ray, old_term = not ray.is_initialized(), signal.getsignal(signal.SIGTERM)
    if not ray_address:  # a private local Ray, even where RAY_ADDRESS names a cluster (--ray-address joins one)
        os.environ.pop("RAY_ADDRESS", None)
    try:
        init_ray(ray_address, 1, temp)
        # after Ray's own handler: SIGTERM stops the trials as Ctrl-C does (their runs checkpoint)
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        name_of = lambda t: t.config["trial"]["name"]  # noqa: E731
        tuner = tune.Tuner(
            tune.with_resources(train_trial, {"cpu": study.resources["cpu"], "gpu": study.resources["gpu"]}),
            param_space={"trial": tune.grid_search([t.record() for t in todo]), "study_dir": str(study_dir),
                         "ranks": study.ranks},
            tune_config=tune.TuneConfig(max_concurrent_trials=study.max_concurrent, trial_name_creator=name_of,
                                        trial_dirname_creator=name_of),
            run_config=tune.RunConfig(name=f"session-{session}", storage_path=str(study_dir / "tune"), verbose=0,
                                      callbacks=[progress],
                                      failure_config=tune.FailureConfig(max_failures=study.retries)))
        tuner.fit()
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if started_ray and ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    progress.print()
    return progress
