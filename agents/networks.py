"""Task-conditioned networks, fused so that one forward pass serves a whole multi-task batch.

A `TaskNetwork` is a trunk (agents/trunks.py: TRUNKS) followed by a head (agents/heads.py:
HEADS), evaluated for K ensemble members at once (K=2 fuses SAC's twin critics; K=1 is the
actor). Task identity reaches it two ways, combinable:
  - `task_input`: a one-hot of the task index is appended to the input;
  - the head: "single" (one shared output layer), "multi" (one per task), "hyper" (generated
    per task by a hypernetwork); and a trunk may be task-conditioned itself ("hyper").
Task id hidden from the policy: task_input=False with head=single and a shared trunk.

Shared and per-task parameters: `named_shared_parameters()` yields what every task uses (the
trunk's shared layers; a shared head), leaving out per-task heads and task embeddings. Continual
World's regularizers and PackNet work on these only (CW's `common_variables`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from agents.heads import HEADS
from agents.trunks import TRUNKS

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def network_options(sac) -> dict:
    """TaskNetwork keyword arguments from a SACConfig (one place for the actor, critic and copies)."""
    hyper = dict(embedding_dim=sac.hyper_embedding_dim, hyper_hidden=sac.hyper_hidden)
    return dict(hidden_sizes=tuple(sac.hidden_sizes), trunk=sac.trunk, head=sac.head, task_input=sac.task_input,
                trunk_options=dict(activation=sac.activation, layer_norm=sac.layer_norm,
                                   **(hyper if sac.trunk == "hyper" else {})),
                head_options=hyper if sac.head == "hyper" else {})


def actor_options(sac) -> dict:
    """SquashedGaussianActor keyword arguments from a SACConfig: the network's and the log-std range."""
    return dict(network_options(sac), log_std_min=sac.log_std_min, log_std_max=sac.log_std_max,
                log_std_mode=sac.log_std_mode)


class TaskNetwork(nn.Module):
    """K task-conditioned networks evaluated together: (x[B, in], task[B]) -> [K, B, out]."""

    def __init__(self, ensemble: int, in_features: int, out_features: int, num_tasks: int,
                 hidden_sizes: tuple[int, ...], trunk: str = "mlp", head: str = "multi", task_input: bool = True,
                 trunk_options: dict | None = None, head_options: dict | None = None):
        super().__init__()
        self.ensemble, self.num_tasks, self.task_input = ensemble, num_tasks, task_input
        self.trunk = TRUNKS[trunk](ensemble, in_features + (num_tasks if task_input else 0), tuple(hidden_sizes),
                                   num_tasks, **(trunk_options or {}))
        self.head = HEADS[head](ensemble, self.trunk.out_features, out_features, num_tasks, **(head_options or {}))
        self.register_buffer("task_codes", torch.eye(num_tasks), persistent=False)  # one-hot rows

    def features(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The trunk's output [K, B, H]: what the head, and auxiliary losses, read."""
        if self.task_input:
            x = torch.cat([x, self.task_codes[task].to(x.dtype)], dim=-1)
        return self.trunk(x, task)

    def forward(self, x: torch.Tensor, task: torch.Tensor, with_features: bool = False):
        features = self.features(x, task)
        out = self.head(features, task)
        return (out, features) if with_features else out

    def named_shared_parameters(self):
        """(name, parameter) of what every task uses: not per-task heads, not task embeddings."""
        for name, p in self.named_parameters():
            if name.startswith("head.") and self.head.per_task:
                continue
            if name.startswith("trunk.") and self.trunk.task_specific(name.removeprefix("trunk.")):
                continue
            yield name, p


class SquashedGaussianActor(nn.Module):
    """pi(a|s, task): a Gaussian squashed by tanh into the action box (SAC, Haarnoja et al. 2018).
    The network's log-std output is bounded to [log_std_min, log_std_max] by a rescaled tanh
    (log_std_mode="tanh", CleanRL's) or by clipping (log_std_mode="clip", Spinning Up's and
    Continual World's, with [-20, 2])."""

    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, log_std_min: float = LOG_STD_MIN,
                 log_std_max: float = LOG_STD_MAX, log_std_mode: str = "tanh", **network_kwargs):
        super().__init__()
        self.net = TaskNetwork(1, obs_dim, 2 * action_dim, num_tasks, **network_kwargs)
        self.log_std_min, self.log_std_max, self.log_std_mode = log_std_min, log_std_max, log_std_mode

    def _gaussian(self, out: torch.Tensor):
        mean, log_std = out[0].chunk(2, dim=-1)
        if self.log_std_mode == "clip":
            log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        else:
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def forward(self, obs: torch.Tensor, task: torch.Tensor):
        """(mean, log_std) of the Gaussian before the tanh."""
        return self._gaussian(self.net(obs, task))

    def sample(self, obs: torch.Tensor, task: torch.Tensor, with_features: bool = False):
        """Reparameterised sample a = tanh(u), u ~ N(mean, std), and its log-probability (and the
        trunk's features [1, B, H] with_features)."""
        out, features = self.net(obs, task, with_features=True)
        mean, log_std = self._gaussian(out)
        u = mean + log_std.exp() * torch.randn_like(mean)
        log_prob = (-0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std
                    - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh(u)/du| = log(1 - tanh(u)^2), written in a numerically stable form.
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return (torch.tanh(u), log_prob, features) if with_features else (torch.tanh(u), log_prob)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, task: torch.Tensor, deterministic: bool,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """An action to take (no log-probability): tanh(mean), or a sample drawn with `generator`
        (a CPU generator; None: torch's global one)."""
        mean, log_std = self(obs, task)
        if deterministic:
            return torch.tanh(mean)
        noise = (torch.randn_like(mean) if generator is None
                 else torch.randn(mean.shape, generator=generator).to(mean.device))
        return torch.tanh(mean + log_std.exp() * noise)

    def named_shared_parameters(self):
        return ((f"net.{n}", p) for n, p in self.net.named_shared_parameters())


class TwinCritic(nn.Module):
    """Q1(s, a, task) and Q2(s, a, task), fused: returns [2, B] (and the trunk's features [2, B, H])."""

    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, **network_kwargs):
        super().__init__()
        self.net = TaskNetwork(2, obs_dim + action_dim, 1, num_tasks, **network_kwargs)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, task: torch.Tensor, with_features: bool = False):
        out = self.net(torch.cat([obs, action], dim=-1), task, with_features=with_features)
        return (out[0].squeeze(-1), out[1]) if with_features else out.squeeze(-1)

    def named_shared_parameters(self):
        return ((f"net.{n}", p) for n, p in self.net.named_shared_parameters())
