"""A pool of envs over several tasks, stepped in lockstep so that policy inference is batched."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass
class Episode:
    task: int
    ret: float
    success: bool  # info["success"] was true at some step
    start: int = 0  # the clock's reading when it began (the actor's: the run's env step, estimated)


@dataclass
class StepResult:
    obs: np.ndarray         # observation the actions were taken in
    next_obs: np.ndarray    # observation after the action (before any auto-reset): what replay stores
    reward: np.ndarray
    terminated: np.ndarray  # true termination only; a time-limit cut is not (we bootstrap through it)
    finished: list[Episode]
    first: np.ndarray       # obs is its episode's first observation (recurrent agents reset their memory)


class EnvPool:
    def __init__(self, envs: list[gym.Env], task_ids: list[int], clock: Callable[[], int] = lambda: 0):
        """clock(): the time stamp of an episode's start (Episode.start)."""
        self.envs, self.task_ids, self.clock = envs, np.asarray(task_ids, np.int64), clock
        n = len(envs)
        self.started = np.zeros(n, np.int64)  # the clock at each env's episode's first step
        self.obs = np.stack([env.reset()[0] for env in envs])  # current observation of each env
        self._follow_tasks(range(n))
        self._return = np.zeros(n)
        self._success = np.zeros(n, bool)
        self.first = np.ones(n, bool)  # each env's current observation starts its episode

    def step(self, actions: np.ndarray) -> StepResult:
        n = len(self.envs)
        if self.first.any():
            self.started[self.first] = self.clock()
        obs_before, obs_after, first = self.obs, np.empty_like(self.obs), self.first.copy()
        next_obs = np.empty_like(self.obs)
        reward, terminated = np.empty(n, np.float32), np.zeros(n, np.float32)
        finished = []
        for i, env in enumerate(self.envs):
            obs, r, term, trunc, info = env.step(actions[i])
            next_obs[i], reward[i], terminated[i] = obs, r, term
            self._return[i] += r
            self._success[i] |= bool(info["success"])
            if term or trunc:
                finished.append(Episode(int(self.task_ids[i]), float(self._return[i]), bool(self._success[i]),
                                        int(self.started[i])))
                self._return[i], self._success[i] = 0.0, False
                obs, _ = env.reset()
                self._follow_tasks([i])
            self.first[i] = term or trunc
            obs_after[i] = obs
        self.obs = obs_after
        return StepResult(obs_before, next_obs, reward, terminated, finished, first)

    def _follow_tasks(self, slots) -> None:
        """A slot whose task changes per episode (envs/mixture.py) runs its current one."""
        for i in slots:
            task = getattr(self.envs[i], "task", None)
            if task is not None:
                self.task_ids[i] = task

    def close(self) -> None:
        for env in self.envs:
            env.close()
