"""An env slot whose task changes from episode to episode: at every reset `pick()` names the task of
the next episode, whose env (built on first use, then kept) runs it. Blended task switches
(continual.blend_steps: launch/actors/actor.py) step these instead of one env per task."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym


class MixtureEnv(gym.Env):
    def __init__(self, make: Callable[[int], gym.Env], pick: Callable[[], int]):
        """make(task): a fresh env of that task; pick(): the next episode's task."""
        self.make, self.pick = make, pick
        self.envs: dict[int, gym.Env] = {}
        self.task = pick()
        self.env = self._env(self.task)
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space

    def _env(self, task: int) -> gym.Env:
        if task not in self.envs:
            self.envs[task] = self.make(task)
        return self.envs[task]

    def reset(self, *, seed=None, options=None):
        self.task = self.pick()
        self.env = self._env(self.task)
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        return self.env.step(action)

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
