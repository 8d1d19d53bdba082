"""Recurrent SAC's networks (`sac.memory`: gru | lstm), after Ni et al. 2022, "Recurrent Model-Free
RL Can Be a Strong Baseline for Many POMDPs" (code: twni2016/pomdp-baselines, the default
`ModelFreeOffPolicy_Separate_RNN`: policies/models/policy_rnn.py, recurrent_actor.py,
recurrent_critic.py).

Actor and critic each have their own memory (separate RNNs; their shared-RNN variant is marked
"deprecated due to poor performance"). A memory reads, at step t, the previous action a_{t-1}, the
previous reward r_{t-1} and the observation o_t, each embedded by Linear + ReLU (16, 16 and 32
units), concatenated in that order and fed to a GRU or LSTM (`sac.memory_hidden` units, one
layer, orthogonal weights and zero biases); a_{-1} = r_{-1} = 0 and the state starts at zero.
  actor:  pi(. | [h_t, embed'(o_t)]), embed' a second Linear(obs, 32) + ReLU of its own;
  critic: Q_j([h_t, shortcut(o_t, a_t)]), shortcut = Linear(obs + action, 64) + ReLU (64 = the
          three embeddings' width, as theirs); one memory for both Q's, two heads.
Above the memory, each network is one of ours (agents/networks.py: TaskNetwork, trunk + head
with `sac.hidden_sizes`, the task input and per-task heads), so multi-task heads sit on the
recurrent features. The target critic is a full copy, memory included. With `sac.trunk=hyper` the
memory and the embedding beside it (embed', shortcut) are generated per task by a hypernetwork
(agents/hyper_memory.py, Ehret et al. 2021's setting).

Deviations from their code:
  - the MLPs above the memory are our TaskNetworks: nn.Linear's default initialisation (theirs:
    rlkit's fanin_init, biases 0.1, last layers +-3e-3), our log-std bound (sac.log_std_mode;
    theirs clips to [-20, 2], which is sac.log_std_mode=clip with log_std_min=-20);
  - their log-prob correction log(1 - tanh(u)^2 + 1e-6); ours is the exact stable form (agents/networks.py).
  - acting: an env's memory state carries on when new weights arrive mid-episode (the actors
    refresh weights as the learner publishes them; theirs collect each episode with one set of
    weights, then update), and when an actor gets its first weights mid-episode after acting at
    random, its memories start from zero there (as a training window that starts mid-episode).
Everything runs batch-first ([B, L, ...]); theirs is time-major.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agents.hyper_memory import HyperMemory
from agents.networks import SquashedGaussianActor, TaskNetwork, actor_options, hyper_options, network_options

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
OBS_EMBED, ACTION_EMBED, REWARD_EMBED = 32, 16, 16  # their embedding sizes (configs/pomdp/*/rnn.yml)
SHORTCUT = OBS_EMBED + ACTION_EMBED + REWARD_EMBED  # the critic's shortcut: the three embeddings' width


class Memory(nn.Module):
    """(o_t, a_{t-1}, r_{t-1}) -> h_t through embeddings and a GRU or LSTM."""

    def __init__(self, obs_dim: int, action_dim: int, cell: str, hidden: int):
        super().__init__()
        self.obs_embed = nn.Linear(obs_dim, OBS_EMBED)
        self.action_embed = nn.Linear(action_dim, ACTION_EMBED)
        self.reward_embed = nn.Linear(1, REWARD_EMBED)
        self.input_size = OBS_EMBED + ACTION_EMBED + REWARD_EMBED
        self.rnn = CELLS[cell](self.input_size, hidden, batch_first=True)
        self.lstm, self.out_features = cell == "lstm", hidden
        for name, p in self.rnn.named_parameters():
            nn.init.zeros_(p) if "bias" in name else nn.init.orthogonal_(p)

    def initial_state(self, batch: int, device=None):
        """A zero state for `batch` sequences (an LSTM's is the pair (h, c))."""
        h = torch.zeros(1, batch, self.out_features, device=device)
        return (h, h.clone()) if self.lstm else h

    def forward(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor, task=None, state=None):
        """obs [B, L, d], prev_action [B, L, A], prev_reward [B, L] -> (h [B, L, H], final state);
        the task is unused (agents/hyper_memory.py's memory reads it)."""
        x = torch.cat([F.relu(self.action_embed(prev_action)), F.relu(self.reward_embed(prev_reward.unsqueeze(-1))),
                       F.relu(self.obs_embed(obs))], dim=-1)
        return self.rnn(x, zero_state_like(x, self.out_features, self.lstm) if state is None else state)


def zero_state_like(x: torch.Tensor, hidden: int, lstm: bool):
    """A zero state for the sequences x [B, L, ...], made from x so that it carries x's batch
    dimensions under torch.func.vmap (the per-window gradients of continual/strategies/importance.py:
    the state nn.GRU makes itself is unbatched there, and the pass fails)."""
    h = torch.zeros_like(x[:, :1, :1]).transpose(0, 1).expand(1, x.shape[0], hidden).contiguous()
    return (h, h.clone()) if lstm else h


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *x.shape[2:])


def _memory(obs_dim: int, action_dim: int, num_tasks: int, sac, readout: tuple[int, int]):
    """(memory, read-out layer): Memory and an nn.Linear; with sac.trunk=hyper, a HyperMemory that
    generates both per task (agents/hyper_memory.py; the read-out layer is then None)."""
    if sac.trunk == "hyper":
        return HyperMemory(obs_dim, action_dim, sac.memory, sac.memory_hidden, num_tasks, readout,
                           hyper_options(sac), sac.hyper_chunk_units), None
    return Memory(obs_dim, action_dim, sac.memory, sac.memory_hidden), nn.Linear(*readout)


class RecurrentActor(nn.Module):
    """pi(a_t | h_t, o_t, task): a memory, then a SquashedGaussianActor on [h_t, embed'(o_t)]."""

    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, sac):
        super().__init__()
        self.memory, self.current = _memory(obs_dim, action_dim, num_tasks, sac, (obs_dim, OBS_EMBED))
        self.policy = SquashedGaussianActor(sac.memory_hidden + OBS_EMBED, action_dim, num_tasks, **actor_options(sac))
        self.encoder = None

    def own_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def _features(self, obs, prev_action, prev_reward, task, state=None):
        """([h_t, embed'(o_t)] [B, L, H + 32], the memory's final state); a generated memory makes
        both with one set of generated weights."""
        if self.current is None:
            h, state, current = self.memory(obs, prev_action, prev_reward, task, state, readout=obs)
        else:
            (h, state), current = self.memory(obs, prev_action, prev_reward, task, state), F.relu(self.current(obs))
        return torch.cat([h, current], dim=-1), state

    def forward(self, obs, prev_action, prev_reward, task):
        """The policy's (mean, log std) [B, L, A] over sequences, from a zero state."""
        b, length = obs.shape[:2]
        mean, log_std = self.policy(_flat(self._features(obs, prev_action, prev_reward, task)[0]),
                                    task.repeat_interleave(length))
        return mean.view(b, length, -1), log_std.view(b, length, -1)

    def sample(self, obs, prev_action, prev_reward, task, with_features: bool = False):
        """Over sequences: obs [B, L, d], ..., task [B] -> (a [B, L, A], log pi [B, L]) (and the
        policy trunk's features [1, B * L, H])."""
        b, length = obs.shape[:2]
        x, _ = self._features(obs, prev_action, prev_reward, task)
        steps = task.repeat_interleave(length)
        action, log_pi, features = self.policy.sample(_flat(x), steps, with_features=True)
        out = action.view(b, length, -1), log_pi.view(b, length)
        return (*out, features) if with_features else out

    @torch.no_grad()
    def act(self, obs, prev_action, prev_reward, task, state, deterministic: bool, generator=None):
        """One step for N envs: obs [N, d], prev_action [N, A], prev_reward [N], task [N], the
        memory's state -> (action [N, A], the next state)."""
        x, state = self._features(obs.unsqueeze(1), prev_action.unsqueeze(1), prev_reward.unsqueeze(1), task, state)
        return self.policy.act(x[:, 0], task, deterministic, generator), state

    def named_shared_parameters(self):
        for name, p in self.named_parameters():
            if not name.startswith("policy.") and not name.endswith("generator.embedding"):
                yield name, p
        yield from ((f"policy.{n}", p) for n, p in self.policy.named_shared_parameters())


class RecurrentCritic(nn.Module):
    """Q1, Q2(h_t, o_t, a_t, task): one memory, a shortcut embedding of (o_t, a_t), a TaskNetwork
    with two members (their two heads)."""

    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, sac):
        super().__init__()
        self.memory, self.shortcut = _memory(obs_dim, action_dim, num_tasks, sac, (obs_dim + action_dim, SHORTCUT))
        self.net = TaskNetwork(2, sac.memory_hidden + SHORTCUT, 1, num_tasks,
                               **network_options(sac, critic=True))
        self.encoder = None

    def history(self, obs, prev_action, prev_reward, task) -> torch.Tensor:
        """h [B, L, H] over sequences."""
        return self.memory(obs, prev_action, prev_reward, task)[0]

    def forward(self, obs, prev_action, prev_reward, action, task):
        """Q [2, B, L] over sequences read from a zero state."""
        return self.q(self.history(obs, prev_action, prev_reward, task), obs, action, task)

    def q(self, h, obs, action, task, with_features: bool = False):
        """From the memory's h: h [B, L, H], obs [B, L, d], action [B, L, A], task [B] -> Q [2, B, L]
        (and the trunk's features [2, B * L, H'])."""
        b, length = obs.shape[:2]
        obs_action = torch.cat([obs, action], dim=-1)
        shortcut = self.memory.readout(obs_action, task) if self.shortcut is None else F.relu(self.shortcut(obs_action))
        x = torch.cat([h, shortcut], dim=-1)
        q, features = self.net(_flat(x), task.repeat_interleave(length), with_features=True)
        q = q.squeeze(-1).view(2, b, length)
        return (q, features) if with_features else q

    def named_shared_parameters(self):
        for name, p in self.named_parameters():
            if not name.startswith("net.") and not name.endswith("generator.embedding"):
                yield name, p
        yield from ((f"net.{n}", p) for n, p in self.net.named_shared_parameters())


class EnvMemories:
    """What a recurrent policy carries for each of N envs while acting: its memory's state and the
    previous action and reward, all zero at an episode's start (their `get_initial_info`)."""

    def __init__(self, policy: RecurrentActor, envs: int, action_dim: int):
        self.policy = policy
        device = next(policy.parameters()).device
        self.state = policy.memory.initial_state(envs, device)
        self.prev_action = torch.zeros(envs, action_dim, device=device)
        self.prev_reward = torch.zeros(envs, device=device)

    def start(self, envs) -> None:
        """Episodes begin in these envs (indices or a boolean mask): forget."""
        for part in self.state if isinstance(self.state, tuple) else (self.state,):
            part[:, envs] = 0.0
        self.prev_action[envs] = 0.0
        self.prev_reward[envs] = 0.0

    def act(self, obs: torch.Tensor, task: torch.Tensor, envs, deterministic: bool, generator=None) -> torch.Tensor:
        """Actions for these envs (indices or a mask), stepping their memories."""
        state = tuple(part[:, envs] for part in self.state) if isinstance(self.state, tuple) else self.state[:, envs]
        action, state = self.policy.act(obs, self.prev_action[envs], self.prev_reward[envs], task, state,
                                        deterministic, generator)
        for part, new in zip(*((self.state, state) if isinstance(self.state, tuple) else ((self.state,), (state,)))):
            part[:, envs] = new
        self.prev_action[envs] = action
        return action

    def acted(self, obs: torch.Tensor, action: torch.Tensor) -> None:
        """Every env took `action` in `obs` without the policy (random warm-up actions)."""
        self.prev_action[:] = action

    def rewarded(self, envs, reward) -> None:
        """The rewards these envs' last actions earned."""
        self.prev_reward[envs] = torch.as_tensor(reward, dtype=torch.float32, device=self.prev_reward.device)
