"""Output heads: features [K, B, H] and each sample's task [B] -> outputs [K, B, out].

A new head type is one class with the constructor `(ensemble, hidden, out, num_tasks, **options)`,
the call `head(features, task)`, a class attribute `per_task` (does it hold per-task parameters,
which continual methods leave to the task?), plus one line in `HEADS`. A module whose parameters
hold one slice per task declares them in `task_axes()` (agents/networks.py: task_axes).
"""

from __future__ import annotations

import torch
from torch import nn

from agents.hypernets import Hypernetwork
from agents.layers import EnsembleLinear, gather_task


class SingleHead(nn.Module):
    """One output layer shared by every task."""

    per_task = False

    def __init__(self, ensemble: int, hidden: int, out: int, num_tasks: int):
        super().__init__()
        self.linear = EnsembleLinear(ensemble, hidden, out)

    def forward(self, features: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


class MultiHead(nn.Module):
    """One output layer per task: all heads in one matmul, then each sample keeps its task's."""

    per_task = True

    def __init__(self, ensemble: int, hidden: int, out: int, num_tasks: int):
        super().__init__()
        self.out, self.num_tasks = out, num_tasks
        self.linear = EnsembleLinear(ensemble, hidden, out * num_tasks)

    def forward(self, features: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        k, b, _ = features.shape
        all_heads = self.linear(features).view(k, b, self.num_tasks, self.out)
        return gather_task(all_heads, task)

    def task_axes(self) -> dict[str, tuple[int, int]]:
        """Task t's output layer: columns [t * out, (t + 1) * out) of the fused layer."""
        return {"linear.weight": (2, self.out), "linear.bias": (2, self.out)}


class HyperHead(nn.Module):
    """The output layer, generated per task by a hypernetwork (agents/hypernets.py);
    all tasks' heads are computed at once (T is small) and each sample keeps its task's."""

    per_task = True

    def __init__(self, ensemble: int, hidden: int, out: int, num_tasks: int, **hyper):
        super().__init__()
        self.generator = Hypernetwork(ensemble, [(hidden, out)], num_tasks, **hyper)

    def forward(self, features: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        ((weight, bias),) = self.generator.generate()
        all_heads = torch.einsum("kbh,tkho->kbto", features, weight) + bias.permute(1, 0, 2).unsqueeze(1)
        return gather_task(all_heads, task)


HEADS = {"single": SingleHead, "multi": MultiHead, "hyper": HyperHead}
