"""What a continual strategy's end_task reads of replay (continual/strategies/base.py: a strategy
that `needs_states`), for the RLlib engine, whose replay is RLlib's episode buffer."""

from __future__ import annotations

import numpy as np


class ReplayView:
    """size[t] and rows(t, idx) over `count` transitions sampled from RLlib's replay buffer and split
    by task (the task one-hot is the observation's last num_tasks entries: integrations/rllib/env.py)."""

    def __init__(self, buffer, num_tasks: int, count: int, gamma: float):
        episodes = buffer.sample(num_items=count, n_step=1, gamma=gamma, sample_episodes=True)
        obs = np.stack([e.get_observations(0) for e in episodes]).astype(np.float32)
        action = np.stack([e.get_actions(0) for e in episodes]).astype(np.float32)
        task = obs[:, -num_tasks:].argmax(1)
        self.data = {t: {"obs": obs[task == t, :-num_tasks], "action": action[task == t]} for t in range(num_tasks)}
        self.size = [len(self.data[t]["obs"]) for t in range(num_tasks)]

    def rows(self, task: int, idx) -> dict:
        return {k: v[idx] for k, v in self.data[task].items()}
