"""Replay stored per task, sampled task-balanced: every batch holds the same count per task.

Memory is taken as it is used: a task's ring buffer starts small, doubles as it fills (up to
`capacity_per_task` rows) and is freed when the task is cleared. A transition of Meta-World
costs (39 + 39 + 4 + 1 + 1) x 4 = 336 bytes, so a full 1M-row task buffer is 336 MB; a
continual run that resets replay at every stage holds one such buffer at a time.

Reward normalisation (`normalize_rewards`, Kurin et al. 2022's): rewards are stored raw; a
sampled reward is divided by its task's standard deviation over every reward ever added,
sqrt(E[r^2] - E[r]^2 + 1e-8) (the mean is not subtracted), as their code does.
"""

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
    """One ring buffer per task. size[t] rows of task t are valid; cursor[t] is the next row
    to write (== size[t] until the ring is full and wraps)."""

    FIELDS = ("obs", "action", "reward", "next_obs", "terminated")
    FIRST_ROWS = 4096  # a task's first allocation; it doubles from there

    def __init__(self, num_tasks: int, capacity_per_task: int, obs_dim: int, action_dim: int,
                 normalize_rewards: bool = False):
        self.num_tasks, self.capacity, self.normalize_rewards = num_tasks, capacity_per_task, normalize_rewards
        self.reward_stats = np.zeros((num_tasks, 3))  # per task: count, sum r, sum r^2 of every reward added
        self.shapes = {"obs": (obs_dim,), "action": (action_dim,), "reward": (), "next_obs": (obs_dim,),
                       "terminated": ()}
        self.buffers: list[dict[str, np.ndarray] | None] = [None] * num_tasks
        self.size = np.zeros(num_tasks, np.int64)
        self.cursor = np.zeros(num_tasks, np.int64)

    def allocated_rows(self, task: int) -> int:
        buffer = self.buffers[task]
        return 0 if buffer is None else len(buffer["reward"])

    def nbytes(self) -> int:
        return sum(a.nbytes for b in self.buffers if b is not None for a in b.values())

    def _reserve(self, task: int, rows: int) -> None:
        """Room for `rows` rows of `task` (at most the capacity), keeping what is stored."""
        have = self.allocated_rows(task)
        if have >= min(rows, self.capacity):
            return
        new = min(self.capacity, max(rows, 2 * have, self.FIRST_ROWS))
        grown = {f: np.zeros((new, *shape), np.float32) for f, shape in self.shapes.items()}
        if have:
            for f in self.FIELDS:
                grown[f][:have] = self.buffers[task][f]
        self.buffers[task] = grown

    def add(self, task, obs, action, reward, next_obs, terminated, stream=None, first=None) -> None:
        """Add a batch of transitions; `task` is an int array giving each row's task. (stream, first:
        which env each row came from and whether it starts an episode; sequence replay reads them.)"""
        columns = {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "terminated": terminated}
        for t in np.unique(task):  # rows of one task go to consecutive ring positions
            every = np.flatnonzero(task == t)
            r = reward[every].astype(np.float64)
            self.reward_stats[t] += (len(r), r.sum(), (r * r).sum())
            rows = every[-self.capacity:]  # more than a ring's worth: the newest
            self._reserve(t, int(self.size[t]) + len(rows))
            slots = (self.cursor[t] + np.arange(len(rows))) % self.capacity
            self._write(t, slots, {f: columns[f][rows] for f in self.FIELDS})
            self.cursor[t] = (self.cursor[t] + len(rows)) % self.capacity
            self.size[t] = min(self.size[t] + len(rows), self.capacity)

    def _write(self, task: int, slots: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        for f in self.FIELDS:
            self.buffers[task][f][slots] = columns[f]

    def clear(self, tasks) -> None:
        """Forget the given tasks' transitions and give their memory back."""
        for t in tasks:
            self.buffers[t] = None
            self.size[t] = self.cursor[t] = 0

    def min_size(self, tasks=None) -> int:
        return int(self.size[tasks if tasks is not None else slice(None)].min())

    def rows(self, task: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the given stored rows of one task, field by field."""
        return {f: self.buffers[task][f][rows] for f in self.FIELDS}

    def draw(self, per_task: int, rng: np.random.Generator, tasks=None) -> tuple[np.ndarray, np.ndarray]:
        """The rows a sample takes: (tasks [T], row of each draw within its task [T * per_task])."""
        tasks = np.arange(self.num_tasks) if tasks is None else np.asarray(tasks)
        task_col = np.repeat(tasks, per_task)
        return tasks, (rng.random(len(task_col)) * self.size[task_col]).astype(np.int64)

    def sample(self, per_task: int, rng: np.random.Generator, tasks=None) -> Batch:
        """`per_task` transitions drawn uniformly from each task's buffer (default: all tasks),
        task by task in the order given: the batch is contiguous per task."""
        tasks, rows = self.draw(per_task, rng, tasks)
        out = {f: np.empty((len(rows), *shape), np.float32) for f, shape in self.shapes.items()}
        for k, t in enumerate(tasks):
            part = slice(k * per_task, (k + 1) * per_task)
            for f in self.FIELDS:
                out[f][part] = self.buffers[t][f][rows[part]]
            if self.normalize_rewards:
                out["reward"][part] /= self.reward_std(t)
        return Batch(*(torch.from_numpy(out[f]) for f in self.FIELDS), torch.from_numpy(np.repeat(tasks, per_task)))

    def reward_std(self, task: int) -> float:
        count, total, squares = self.reward_stats[task]
        mean = total / max(count, 1)
        return float(np.sqrt(max(squares / max(count, 1) - mean * mean, 0.0) + 1e-8))

    # -- state: filled rows only, as tensors (loadable with weights_only=True) -----------------
    def task_state(self, task: int) -> dict:
        size = int(self.size[task])
        fields = {f: torch.from_numpy(self.buffers[task][f][:size].copy()) for f in self.FIELDS} if size else {}
        return {"size": size, "cursor": int(self.cursor[task]), **fields}

    def load_task_state(self, task: int, state: dict) -> None:
        self.clear([task])
        size = int(state["size"])
        if size:
            self._reserve(task, size)
            for f in self.FIELDS:
                self.buffers[task][f][:size] = state[f].numpy()
        self.size[task], self.cursor[task] = size, int(state["cursor"])

    def state_dict(self) -> dict:
        return {"tasks": [self.task_state(t) for t in range(self.num_tasks)],
                "reward_stats": torch.from_numpy(self.reward_stats.copy())}

    def load_state_dict(self, state: dict) -> None:
        if len(state["tasks"]) != self.num_tasks:
            raise ValueError(f"replay state holds {len(state['tasks'])} tasks, this run has {self.num_tasks}")
        for t, task_state in enumerate(state["tasks"]):
            self.load_task_state(t, task_state)
        self.reward_stats[:] = state["reward_stats"].numpy()


class DeviceReplay(MultiTaskReplay):
    """The same replay held on the learner's device (`replay.device`; a GPU by default there):
    each task's transitions are the rows of one [rows, width] tensor on the device (obs | action |
    reward | next_obs | terminated). A sample draws its rows exactly as MultiTaskReplay does (the
    same generator calls, so the same rows and the same batch), sends the [B] row indices to the
    device and gathers there: the batch never crosses to the host and nothing waits for the device.
    Actors' chunks go up through pinned memory, asynchronously. Checkpoints hold the same
    tensors as the host replay's, so either one resumes the other's."""

    def __init__(self, num_tasks: int, capacity_per_task: int, obs_dim: int, action_dim: int,
                 device: torch.device, normalize_rewards: bool = False):
        super().__init__(num_tasks, capacity_per_task, obs_dim, action_dim, normalize_rewards)
        self.device = torch.device(device)
        self.widths = [int(np.prod(self.shapes[f], dtype=np.int64)) for f in self.FIELDS]
        self.width = sum(self.widths)

    def allocated_rows(self, task: int) -> int:
        buffer = self.buffers[task]
        return 0 if buffer is None else len(buffer)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers if b is not None)

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()  # torch's caching host allocator keeps it alive until the copy is done
        return tensor.to(self.device, non_blocking=True)

    def _reserve(self, task: int, rows: int) -> None:
        have = self.allocated_rows(task)
        if have >= min(rows, self.capacity):
            return
        grown = torch.zeros(min(self.capacity, max(rows, 2 * have, self.FIRST_ROWS)), self.width, device=self.device)
        if have:
            grown[:have] = self.buffers[task]
        self.buffers[task] = grown

    def _write(self, task: int, slots: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        rows = np.concatenate([np.asarray(columns[f], np.float32).reshape(len(slots), -1) for f in self.FIELDS], axis=1)
        self.buffers[task][self._upload(slots)] = self._upload(rows)

    def _fields(self, data):
        """[n, width] (a tensor or an array) -> {field: its columns, shaped as the field}."""
        out, at = {}, 0
        for f, width in zip(self.FIELDS, self.widths):
            out[f] = data[:, at:at + width].reshape(len(data), *self.shapes[f])
            at += width
        return out

    def rows(self, task: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        data = self.buffers[task][torch.as_tensor(rows, device=self.device)].cpu().numpy()
        return {f: np.ascontiguousarray(v) for f, v in self._fields(data).items()}

    def sample(self, per_task: int, rng: np.random.Generator, tasks=None) -> Batch:
        tasks, rows = self.draw(per_task, rng, tasks)
        index = self._upload(rows)
        parts = [self.buffers[t].index_select(0, index[k * per_task:(k + 1) * per_task]) for k, t in enumerate(tasks)]
        fields = self._fields(torch.cat(parts) if len(parts) > 1 else parts[0])
        reward = fields["reward"]
        if self.normalize_rewards:  # the host replay's float32 division, on the device
            stds = np.repeat(np.array([self.reward_std(t) for t in tasks], np.float32), per_task)
            reward = reward / self._upload(stds)
        return Batch(fields["obs"].contiguous(), fields["action"].contiguous(), reward.contiguous(),
                     fields["next_obs"].contiguous(), fields["terminated"].contiguous(),
                     self._upload(np.repeat(tasks, per_task)))

    def task_state(self, task: int) -> dict:
        size = int(self.size[task])
        if not size:
            return {"size": 0, "cursor": int(self.cursor[task])}
        data = self.buffers[task][:size].cpu().numpy()
        return {"size": size, "cursor": int(self.cursor[task]),
                **{f: torch.from_numpy(np.ascontiguousarray(v)) for f, v in self._fields(data).items()}}

    def load_task_state(self, task: int, state: dict) -> None:
        self.clear([task])
        size = int(state["size"])
        if size:
            self._reserve(task, size)
            self._write(task, np.arange(size), {f: state[f].numpy() for f in self.FIELDS})
        self.size[task], self.cursor[task] = size, int(state["cursor"])


def make_replay(cfg, num_tasks: int, obs_dim: int, action_dim: int, learner_device: torch.device) -> MultiTaskReplay:
    """The replay `cfg` (launch/config/__init__.py: ReplayConfig) asks for: on the host, or on the learner's
    device (replay.device: host | learner | auto = the learner's device when it is a GPU). (A recurrent
    learner's: agents/models.py.)"""
    on_device = cfg.device == "learner" or (cfg.device == "auto" and learner_device.type == "cuda")
    if on_device:
        return DeviceReplay(num_tasks, cfg.capacity_per_task, obs_dim, action_dim, learner_device,
                            normalize_rewards=cfg.normalize_rewards)
    return MultiTaskReplay(num_tasks, cfg.capacity_per_task, obs_dim, action_dim,
                           normalize_rewards=cfg.normalize_rewards)
