"""Replay for recurrent agents (`sac.memory`): transitions stored as they arrive, linked into
episodes, sampled as task-balanced subsequences that never cross an episode's start.

Actors step many envs in lockstep and stream chunks, so one task's rows arrive interleaved across
envs (and actors). Each row carries its stream (which env of which actor) and whether its
observation is its episode's first; `add` links every row to the previous row of its stream
(unless it starts an episode) by two gaps within the task's ring: `next_gap` (to the row after it,
0 while none has arrived or the episode ended there) and `prev_gap` (to the row before it, 0 at an
episode's start). Gaps are 2-byte counts: a gap past 65,534 rows (an env whose next step arrives
after 65,534 rows of its task from other envs) is not followed: the row before it ends its window
there, and the row itself reads as "not an episode start, predecessor unknown" (prev_gap = 65,535).
Memory stays flat as in MultiTaskReplay (the same rows, grown as used, plus 4 bytes a row: 340 bytes
per Meta-World transition against 336, 1.01x; pointmass 36 against 32, 1.125x).

A sample draws `per_task` start rows uniformly from each task's rows and follows `next_gap` for
up to `length` steps (`sac.memory_sequence`): a window ends early at its episode's end or at the
newest row of an episode still running; `mask` is 1 on real steps, 0 on the padding after them
(padded steps repeat the window's last row). Windows are cut to the longest real one in the batch
(pointmass episodes are 30 steps: a 64-step window would be half padding). Ni et al. 2022 (`twni2016/pomdp-baselines`,
buffers/seq_replay_buffer_vanilla.py) store whole episodes and draw starts uniformly from
[0, len - L] of each episode (shorter episodes: from 0), so their windows are never cut by an
episode's end unless the episode is shorter than L; ours may start in the last L - 1 steps of an
episode and be cut there (each step is covered by min(t + 1, L) starts instead of fewer near an
episode's ends), and we need no episode to have finished before its steps are sampled.

The ring's oldest rows are overwritten first, so a row's `next_gap` always points to a live row
(a `prev_gap` may point to an overwritten one: it is read only as "not an episode start").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from agents.replay import MultiTaskReplay


class SequenceBatch(NamedTuple):
    obs: torch.Tensor         # [B, L, obs_dim]
    action: torch.Tensor      # [B, L, action_dim]
    reward: torch.Tensor      # [B, L]
    next_obs: torch.Tensor    # [B, L, obs_dim]
    terminated: torch.Tensor  # [B, L]
    task: torch.Tensor        # [B]
    mask: torch.Tensor        # [B, L] 1 on real steps, 0 on padding
    first: torch.Tensor       # [B] 1 where the window starts at its episode's first step


def positions(batch: SequenceBatch):
    """A window's L + 1 positions as a memory reads them: (observations, previous actions, previous
    rewards), o_0 .. o_L, (0, a_0 .. a_{L-1}), (0, r_0 .. r_{L-1})."""
    obs = torch.cat([batch.obs[:, :1], batch.next_obs], dim=1)
    prev_action = torch.cat([torch.zeros_like(batch.action[:, :1]), batch.action], dim=1)
    prev_reward = torch.cat([torch.zeros_like(batch.reward[:, :1]), batch.reward], dim=1)
    return obs, prev_action, prev_reward


class SequenceReplay(MultiTaskReplay):
    LINKS = ("prev_gap", "next_gap")
    UNKNOWN = np.iinfo(np.uint16).max  # prev_gap of a row whose predecessor is too far back to link

    def __init__(self, num_tasks: int, capacity_per_task: int, obs_dim: int, action_dim: int, length: int,
                 normalize_rewards: bool = False):
        super().__init__(num_tasks, capacity_per_task, obs_dim, action_dim, normalize_rewards)
        self.length = length  # steps per window
        self.links: list[dict[str, np.ndarray] | None] = [None] * num_tasks
        self.written = np.zeros(num_tasks, np.int64)  # rows ever stored per task: the next row's serial number
        self.last_row: dict[int, tuple[int, int]] = {}  # stream -> (task, serial number of its newest row)

    def nbytes(self) -> int:
        return super().nbytes() + sum(a.nbytes for b in self.links if b is not None for a in b.values())

    def _reserve(self, task: int, rows: int) -> None:
        have = self.allocated_rows(task)
        super()._reserve(task, rows)
        new = self.allocated_rows(task)
        if new != have or self.links[task] is None:
            grown = {k: np.zeros(new, np.uint16) for k in self.LINKS}
            if have and self.links[task] is not None:
                for k in self.LINKS:
                    grown[k][:have] = self.links[task][k]
            self.links[task] = grown

    def add(self, task, obs, action, reward, next_obs, terminated, stream=None, first=None) -> None:
        """As MultiTaskReplay.add, with each row's stream [N] (an id per env: the same id for every
        row that env produced) and first [N] (its observation starts an episode)."""
        if stream is None or first is None:
            raise ValueError("sequence replay needs each row's stream and first-step flag")
        for t in np.unique(task):
            every = np.flatnonzero(task == t)
            super().add(task[every], obs[every], action[every], reward[every], next_obs[every], terminated[every])
            for row in every[:-self.capacity]:  # more than a ring's worth: the oldest rows were not kept
                self.last_row.pop(int(stream[row]), None)
            links = self.links[t]
            for row in every[-self.capacity:]:  # stored at serial numbers written[t], written[t] + 1, ...
                serial, key = int(self.written[t]), int(stream[row])
                slot = serial % self.capacity
                links["prev_gap"][slot] = links["next_gap"][slot] = 0
                before = self.last_row.get(key)
                if not first[row] and before is not None and before[0] == t and serial - before[1] < self.capacity:
                    gap = serial - before[1]  # the row before it in its episode, still stored
                    if gap < self.UNKNOWN:
                        links["next_gap"][before[1] % self.capacity] = links["prev_gap"][slot] = gap
                    else:  # too far to link in 2 bytes: the window before ends, this row is mid-episode
                        links["prev_gap"][slot] = self.UNKNOWN
                self.last_row[key] = (int(t), serial)
                self.written[t] += 1

    def clear(self, tasks) -> None:
        super().clear(tasks)
        tasks = {int(t) for t in tasks}
        for t in tasks:
            self.links[t], self.written[t] = None, 0
        self.last_row = {k: v for k, v in self.last_row.items() if v[0] not in tasks}

    def _windows(self, task: int, starts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(slots [n, length], mask [n, length]): each window's rows, following next_gap."""
        slots = np.empty((len(starts), length), np.int64)
        mask = np.zeros((len(starts), length), np.float32)
        slots[:, 0], mask[:, 0] = starts, 1.0
        gaps = self.links[task]["next_gap"]
        for k in range(1, length):
            gap = gaps[slots[:, k - 1]].astype(np.int64) * (mask[:, k - 1] > 0)
            slots[:, k] = (slots[:, k - 1] + gap) % self.capacity
            mask[:, k] = gap > 0
        return slots, mask

    def sample(self, per_task: int, rng: np.random.Generator, tasks=None) -> SequenceBatch:
        """`per_task` windows from each task's rows (default: all tasks), task by task in the order given."""
        tasks, starts = self.draw(per_task, rng, tasks)
        windows = [self._windows(t, starts[k * per_task:(k + 1) * per_task], self.length) for k, t in enumerate(tasks)]
        length = max(int(mask.sum(1).max()) for _, mask in windows)  # the longest real window
        n = len(starts)
        out = {f: np.empty((n, length, *shape), np.float32) for f, shape in self.shapes.items()}
        mask, first = np.empty((n, length), np.float32), np.empty(n, np.float32)
        for k, (t, (slots, task_mask)) in enumerate(zip(tasks, windows)):
            part, slots = slice(k * per_task, (k + 1) * per_task), slots[:, :length]
            mask[part], first[part] = task_mask[:, :length], self.links[t]["prev_gap"][slots[:, 0]] == 0
            for f in self.FIELDS:
                out[f][part] = self.buffers[t][f][slots]
            if self.normalize_rewards:
                out["reward"][part] /= self.reward_std(t)
        return SequenceBatch(*(torch.from_numpy(out[f]) for f in self.FIELDS),
                             torch.from_numpy(np.repeat(tasks, per_task)), torch.from_numpy(mask),
                             torch.from_numpy(first))

    # -- state: the links travel with the rows -----------------------------------------------------
    def task_state(self, task: int) -> dict:
        state = super().task_state(task)
        size = int(self.size[task])
        if size:
            state.update({k: torch.from_numpy(self.links[task][k][:size].astype(np.int32)) for k in self.LINKS})
        state["written"] = int(self.written[task])
        return state

    def load_task_state(self, task: int, state: dict) -> None:
        super().load_task_state(task, state)
        size = int(state["size"])
        if size:
            for k in self.LINKS:
                self.links[task][k][:size] = state[k].numpy()
        self.written[task] = int(state["written"])
        # streams restart after a resume: their next rows start episodes (the actors are new)
        self.last_row = {k: v for k, v in self.last_row.items() if v[0] != task}
