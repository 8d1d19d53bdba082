"""pointmass: a tiny built-in continuous-control suite in pure numpy, for fast learning tests.

A point in the square [-1, 1]^2 moves by 0.1 * action each step (action Box(-1, 1, (2,))).
Each task is "reach the target in one direction" (east, north-east, ...). The target is NOT
in the observation (only the position is), so the task id is the only thing that tells tasks
apart, and tasks pull the same state towards opposite actions: training on `reach-n` hurts
`reach-s`, which is what the continual-learning tests need. `env.target_visible=true` appends
the target to the observation ([x, y, target_x, target_y]): a memoryless agent without a task id
can then tell the tasks apart (the task-free continual methods' setting). Each task has fixed goals like
Meta-World: goal i fixes the start position and a small jitter of the target.
Reward is the negative distance to the target; success is being within 0.1 of it.

Rotated tasks (the plasticity sequences): `reach-e@30` is reach-e with the action rotated by 30
degrees (counter-clockwise) before it moves the point. The goals are reach-e's, so only the
controller's mapping changes from one rotation to the next: a learner that gets slower at each new
rotation has lost plasticity, since there is nothing to forget that a new rotation could reuse.
ROT20 and ROT50 are 20 and 50 distinct rotations of reach-e, drawn once (fixed for every seed).

PM2R (reach-e, then reach-n@180) is the continual sequence for agents that see the target: with
env.target_visible the observation tells its tasks apart, yet one policy cannot carry over (on PM2,
"go to the target" solves both tasks, so nothing is forgotten). reach-n@180 reverses the controls:
its policy steers away from the target it sees, and trained on it alone a network forgets reach-e.
"""

from __future__ import annotations

import math
import re

import gymnasium as gym
import numpy as np

from envs.base import Suite, TaskSpec, base_task_name, select_tasks

DIRECTIONS = ["e", "ne", "n", "nw", "w", "sw", "s", "se"]
ALL_TASKS = [f"reach-{d}" for d in DIRECTIONS]
PRESETS = {"PM4": ["reach-e", "reach-n", "reach-w", "reach-s"], "PM8": ALL_TASKS}
# Continual sequences of conflicting tasks (each pulls the start region the opposite way).
SEQUENCES = {"PM2": ["reach-e", "reach-w"], "PM3": ["reach-e", "reach-w", "reach-n"],
             # target visible, still conflicting: reach-n with the controls reversed (the module docstring)
             "PM2R": ["reach-e", "reach-n@180"]}
ROTATED = re.compile(r"(reach-[a-z]+)@(-?\d+(?:\.\d+)?)")  # reach-e@30: reach-e, the action turned 30 degrees


def rotations(count: int) -> list[str]:
    """`count` distinct whole-degree rotations of reach-e in [-180, 180), drawn once from a fixed stream."""
    angles = np.random.default_rng(7).choice(np.arange(-180, 180), size=count, replace=False)
    return [f"reach-e@{int(a)}" for a in angles]


SEQUENCES.update({"ROT20": rotations(20), "ROT50": rotations(50)})


def split_rotation(name: str) -> tuple[str, float]:
    """"reach-e@30" -> ("reach-e", 30.0); "reach-e" -> ("reach-e", 0.0)."""
    match = ROTATED.fullmatch(name)
    return (match.group(1), float(match.group(2))) if match else (name, 0.0)
TARGET_RADIUS = 0.7
SUCCESS_RADIUS = 0.1
EPISODE_LENGTH = 30
NUM_GOALS = 50


def goal_table(task_name: str, num_goals: int = NUM_GOALS) -> np.ndarray:
    """Fixed goals of a task: rows (start_x, start_y, target_x, target_y). Same for every seed."""
    angle = math.pi / 4 * DIRECTIONS.index(task_name.removeprefix("reach-"))
    rng = np.random.default_rng(1000 + ALL_TASKS.index(task_name))
    starts = rng.uniform(-0.2, 0.2, size=(num_goals, 2))
    centre = TARGET_RADIUS * np.array([math.cos(angle), math.sin(angle)])
    targets = centre + rng.uniform(-0.05, 0.05, size=(num_goals, 2))
    return np.concatenate([starts, targets], axis=1).astype(np.float32)


class PointMassEnv(gym.Env):
    metadata = {"render_modes": [], "render_fps": 15}  # 30 steps: a 2 s clip

    def __init__(self, task_name: str, seed: int | None = None, target_visible: bool = False):
        task_name, degrees = split_rotation(task_name)
        self.goals, self.target_visible = goal_table(task_name), target_visible
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        self.rotation = np.array([[c, -s], [s, c]]) if degrees else None  # turns the action
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (4 if target_visible else 2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.np_random = np.random.default_rng(seed)
        self.action_space.seed(seed)
        self._pos = np.zeros(2, np.float32)
        self._target = np.zeros(2, np.float32)
        self._t = 0
        self._trail = [self._pos]  # positions since the episode began (render_frame draws them)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        goal = (options or {}).get("goal")
        if goal is None:
            goal = int(self.np_random.integers(len(self.goals)))
        self._pos = self.goals[goal, :2].copy()
        self._target = self.goals[goal, 2:]
        self._t = 0
        self._trail = [self._pos]
        return self._observation(), {"goal": goal}

    def _observation(self) -> np.ndarray:
        return np.concatenate([self._pos, self._target]) if self.target_visible else self._pos.copy()

    def step(self, action):
        move = np.clip(action, -1.0, 1.0)
        if self.rotation is not None:
            move = self.rotation @ move
        self._pos = np.clip(self._pos + 0.1 * move, -1.0, 1.0).astype(np.float32)
        self._t += 1
        self._trail.append(self._pos)
        distance = float(np.linalg.norm(self._pos - self._target))
        info = {"success": float(distance < SUCCESS_RADIUS)}
        return self._observation(), -distance, False, self._t >= EPISODE_LENGTH, info

    def render_frame(self, width: int, height: int) -> np.ndarray:
        """The arena now, drawn in numpy (envs/rendering.py): no GL needed."""
        from envs.rendering import pointmass_frame
        return pointmass_frame(np.array(self._trail), self._target, SUCCESS_RADIUS, width, height)


def build(tasks: str, seed: int, goal_observable: bool = True, target_visible: bool = False) -> Suite:
    """goal_observable: unused. Without target_visible the observation never holds the target (an agent
    tells its task from the task input or, without it, from the rewards it sees)."""
    requested = [base_task_name(n.strip()) for n in (tasks or "").split(",")]
    rotated = [n for n in requested if ROTATED.fullmatch(n) and split_rotation(n)[0] in ALL_TASKS]
    names = select_tasks(tasks, PRESETS, ALL_TASKS + rotated, default="PM4")
    return Suite(
        name="pointmass",
        tasks=tuple(TaskSpec(i, n) for i, n in enumerate(names)),
        obs_dim=4 if target_visible else 2,
        action_dim=2,
        episode_length=EPISODE_LENGTH,
        num_goals=NUM_GOALS,
        make_env=lambda task, env_seed: PointMassEnv(task.env_name, env_seed, target_visible),
    )
