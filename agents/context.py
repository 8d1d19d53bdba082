"""The context-window mode of recurrent SAC (`sac.memory=gru` with `sac.memory_context=K`), as 3RL
(Caccia et al. 2022, "Task-Agnostic Continual Reinforcement Learning: In Praise of a Simple
Baseline"; code amazon-research/replay-based-recurrent-rl, models/networks.py ContextRNN,
algs/SAC/sac.py, misc/buffer.py) builds it: no stored hidden state; each network reads the last K
transitions (s_j, a_j, r_j), j = t-K .. t-1, of the episode through a GRU of its own, from a zero
state, and appends the GRU's last hidden state to its input:
    actor   pi(. | [s_t, c^pi_t])          critic   Q_j([s_t, a_t, c^Q_t])   (one context, two Q's)
The target uses the window shifted by one step, (s_j, a_j, r_j) for j = t-K+1 .. t, with s_{t+1}.
The critic's GRU is trained by the critic's loss, the actor's by the actor's; the target critic
has its own copy. Before an episode's start a window holds zeros.

Deviations from their code:
  - the step before an episode's start is all zeros; theirs holds a random action (and, while
    acting, s_0 instead of the zero observation it stores);
  - evaluation reads the same zero-padded K-step window as training and acting; theirs starts
    from an empty window that grows to K;
  - the GRU's width is sac.memory_hidden (128 by default; theirs is 30: --set sac.memory_hidden=30);
  - above the context, the networks are ours (agents/networks.py: trunk, head, task input), and so
    is the update's order (agents/sac/learning.py): the temperature steps after the policy, whose
    loss reads the temperature from before the step; theirs steps the temperature first and the
    policy's loss reads the new one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from agents.networks import SquashedGaussianActor, TaskNetwork, actor_options, network_options
from agents.recurrent import EnvMemories, RecurrentActor, zero_state_like
from agents.sequence_replay import SequenceReplay


class ContextBatch(NamedTuple):
    obs: torch.Tensor         # [B, obs_dim]
    action: torch.Tensor      # [B, action_dim]
    reward: torch.Tensor      # [B]
    next_obs: torch.Tensor    # [B, obs_dim]
    terminated: torch.Tensor  # [B]
    task: torch.Tensor        # [B]
    history: torch.Tensor     # [B, K + 1, action_dim + 1 + obs_dim]: (a_j, r_j, s_j), j = t-K .. t; zeros
                              # before the episode's start


class ContextReplay(SequenceReplay):
    """Sequence replay's rows and links, sampled as single transitions, each with the K rows before
    it in its episode (3RL's misc/buffer.py get_batch: theirs pads every stored episode with K zero
    rows; ours follows prev_gap back and writes zeros where the episode had not begun, or where its
    earlier rows were overwritten)."""

    def __init__(self, num_tasks: int, capacity_per_task: int, obs_dim: int, action_dim: int, context: int,
                 normalize_rewards: bool = False):
        super().__init__(num_tasks, capacity_per_task, obs_dim, action_dim, 1, normalize_rewards)
        self.context = context

    def _history(self, task: int, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slots [n, K + 1], valid [n, K + 1]): rows t-K .. t of each slot's episode."""
        k = self.context
        out, valid = np.empty((len(slots), k + 1), np.int64), np.zeros((len(slots), k + 1), bool)
        out[:, k], valid[:, k] = slots, True
        gaps = self.links[task]["prev_gap"]
        age = (self.cursor[task] - 1 - slots) % self.capacity  # rows added after each
        for j in range(k - 1, -1, -1):
            gap = gaps[out[:, j + 1]].astype(np.int64) * valid[:, j + 1]
            gap[gap == self.UNKNOWN] = 0  # a predecessor too far back to link: treated as not stored
            age = age + gap
            valid[:, j] = (gap > 0) & (age < self.size[task])  # its row is still stored
            out[:, j] = (out[:, j + 1] - gap) % self.capacity
        return out, valid

    def sample(self, per_task: int, rng: np.random.Generator, tasks=None) -> ContextBatch:
        tasks, rows = self.draw(per_task, rng, tasks)
        return self.gather(tasks, rows, per_task)

    def gather(self, tasks: np.ndarray, rows: np.ndarray, per_task: int) -> ContextBatch:
        """The batch of the given rows (`per_task` of each task in `tasks`, task by task), each with its window."""
        n, width = len(rows), self.shapes["action"][0] + 1 + self.shapes["obs"][0]
        out = {f: np.empty((n, *shape), np.float32) for f, shape in self.shapes.items()}
        history = np.zeros((n, self.context + 1, width), np.float32)
        for k, t in enumerate(tasks):
            part = slice(k * per_task, (k + 1) * per_task)
            slots, valid = self._history(t, rows[part])
            buffer = self.buffers[t]
            for f in self.FIELDS:
                out[f][part] = buffer[f][rows[part]]
            reward = buffer["reward"][slots] / (self.reward_std(t) if self.normalize_rewards else 1.0)
            if self.normalize_rewards:
                out["reward"][part] /= self.reward_std(t)
            steps = np.concatenate([buffer["action"][slots], reward[..., None], buffer["obs"][slots]], axis=-1)
            history[part] = steps * valid[..., None]
        return ContextBatch(*(torch.from_numpy(out[f]) for f in self.FIELDS),
                            torch.from_numpy(np.repeat(tasks, per_task)), torch.from_numpy(history))


def step_rows(action, reward, obs) -> torch.Tensor:
    """A context's rows: [a, r, s] (their order)."""
    return torch.cat([action, reward.unsqueeze(-1), obs], dim=-1)


class ContextEncoder(nn.Module):
    """[B, K, a + 1 + s] -> the GRU's last hidden state [B, H] (from a zero state)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.rnn = nn.GRU(action_dim + 1 + obs_dim, hidden, batch_first=True)
        self.out_features = hidden

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return self.rnn(window, zero_state_like(window, self.out_features, lstm=False))[1][0]


class ContextActor(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, sac):
        super().__init__()
        self.context = ContextEncoder(obs_dim, action_dim, sac.memory_hidden)
        self.length = sac.memory_context  # K: the transitions a context holds
        self.policy = SquashedGaussianActor(obs_dim + sac.memory_hidden, action_dim, num_tasks, **actor_options(sac))
        self.encoder = None

    def own_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def forward(self, obs, window, task):
        """The policy's (mean, log std) [B, A]."""
        return self.policy(torch.cat([obs, self.context(window)], dim=-1), task)

    def sample(self, obs, window, task, with_features: bool = False):
        return self.policy.sample(torch.cat([obs, self.context(window)], dim=-1), task, with_features)

    @torch.no_grad()
    def act(self, obs, window, task, deterministic: bool, generator=None):
        return self.policy.act(torch.cat([obs, self.context(window)], dim=-1), task, deterministic, generator)

    def named_shared_parameters(self):
        yield from ((f"context.{n}", p) for n, p in self.context.named_parameters())
        yield from ((f"policy.{n}", p) for n, p in self.policy.named_shared_parameters())


class ContextCritic(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, sac):
        super().__init__()
        self.context = ContextEncoder(obs_dim, action_dim, sac.memory_hidden)
        self.net = TaskNetwork(2, obs_dim + action_dim + sac.memory_hidden, 1, num_tasks,
                               **network_options(sac, critic=True))
        self.encoder = None

    def forward(self, obs, action, window, task, with_features: bool = False):
        out = self.net(torch.cat([obs, action, self.context(window)], dim=-1), task, with_features=with_features)
        return (out[0].squeeze(-1), out[1]) if with_features else out.squeeze(-1)

    def named_shared_parameters(self):
        yield from ((f"context.{n}", p) for n, p in self.context.named_parameters())
        yield from ((f"net.{n}", p) for n, p in self.net.named_shared_parameters())


class EnvContexts:
    """Each of N envs' last K transitions while acting, zeros at an episode's start."""

    def __init__(self, policy: ContextActor, envs: int, obs_dim: int, action_dim: int):
        self.policy = policy
        device = next(policy.parameters()).device
        self.window = torch.zeros(envs, policy.length, action_dim + 1 + obs_dim, device=device)
        self.pending = None  # (envs, obs, action) of the last actions, until their rewards come

    def start(self, envs) -> None:
        self.window[envs] = 0.0

    def act(self, obs: torch.Tensor, task: torch.Tensor, envs, deterministic: bool, generator=None) -> torch.Tensor:
        action = self.policy.act(obs, self.window[envs], task, deterministic, generator)
        self.pending = (envs, obs, action)
        return action

    def acted(self, obs: torch.Tensor, action: torch.Tensor) -> None:
        """Every env took `action` in `obs` without the policy (random warm-up actions)."""
        self.pending = (slice(None), obs, action)

    def rewarded(self, envs, reward) -> None:
        """The rewards of the envs' last actions (the envs `act` was called for): each window takes
        its step (a, r, s)."""
        _, obs, action = self.pending
        reward = torch.as_tensor(reward, dtype=torch.float32, device=self.window.device)
        step = step_rows(action.to(self.window.device), reward, obs.to(self.window.device))
        self.window[envs] = torch.cat([self.window[envs][:, 1:], step.unsqueeze(1)], dim=1)


def env_memories(policy, envs: int, obs_dim: int, action_dim: int):
    """What acting with `policy` carries per env: EnvMemories (sac.memory), EnvContexts (with
    sac.memory_context), or None for a policy without memory."""
    if isinstance(policy, ContextActor):
        return EnvContexts(policy, envs, obs_dim, action_dim)
    if isinstance(policy, RecurrentActor):
        return EnvMemories(policy, envs, action_dim)
    return None
