"""Replay for a stream of tasks that is never labelled (continual.boundaries=hidden): fixed memory
that keeps a uniform sample of everything seen, and a window of the newest experience.

ReservoirReplay: each buffer keeps a uniform sample of every row ever added to it (reservoir
sampling, Vitter's algorithm R: the n-th row, counting from 0, replaces slot j ~ U{0..n} if
j < capacity), instead of the newest rows. This is the task-free replay baseline (`--method
reservoir`) and the memory of MIR and CLEAR (MIR's buffer.add_reservoir: the same rule, drawn from
`seeding.rng(seed, "reservoir")`). `annotate`, when set, computes extra per-row columns when rows
are stored (CLEAR's behaviour outputs), kept beside them in `extra`.

RecentReplay: a ReservoirReplay plus `recent`, a ring of the newest `recent_steps` rows: the new
half of MIR's and CLEAR's batches is drawn from it, the replayed half from the reservoir.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from agents.replay import MultiTaskReplay


class ReservoirReplay(MultiTaskReplay):
    def __init__(self, num_tasks: int, capacity: int, obs_dim: int, action_dim: int, rng: np.random.Generator,
                 normalize_rewards: bool = False, extra: dict[str, tuple[int, ...]] | None = None):
        super().__init__(num_tasks, capacity, obs_dim, action_dim, normalize_rewards)
        self.rng = rng
        self.seen = np.zeros(num_tasks, np.int64)  # rows ever offered to each buffer
        self.extra_shapes = dict(extra or {})
        self.extra: list[dict[str, np.ndarray] | None] = [None] * num_tasks
        self.annotate: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None

    def _reserve(self, task: int, rows: int) -> None:
        have = self.allocated_rows(task)
        super()._reserve(task, rows)
        new = self.allocated_rows(task)
        if self.extra_shapes and new != have:
            grown = {f: np.zeros((new, *shape), np.float32) for f, shape in self.extra_shapes.items()}
            for f in grown if have else ():
                grown[f][:have] = self.extra[task][f]
            self.extra[task] = grown

    def slots(self, task: int, count: int) -> np.ndarray:
        """Where the next `count` rows of `task` go (-1: not kept), in order; a slot taken twice keeps the later row."""
        n = self.seen[task] + np.arange(count)
        filling = n < self.capacity
        slots = np.where(filling, n, -1)
        draws = np.flatnonzero(~filling)
        if len(draws):
            j = (self.rng.random(len(draws)) * (n[draws] + 1)).astype(np.int64)  # U{0..n}
            slots[draws] = np.where(j < self.capacity, j, -1)
        later = np.zeros(count, bool)  # the same slot drawn again further on: the earlier row is overwritten
        seen_slots: set[int] = set()
        for i in range(count - 1, -1, -1):
            if slots[i] >= 0:
                later[i] = slots[i] in seen_slots
                seen_slots.add(int(slots[i]))
        return np.where(later, -1, slots)

    def add(self, task, obs, action, reward, next_obs, terminated, stream=None, first=None) -> None:
        columns = {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "terminated": terminated}
        for t in np.unique(task):
            every = np.flatnonzero(task == t)
            r = reward[every].astype(np.float64)
            self.reward_stats[t] += (len(r), r.sum(), (r * r).sum())
            slots = self.slots(t, len(every))
            self.seen[t] += len(every)
            kept = slots >= 0
            if not kept.any():
                continue
            rows, slots = every[kept], slots[kept]
            self._reserve(t, int(slots.max()) + 1)
            chosen = {f: np.asarray(columns[f])[rows] for f in self.FIELDS}
            self._write(t, slots, chosen)
            if self.annotate is not None:
                for f, values in self.annotate(chosen).items():
                    self.extra[t][f][slots] = values
            self.size[t] = min(max(int(self.size[t]), int(slots.max()) + 1), self.capacity)
            self.cursor[t] = self.size[t] % self.capacity

    def clear(self, tasks) -> None:
        super().clear(tasks)
        for t in tasks:
            self.seen[t], self.extra[t] = 0, None

    def extra_rows(self, task: int, rows: np.ndarray) -> dict[str, torch.Tensor]:
        return {f: torch.from_numpy(self.extra[task][f][rows]) for f in self.extra_shapes}

    def task_state(self, task: int) -> dict:
        size = int(self.size[task])
        extra = {f"extra/{f}": torch.from_numpy(self.extra[task][f][:size].copy()) for f in self.extra_shapes} \
            if size and self.extra_shapes else {}
        return {**super().task_state(task), "seen": int(self.seen[task]), **extra}

    def load_task_state(self, task: int, state: dict) -> None:
        super().load_task_state(task, state)
        self.seen[task] = int(state.get("seen", state["size"]))
        size = int(state["size"])
        for f in self.extra_shapes if size else ():
            self.extra[task][f][:size] = state[f"extra/{f}"].numpy()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]


class RecentReplay(ReservoirReplay):
    def __init__(self, num_tasks: int, capacity: int, recent_steps: int, obs_dim: int, action_dim: int,
                 rng: np.random.Generator, normalize_rewards: bool = False,
                 extra: dict[str, tuple[int, ...]] | None = None):
        super().__init__(num_tasks, capacity, obs_dim, action_dim, rng, normalize_rewards, extra)
        self.recent = MultiTaskReplay(num_tasks, recent_steps, obs_dim, action_dim, normalize_rewards)

    def add(self, task, obs, action, reward, next_obs, terminated, stream=None, first=None) -> None:
        self.recent.add(task, obs, action, reward, next_obs, terminated)
        super().add(task, obs, action, reward, next_obs, terminated)

    def clear(self, tasks) -> None:
        super().clear(tasks)
        self.recent.clear(tasks)

    def nbytes(self) -> int:
        return super().nbytes() + self.recent.nbytes()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "recent": self.recent.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.recent.load_state_dict(state["recent"])
