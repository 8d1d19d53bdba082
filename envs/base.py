"""What every suite provides: its tasks, a way to make an env for a task, and the eval protocol.

Every env is a `gymnasium.Env` whose `step` puts a per-step `info["success"]`, and whose
`reset(seed=..., options={"goal": i})` starts an episode on fixed goal `i` (a random goal
when `options` has none). The official evaluation protocol (Meta-World's, used for every
suite) runs one episode per fixed goal and counts it a success if `info["success"]` was
ever true during the episode.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym

REPEAT_MARK = "#"  # "hammer-v3#2": the second, distinct occurrence of hammer-v3 (CW20 style)


def base_task_name(name: str) -> str:
    """The environment a task name stands for: "hammer-v3#2" -> "hammer-v3"."""
    return name.split(REPEAT_MARK, 1)[0]


@dataclass(frozen=True)
class TaskSpec:
    index: int  # the task id the agent sees: position of the task in the suite
    name: str   # unique in the suite; "x#k" is a repeat of task x (same env, its own id)

    @property
    def env_name(self) -> str:
        return base_task_name(self.name)


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[TaskSpec, ...]
    obs_dim: int
    action_dim: int
    episode_length: int
    num_goals: int  # fixed goals per task; evaluation runs one episode on each
    make_env: Callable[[TaskSpec, int], gym.Env]  # (task, seed) -> env

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]


def select_tasks(requested: str, presets: dict[str, list[str]], all_names: list[str],
                 default: str) -> list[str]:
    """Resolve `--tasks`: a preset name (e.g. MT10), or a comma list of task names (a name may
    carry a repeat mark, "x#2": a second task on x's env)."""
    requested = (requested or default).strip()
    if requested in presets:
        return list(presets[requested])
    names = [n.strip() for n in requested.split(",") if n.strip()]
    unknown = [n for n in names if base_task_name(n) not in all_names
               or (REPEAT_MARK in n and not re.fullmatch(r"[2-9]|[1-9]\d+", n.split(REPEAT_MARK, 1)[1]))]
    if unknown or not names:
        raise ValueError(
            f"unknown task {', '.join(unknown) or repr(requested)}; valid: presets "
            f"{', '.join(presets)} or a comma list of {', '.join(all_names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"task list {requested!r} names a task twice")
    return names
