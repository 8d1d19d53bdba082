"""Leaf building blocks shared by trunks, heads and hypernetworks (agents/hypernets.py; imports nothing of ours).

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
