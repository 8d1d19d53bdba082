"""Task-conditioned MLPs, fused so that one forward pass serves a whole multi-task batch.

`EnsembleMLP` evaluates K independent MLPs at once with batched matmuls (K=2 fuses SAC's twin
critics; K=1 is the actor). Task conditioning comes two ways, combinable:
  - `task_input`: a one-hot of the task index is appended to the input;
  - a head type from `HEADS`: "single" (one shared output layer) or "multi" (one output
    layer per task, all computed in one matmul and the task's own slice gathered).
A new head type (e.g. hypernetwork-generated) is one class with the same call signature,
`head(features[K, B, H], task[B]) -> [K, B, out]`, plus one line in `HEADS`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EnsembleLinear(nn.Module):
    """K parallel linear layers: x[K, B, in] -> [K, B, out] in one batched matmul."""

    def __init__(self, ensemble: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class SingleHead(nn.Module):
    """One output layer shared by every task."""

    def __init__(self, ensemble: int, hidden: int, out: int, num_tasks: int):
        super().__init__()
        self.linear = EnsembleLinear(ensemble, hidden, out)

    def forward(self, features: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


class MultiHead(nn.Module):
    """One output layer per task: all heads in one matmul, then each sample keeps its task's."""

    def __init__(self, ensemble: int, hidden: int, out: int, num_tasks: int):
        super().__init__()
        self.out, self.num_tasks = out, num_tasks
        self.linear = EnsembleLinear(ensemble, hidden, out * num_tasks)

    def forward(self, features: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        k, b, _ = features.shape
        all_heads = self.linear(features).view(k, b, self.num_tasks, self.out)
        return all_heads[:, torch.arange(b, device=task.device), task]


HEADS = {"single": SingleHead, "multi": MultiHead}


class EnsembleMLP(nn.Module):
    """K task-conditioned MLPs evaluated together: (x[B, in], task[B]) -> [K, B, out]."""

    def __init__(self, ensemble: int, in_features: int, out_features: int, num_tasks: int,
                 hidden_sizes: tuple[int, ...], head: str, task_input: bool, layer_norm: bool):
        super().__init__()
        self.ensemble, self.num_tasks, self.task_input = ensemble, num_tasks, task_input
        sizes = [in_features + (num_tasks if task_input else 0), *hidden_sizes]
        self.layers = nn.ModuleList(EnsembleLinear(ensemble, a, b) for a, b in zip(sizes, sizes[1:]))
        # Continual World puts a LayerNorm after the first layer.
        self.norm = nn.LayerNorm(sizes[1]) if layer_norm else None
        self.head = HEADS[head](ensemble, sizes[-1], out_features, num_tasks)

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        if self.task_input:
            x = torch.cat([x, F.one_hot(task, self.num_tasks).to(x.dtype)], dim=-1)
        h = x.expand(self.ensemble, *x.shape)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i == 0 and self.norm is not None:
                h = self.norm(h)
            h = F.relu(h)
        return self.head(h, task)


LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class SquashedGaussianActor(nn.Module):
    """pi(a|s, task): a Gaussian squashed by tanh into the action box (SAC, Haarnoja et al. 2018)."""

    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, **mlp_kwargs):
        super().__init__()
        self.net = EnsembleMLP(1, obs_dim, 2 * action_dim, num_tasks, **mlp_kwargs)

    def forward(self, obs: torch.Tensor, task: torch.Tensor):
        mean, log_std = self.net(obs, task)[0].chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(self, obs: torch.Tensor, task: torch.Tensor):
        """Reparameterised sample a = tanh(u), u ~ N(mean, std), and its log-probability."""
        mean, log_std = self(obs, task)
        u = mean + log_std.exp() * torch.randn_like(mean)
        log_prob = (-0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std
                    - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh(u)/du| = log(1 - tanh(u)^2), written in a numerically stable form.
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob

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


class TwinCritic(nn.Module):
    """Q1(s, a, task) and Q2(s, a, task), fused: returns [2, B]."""

    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, **mlp_kwargs):
        super().__init__()
        self.net = EnsembleMLP(2, obs_dim + action_dim, 1, num_tasks, **mlp_kwargs)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1), task).squeeze(-1)
