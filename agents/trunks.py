"""Trunks: the shared layers between a network's input and its head.

    trunk(x [B, in], task [B]) -> features [K, B, out_features]

A trunk is built as `TRUNKS[name](ensemble, in_features, hidden_sizes, num_tasks, activation=...,
layer_norm=..., **options)` and says which of its parameters belong to one task
(`task_specific(name)`: a task embedding; those are left to their task by continual methods,
everything else is shared). A new encoder (CARE, MOORE, a wide residual critic) is one class
with that signature plus one line in `TRUNKS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agents.layers import EnsembleLinear, Hypernetwork


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)  # TensorFlow's default slope, which Continual World uses


ACTIVATIONS = {"relu": F.relu, "leaky_relu": _leaky_relu}


class MLPTrunk(nn.Module):
    """K MLPs evaluated together. With layer_norm the first layer is Dense -> LayerNorm -> tanh
    (Continual World's), the others Dense -> activation."""

    def __init__(self, ensemble: int, in_features: int, hidden_sizes: tuple[int, ...], num_tasks: int,
                 activation: str = "relu", layer_norm: bool = False):
        super().__init__()
        self.ensemble, self.out_features = ensemble, hidden_sizes[-1]
        self.activation = ACTIVATIONS[activation]
        sizes = [in_features, *hidden_sizes]
        self.norm = nn.LayerNorm(sizes[1]) if layer_norm else None
        self.layers = nn.ModuleList(EnsembleLinear(ensemble, a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        h = x.expand(self.ensemble, *x.shape)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            h = torch.tanh(self.norm(h)) if i == 0 and self.norm is not None else self.activation(h)
        return h

    def task_specific(self, name: str) -> bool:
        return False


class HyperTrunk(nn.Module):
    """Every layer generated per task by a hypernetwork (von Oswald et al. 2020's setting, with
    MIP's parametrization: agents/layers.py). All tasks' paths are computed in batched matmuls and
    each sample keeps its own task's features: T times the compute of one MLP, which is cheap for
    the small networks this is meant for (far cheaper than gathering weights per sample)."""

    def __init__(self, ensemble: int, in_features: int, hidden_sizes: tuple[int, ...], num_tasks: int,
                 activation: str = "relu", layer_norm: bool = False, embedding_dim: int = 16,
                 hyper_hidden: int = 128):
        super().__init__()
        if layer_norm:
            raise ValueError("a hypernetwork trunk has no LayerNorm")
        self.out_features = hidden_sizes[-1]
        self.activation = ACTIVATIONS[activation]
        sizes = [in_features, *hidden_sizes]
        self.generator = Hypernetwork(ensemble, list(zip(sizes, sizes[1:])), num_tasks, embedding_dim, hyper_hidden)

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        (w0, b0), *rest = self.generator.generate()                     # weight [T, K, in, out], bias [T, K, out]
        h = self.activation(torch.einsum("bi,tkio->tkbo", x, w0) + b0.unsqueeze(2))  # [T, K, B, H]
        for weight, bias in rest:
            h = self.activation(torch.einsum("tkbi,tkio->tkbo", h, weight) + bias.unsqueeze(2))
        t, k, b, width = h.shape
        return h.gather(0, task.view(1, 1, b, 1).expand(1, k, b, width)).squeeze(0)  # [K, B, H]

    def task_specific(self, name: str) -> bool:
        return name == "generator.embedding"


TRUNKS = {"mlp": MLPTrunk, "hyper": HyperTrunk}
