"""Hypernetwork-generated layers (von Oswald et al. 2020) with MIP's stable parametrization
(Gonzalez Ortiz et al. 2024).

Each task t has a learned embedding e_t. A small MLP, the hypernetwork f_h, maps it to the
weights of that task's layers:

    theta_t = theta_0 + f_h([cos e_t, sin e_t])

  - [cos e, sin e] has the same norm for every e, so the generated weights do not scale with
    the embedding's magnitude (MIP's fix for unstable hypernetwork training);
  - theta_0 is a directly learned base and the hypernetwork learns the residual, which starts
    near zero (its last layer is initialised small).

Two uses (sac.head=hyper, sac.hyper_generates):
  head  `HyperHead`: the output layer is generated, the trunk below it is an ordinary shared MLP.
        All tasks' heads are computed at once (T is small) and each sample keeps its task's.
  all   every layer of the MLP is generated (von Oswald's setting; `EnsembleMLP` gathers each
        sample's task weights): meant for small networks, since each sample reads its own weights.
In a continual run the hypernetwork regularizer (continual/strategies/hnet.py) keeps f_h's output
for earlier embeddings where it was: it protects what is generated, so only with `all` does it
protect the whole policy.
"""

from __future__ import annotations

import torch
from torch import nn

from agents.networks import EnsembleLinear, gather_task


class HyperLayers(nn.Module):
    """Per task, K-ensemble linear layers of the given (in, out) sizes."""

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


class HyperHead(HyperLayers):
    """The output layer, generated per task: features [K, B, H] -> [K, B, out]."""

    def __init__(self, ensemble: int, hidden: int, out: int, num_tasks: int, **options):
        super().__init__(ensemble, [(hidden, out)], num_tasks, **options)

    def forward(self, features: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        ((weight, bias),) = self.generate()
        all_heads = torch.einsum("kbh,tkho->kbto", features, weight) + bias.permute(1, 0, 2).unsqueeze(1)
        return gather_task(all_heads, task)


def apply_generated(h: torch.Tensor, layer: tuple[torch.Tensor, torch.Tensor], task: torch.Tensor) -> torch.Tensor:
    """h [K, B, in] through each sample's own task's generated layer -> [K, B, out]."""
    weight, bias = layer
    return torch.einsum("kbi,bkio->kbo", h, weight[task]) + bias[task].transpose(0, 1)
