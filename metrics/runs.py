"""What the metrics read: one run's evaluation curves and training schedule, as plain arrays.

A `Run` is the performance matrix over time (task x evaluation step), the schedule that says
which tasks were trained in which step range, and the training episodes. Every metric in
`metrics/` is a pure function of `Run`s; `read_run(dir)` builds one from a run directory
(config.yaml, evals.jsonl, episodes.jsonl; learners.json's detected boundaries; plasticity.jsonl's diagnostics).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from metrics import evallog


class RunReadError(ValueError):
    """A run directory that cannot be read (missing, empty, malformed): one line naming it."""


@dataclass(frozen=True)
class Stage:
    """Tasks trained from env step `start` (inclusive) to `end` (exclusive)."""
    tasks: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Episodes:
    """Finished training episodes in logging order; `step` is the env step they were logged at."""
    step: np.ndarray       # [N]
    task: np.ndarray       # [N] task index
    success: np.ndarray    # [N] 0/1
    returns: np.ndarray    # [N]
    time: np.ndarray       # [N] wall-clock seconds (NaN if unknown)
    start: np.ndarray      # [N] the env step the episode started at (-1 if unknown)

    @staticmethod
    def empty() -> Episodes:
        return Episodes(*(np.empty(0, np.int64) for _ in range(2)), *(np.empty(0) for _ in range(3)),
                        np.empty(0, np.int64))


@dataclass
class Run:
    """success[e, t] / returns[e, t]: task t's evaluation at steps[e] (NaN: not evaluated)."""
    tasks: tuple[str, ...]
    steps: np.ndarray                  # [E] ascending env steps
    success: np.ndarray                # [E, T] fraction of goals solved
    returns: np.ndarray                # [E, T] mean episode return
    schedule: tuple[Stage, ...]
    episodes: Episodes = field(default_factory=Episodes.empty)
    eval_time: np.ndarray | None = None          # [E] wall-clock seconds of each evaluation
    seed: int = 0
    config: dict = field(default_factory=dict)   # the resolved config (empty for synthetic runs)
    name: str = ""                                # e.g. the run directory
    envs: tuple[str, ...] = ()                    # per task, the environment it runs (its log's "env"):
                                                  # CW20's "hammer-v3#2" runs "hammer-v3"; () = the task names
    detected: tuple[int, ...] | None = None       # hidden boundaries with a detector: the detected ones'
                                                  # env steps (learners.json); None: no detector
    diagnostics: tuple[dict, ...] = ()            # plasticity.jsonl's rows: {"step", "<network>/<measure>"}

    def values(self, measure: str = "success") -> np.ndarray:
        if measure not in ("success", "return"):
            raise ValueError(f"unknown performance measure {measure!r}; use success or return")
        return self.success if measure == "success" else self.returns

    def task_index(self, task: str) -> int:
        return self.tasks.index(task)

    def env_of(self, task: str) -> str:
        """The environment task runs (a repeated task's is its first occurrence's)."""
        return self.envs[self.task_index(task)] if self.envs else task

    def trained_tasks(self) -> set[str]:
        return {t for stage in self.schedule for t in stage.tasks}

    def training_window(self, task: str) -> tuple[int, int]:
        """[start, end) of the first stage that trains `task`."""
        for stage in self.schedule:
            if task in stage.tasks:
                return stage.start, stage.end
        raise ValueError(f"task {task} is never trained in this run's schedule")


def make_run(tasks, steps, success, schedule, returns=None, **kwargs) -> Run:
    """A Run from plain lists (tests, synthetic logs); schedule: [(tasks, start, end), ...]."""
    success = np.asarray(success, np.float64)
    returns = np.full_like(success, np.nan) if returns is None else np.asarray(returns, np.float64)
    stages = tuple(s if isinstance(s, Stage) else Stage(tuple(s[0]), int(s[1]), int(s[2]))
                   for s in schedule)
    return Run(tuple(tasks), np.asarray(steps, np.int64), success, returns, stages, **kwargs)


def schedule_from_config(config: dict, tasks: tuple[str, ...]) -> tuple[Stage, ...]:
    """The run's training schedule: the `schedule` section's stages if the config has one
    (continual runs), else one stage training every task for run.steps (multi-task runs)."""
    stages = config.get("schedule")
    if stages:
        return tuple(Stage(tuple(s["tasks"]), int(s["start"]), int(s["end"])) for s in stages)
    return (Stage(tasks, 0, int(config["run"]["steps"])),)


def _one_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def read_run(run_dir: Path | str) -> Run:
    """Load a run directory; any problem is a RunReadError naming the directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunReadError(f"run directory {run_dir} does not exist")
    config_path, evals_path = run_dir / "config.yaml", run_dir / "evals.jsonl"
    if not config_path.is_file():
        raise RunReadError(f"{run_dir} is not a polytask run directory (no config.yaml)")
    try:
        config = yaml.safe_load(config_path.read_text())
        seed = int(config["run"]["seed"])
        int(config["run"]["steps"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise RunReadError(f"{config_path} is malformed ({_one_line(e)})") from None
    try:
        rows = evallog.read(evals_path)
        if not rows:
            raise RunReadError(f"{run_dir} has no evaluations yet ({evals_path.name} is missing or empty)")
        by_index = {int(r["task_index"]): str(r["task"]) for r in rows}
        tasks = tuple(by_index[i] for i in sorted(by_index))
        env_of = {str(r["task"]): str(r.get("env", r["task"])) for r in rows}
        envs = tuple(env_of[t] for t in tasks)
        steps = np.array(sorted({int(r["step"]) for r in rows}), np.int64)
        success = np.full((len(steps), len(tasks)), np.nan)
        returns = np.full_like(success, np.nan)
        eval_time = np.full(len(steps), np.nan)
        row_of = {s: i for i, s in enumerate(steps)}
        for r in rows:
            success[row_of[int(r["step"])], tasks.index(r["task"])] = float(r["success"])
            returns[row_of[int(r["step"])], tasks.index(r["task"])] = float(r["return"])
            eval_time[row_of[int(r["step"])]] = float(r.get("time", np.nan))
    except (KeyError, TypeError, ValueError) as e:
        raise RunReadError(f"{evals_path} is malformed ({_one_line(e)})") from None
    episodes_path = run_dir / "episodes.jsonl"
    try:
        ep_rows = evallog.read(episodes_path)
        episodes = Episodes(np.array([int(r["step"]) for r in ep_rows], np.int64),
                            np.array([tasks.index(r["task"]) for r in ep_rows], np.int64),
                            np.array([float(r["success"]) for r in ep_rows]),
                            np.array([float(r["return"]) for r in ep_rows]),
                            np.array([float(r.get("time", np.nan)) for r in ep_rows]),
                            np.array([int(r.get("start_step", -1)) for r in ep_rows], np.int64))
    except (KeyError, TypeError, ValueError) as e:
        raise RunReadError(f"{episodes_path} is malformed ({_one_line(e)})") from None
    try:
        schedule = schedule_from_config(config, tasks)
    except (KeyError, TypeError, ValueError) as e:
        raise RunReadError(f"{config_path} has a malformed schedule ({_one_line(e)})") from None
    detected = None
    learners_path = run_dir / "learners.json"
    if learners_path.is_file():
        try:
            found = json.loads(learners_path.read_text()).get("detected_boundaries")
            detected = None if found is None else tuple(int(s) for s in found)
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
            raise RunReadError(f"{learners_path} is malformed ({_one_line(e)})") from None
    diagnostics = tuple(evallog.read(run_dir / "plasticity.jsonl"))
    if any(not isinstance(r, dict) or not isinstance(r.get("step"), int) for r in diagnostics):
        raise RunReadError(f"{run_dir / 'plasticity.jsonl'} is malformed (a row without an integer step)")
    return Run(tasks, steps, success, returns, schedule, episodes, eval_time, seed=seed, config=config,
               name=str(run_dir), envs=envs, detected=detected, diagnostics=diagnostics)
