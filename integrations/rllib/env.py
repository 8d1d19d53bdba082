"""polytask suites as RLlib environments.

RLlib's default encoders reject Dict observations (ray#44780, #46631), so an env's observation is
one flat Box: the suite's observation with the task's one-hot appended ([obs, one_hot(task)]).
`info` carries "task" (its index), "task_name" and "success" at every step, and at an episode's
last step "episode": (task, success ever, return, length), since an RLlib callback sees only the
last chunk of an episode that spans several sampling calls.

Which env steps which task: RLlib builds, in every env runner, one vector env of
`num_envs_per_env_runner` sub-envs; each sub-env works out its global slot g = (runner - 1) * n + i among
the N = runners * n slots. With T tasks in the current stage, slot g steps task g mod T if N >= T,
else tasks g, g + N, g + 2N, ... in turn, one episode each: every task gets an equal share, as our
actors give them. Seeds: slot g's env gets seed_for(run seed, "actor", 1000 + g) (agents/seeding).

Continual runs: `set_stage(tasks)` (called through the env runners with `env.call`, since
`foreach_env` is broken on the new stack, ray#53248) changes the slot's tasks; the driver then
forces every env runner to reset its envs, so no step of an earlier stage's task follows the
boundary (the unfinished episodes are dropped).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from agents import seeding
from envs import make_suite

ENV_NAME = "polytask"  # the name registered with ray.tune.register_env


def slot_tasks(slot: int, slots: int, tasks: list[int]) -> list[int]:
    """The tasks env slot `slot` of `slots` steps, in turn (see the module docstring)."""
    if slots >= len(tasks):
        return [tasks[slot % len(tasks)]]
    return tasks[slot::slots]


class TaskOneHotEnv(gym.Env):
    """One env slot: steps its tasks in turn, one episode each; observation [obs, one_hot(task)]."""

    metadata = {"render_modes": []}

    def __init__(self, suite_name: str, task_list: str, seed: int, slot: int, slots: int, stage_tasks: list[int],
                 goal_observable: bool = True, target_visible: bool = False):
        self.suite = make_suite(suite_name, task_list, seed, goal_observable, target_visible)
        self.num_tasks = len(self.suite.tasks)
        self.slot, self.slots, self.seed = slot, slots, seeding.seed_for(seed, "actor", 1000 + slot)
        self.envs: dict[int, gym.Env] = {}  # built on first use: a slot touches only its own tasks
        low = np.concatenate([np.full(self.suite.obs_dim, -np.inf), np.zeros(self.num_tasks)]).astype(np.float32)
        high = np.concatenate([np.full(self.suite.obs_dim, np.inf), np.ones(self.num_tasks)]).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.suite.action_dim,), np.float32)
        self.episodes = 0
        self.set_stage(stage_tasks)
        self.task = self.tasks[0]

    def set_stage(self, stage_tasks: list[int]) -> None:
        self.tasks = slot_tasks(self.slot, self.slots, list(stage_tasks))

    def _env(self, task: int) -> gym.Env:
        if task not in self.envs:
            self.envs[task] = self.suite.make_env(self.suite.tasks[task], self.seed + task)
        return self.envs[task]

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        one_hot = np.zeros(self.num_tasks, np.float32)
        one_hot[self.task] = 1.0
        return np.concatenate([obs.astype(np.float32), one_hot])

    def _info(self, info: dict) -> dict:
        return {**info, "task": self.task, "task_name": self.suite.tasks[self.task].name,
                "success": float(info.get("success", 0.0))}

    def reset(self, *, seed=None, options=None):
        self.task = self.tasks[self.episodes % len(self.tasks)]
        self.episodes += 1
        obs, info = self._env(self.task).reset(seed=None if seed is None else seed + self.task, options=options)
        self.ep_return, self.ep_success, self.ep_length = 0.0, False, 0
        return self._obs(obs), self._info(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self._env(self.task).step(np.asarray(action, np.float32))
        info = self._info(info)
        self.ep_return += float(reward)
        self.ep_success |= info["success"] > 0
        self.ep_length += 1
        if terminated or truncated:
            info["episode"] = (self.task, float(self.ep_success), self.ep_return, self.ep_length)
        return self._obs(obs), float(reward), terminated, truncated, info

    def close(self):
        for env in self.envs.values():
            env.close()


_made: dict[int, int] = {}  # env runner index -> sub-envs built in this process so far


def make_env(ctx) -> TaskOneHotEnv:
    """RLlib's env creator. ctx: the EnvContext (env_config plus worker_index, num_workers).
    gymnasium's sync vector env builds a runner's sub-envs in order, once per `make_env`, so the
    count of envs built so far, modulo the envs per runner, is the sub-env's index. (Its
    vector-entry-point mode would hand us the index, but RLlib drops worker_index on that path.)"""
    n = int(ctx["envs_per_runner"])
    runner, runners = max(ctx.worker_index, 1), max(ctx.num_workers, 1)
    index = _made.get(runner, 0) % n
    _made[runner] = _made.get(runner, 0) + 1
    return TaskOneHotEnv(ctx["suite"], ctx["tasks"], int(ctx["seed"]), slot=(runner - 1) * n + index,
                         slots=runners * n, stage_tasks=list(ctx["stage_tasks"]),
                         goal_observable=bool(ctx["goal_observable"]),
                         target_visible=bool(ctx.get("target_visible", False)))


def register() -> None:
    """Register the env creator (once per algorithm built in this process)."""
    from ray.tune.registry import register_env

    _made.clear()  # a new algorithm: its driver-side env runner counts its sub-envs afresh
    register_env(ENV_NAME, make_env)
