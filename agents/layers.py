"""Leaf building blocks shared by trunks, heads and hypernetworks (imports nothing of ours).

Every tensor carries a leading ensemble axis K: K=2 fuses SAC's twin critics into batched
matmuls, K=1 is the actor. Every forward is written so that torch.func.vmap can take
per-sample gradients through it (EWC's and MAS's importances need them).
"""

from __future__ import annotations

import math

import torch
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


def gather_task(all_tasks: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    """[K, B, T, out] -> [K, B, out]: each sample's own task's slice."""
    k, b, _, out = all_tasks.shape
    return all_tasks.gather(2, task.view(1, b, 1, 1).expand(k, b, 1, out)).squeeze(2)


class Hypernetwork(nn.Module):
    """Per-task weights of K-ensemble linear layers of the given (in, out) sizes, generated from a
    learned task embedding e_t with MIP's stable parametrization (Gonzalez Ortiz et al. 2024):

        theta_t = theta_0 + f_h([cos e_t, sin e_t])

    [cos e, sin e] has the same norm for every e, so the generated weights do not scale with the
    embedding's magnitude; theta_0 is learned directly and f_h learns the residual, which starts
    near zero (its last layer is initialised small)."""

    def __init__(self, ensemble: int, sizes: list[tuple[int, int]], num_tasks: int,
                 embedding_dim: int = 16, hyper_hidden: int = 128):
        super().__init__()
        self.ensemble, self.sizes = ensemble, sizes
        self.embedding = nn.Parameter(torch.empty(num_tasks, embedding_dim).uniform_(-torch.pi, torch.pi))
        self.base = nn.ModuleList(EnsembleLinear(ensemble, i, o) for i, o in sizes)  # theta_0
        total = sum(ensemble * (i * o + o) for i, o in sizes)
        self.hypernet = nn.Sequential(nn.Linear(2 * embedding_dim, hyper_hidden), nn.ReLU(),
                                      nn.Linear(hyper_hidden, total))
        with torch.no_grad():  # the residual starts small: theta_t ~ theta_0 at first
            self.hypernet[-1].weight.mul_(0.1)
            self.hypernet[-1].bias.zero_()

    def task_axes(self) -> dict[str, tuple[int, int]]:
        return {"embedding": (0, 1)}  # row t: task t's embedding

    def generate(self, embedding: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, (weight [T, K, in, out], bias [T, K, out]) for the given embeddings
        (default: every task's)."""
        e = self.embedding if embedding is None else embedding
        delta = self.hypernet(torch.cat([e.cos(), e.sin()], dim=-1))
        k, layers, at = self.ensemble, [], 0
        for base, (i, o) in zip(self.base, self.sizes):
            weight = base.weight + delta[:, at:at + k * i * o].view(-1, k, i, o)
            at += k * i * o
            bias = base.bias.squeeze(1) + delta[:, at:at + k * o].view(-1, k, o)
            at += k * o
            layers.append((weight, bias))
        return layers
