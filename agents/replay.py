"""Replay stored per task, sampled task-balanced: every batch holds the same count per task."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    obs: torch.Tensor         # [B, obs_dim]
    action: torch.Tensor      # [B, action_dim]
    reward: torch.Tensor      # [B]
    next_obs: torch.Tensor    # [B, obs_dim]
    terminated: torch.Tensor  # [B] 1.0 where the episode really ended (not a time-limit cut)
    task: torch.Tensor        # [B] task index


class MultiTaskReplay:
    """One ring buffer per task, all in preallocated arrays of shape [num_tasks, capacity, ...]."""

    FIELDS = ("obs", "action", "reward", "next_obs", "terminated")

    def __init__(self, num_tasks: int, capacity_per_task: int, obs_dim: int, action_dim: int):
        self.num_tasks, self.capacity = num_tasks, capacity_per_task
        shape = (num_tasks, capacity_per_task)
        self.obs = np.zeros((*shape, obs_dim), np.float32)
        self.action = np.zeros((*shape, action_dim), np.float32)
        self.reward = np.zeros(shape, np.float32)
        self.next_obs = np.zeros((*shape, obs_dim), np.float32)
        self.terminated = np.zeros(shape, np.float32)
        self.size = np.zeros(num_tasks, np.int64)   # valid rows per task
        self.cursor = np.zeros(num_tasks, np.int64)  # next row to write per task

    def add(self, task, obs, action, reward, next_obs, terminated) -> None:
        """Add a batch of transitions; `task` is an int array giving each row's task."""
        for t in np.unique(task):  # rows of one task go to consecutive ring positions
            rows = np.flatnonzero(task == t)
            slots = (self.cursor[t] + np.arange(len(rows))) % self.capacity
            self.obs[t, slots] = obs[rows]
            self.action[t, slots] = action[rows]
            self.reward[t, slots] = reward[rows]
            self.next_obs[t, slots] = next_obs[rows]
            self.terminated[t, slots] = terminated[rows]
            self.cursor[t] = (self.cursor[t] + len(rows)) % self.capacity
            self.size[t] = min(self.size[t] + len(rows), self.capacity)

    def clear(self, tasks) -> None:
        """Forget the given tasks' transitions (their rows are overwritten from the start)."""
        tasks = list(tasks)
        self.size[tasks] = 0
        self.cursor[tasks] = 0

    def min_size(self, tasks=None) -> int:
        return int(self.size[tasks if tasks is not None else slice(None)].min())

    def sample(self, per_task: int, rng: np.random.Generator, tasks=None) -> Batch:
        """`per_task` transitions drawn uniformly from each task's buffer (default: all tasks)."""
        tasks = np.arange(self.num_tasks) if tasks is None else np.asarray(tasks)
        task_col = np.repeat(tasks, per_task)
        rows = (rng.random(len(task_col)) * self.size[task_col]).astype(np.int64)
        return Batch(*(torch.from_numpy(getattr(self, f)[task_col, rows]) for f in self.FIELDS),
                     torch.from_numpy(task_col))

    def state_dict(self) -> dict:
        """Filled rows only, as tensors (loadable with weights_only=True)."""
        return {"size": torch.from_numpy(self.size.copy()), "cursor": torch.from_numpy(self.cursor.copy()),
                **{f: torch.from_numpy(getattr(self, f)) for f in self.FIELDS}}

    def load_state_dict(self, state: dict) -> None:
        for f in self.FIELDS:
            getattr(self, f)[...] = state[f].numpy()
        self.size[:] = state["size"].numpy()
        self.cursor[:] = state["cursor"].numpy()
