"""Trunks: the shared layers between a network's input and its head.

    trunk(x [B, in], task [B]) -> features [K, B, out_features]

A trunk is built as `TRUNKS[name](ensemble, in_features, hidden_sizes, num_tasks, activation=...,
layer_norm=..., **options)` and says which of its parameters belong to one task
(`task_specific(name)`: a task embedding, per-task mixing weights; those are left to their task
by continual methods, everything else is shared). A new encoder is one class with that signature
plus one line in `TRUNKS`:

    mlp     K MLPs (Continual World's LayerNorm + tanh first layer optional)
    hyper   every layer generated per task by a hypernetwork
    care    CARE's mixture of experts weighted from a task context (Sodhani et al. 2021)
    moore   MOORE's orthogonal mixture of experts (Hendawy et al. 2024)
    bronet  BRO/BRC's residual LayerNorm network (Nauman et al. 2024, 2025)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agents.hypernets import Hypernetwork
from agents.layers import EnsembleLinear


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
        self.recording: list[torch.Tensor] | None = None  # each layer's activations [K, B, H], while probed

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        h = x.expand(self.ensemble, *x.shape)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            h = torch.tanh(self.norm(h)) if i == 0 and self.norm is not None else self.activation(h)
            if self.recording is not None:  # the plasticity diagnostics' probe (agents/plasticity/diagnostics.py)
                self.recording.append(h)
        return h

    def task_specific(self, name: str) -> bool:
        return False


class HyperTrunk(nn.Module):
    """Every layer generated per task by a hypernetwork (von Oswald et al. 2020's setting, with
    MIP's parametrization: agents/layers.py). All tasks' paths are computed in batched matmuls and
    each sample keeps its own task's features: T times the compute of one MLP, which is cheap for
    the small networks this is meant for (far cheaper than gathering weights per sample)."""

    def __init__(self, ensemble: int, in_features: int, hidden_sizes: tuple[int, ...], num_tasks: int,
                 activation: str = "relu", layer_norm: bool = False, **hyper):
        super().__init__()
        if layer_norm:
            raise ValueError("a hypernetwork trunk has no LayerNorm")
        self.out_features = hidden_sizes[-1]
        self.activation = ACTIVATIONS[activation]
        sizes = [in_features, *hidden_sizes]
        self.generator = Hypernetwork(ensemble, list(zip(sizes, sizes[1:])), num_tasks, **hyper)  # agents/hypernets.py

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        (w0, b0), *rest = self.generator.generate()                     # weight [T, K, in, out], bias [T, K, out]
        h = self.activation(torch.einsum("bi,tkio->tkbo", x, w0) + b0.unsqueeze(2))  # [T, K, B, H]
        for weight, bias in rest:
            h = self.activation(torch.einsum("tkbi,tkio->tkbo", h, weight) + bias.unsqueeze(2))
        t, k, b, width = h.shape
        return h.gather(0, task.view(1, 1, b, 1).expand(1, k, b, width)).squeeze(0)  # [K, B, H]

    def task_specific(self, name: str) -> bool:
        return name == "generator.embedding"


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last axis with affine parameters of its own per ensemble member."""

    def __init__(self, ensemble: int, width: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ensemble, 1, width))
        self.bias = nn.Parameter(torch.zeros(ensemble, 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight + self.bias


def _mlp_layers(ensemble: int, sizes: list[int]) -> nn.ModuleList:
    return nn.ModuleList(EnsembleLinear(ensemble, a, b) for a, b in zip(sizes, sizes[1:]))


class CARETrunk(nn.Module):
    """CARE (Sodhani et al. 2021), as in its authors' code (facebookresearch/mtrl: the
    mixture-of-experts encoder in "attention" mode with a task encoder):

        z_ctx = MLP_ctx(ReLU(E[task]))                 a learned task embedding -> context (50-d)
        alpha = softmax(MLP_gate(z_ctx))               weights over k experts, from the context only
        z     = sum_j alpha_j expert_j(x)              experts: Linear(in, 50) - ReLU - Linear(50, 50)
        out   = MLP([z, z_ctx])                        the network's own layers (hidden_sizes)

    The encoder part (experts, context, gate) is computed once and shared by the ensemble
    members (mtrl: one critic encoder feeds both Q's); the MLP part is per member.
    Deviations: mtrl embeds task *descriptions* with a frozen language model (768-d RoBERTa
    vectors -> 100 -> 50); here the context starts from a learned embedding (mtrl's own option
    without language vectors). As a network's trunk the experts see that network's input (the
    critic's includes the action); with `sac.encoder=care` they see the observation only and the
    critic appends the action after the encoder, as in mtrl, whose actor then reads the encoder
    detached. mtrl's actor keeps a second, never-trained gate; here the actor reads the critic's.
    Initialisation as mtrl's (utils.weight_init on every Linear): Xavier-uniform weights and zero
    biases for the context and gate MLPs, the experts and the MLP; the embedding keeps N(0, 1).
    mtrl's CARE command (one shared output layer, encoder_tau 0.05) is, here, `sac.encoder=care
    sac.encoder_sizes=[100] sac.task_input=false sac.head=single sac.encoder_tau=0.05` (docs/representation.md):
    the MLP part is then one extra layer, which mtrl's encoder does not have, and the context
    sits in the critic's encoder, so the target critic's context lags at encoder_tau (mtrl's
    task encoder has no target copy)."""

    def __init__(self, ensemble: int, in_features: int, hidden_sizes: tuple[int, ...], num_tasks: int,
                 activation: str = "relu", layer_norm: bool = False, experts: int = 4, width: int = 50):
        super().__init__()
        self.ensemble, self.out_features = ensemble, hidden_sizes[-1]
        self.activation = ACTIVATIONS[activation]
        self.embedding = nn.Embedding(num_tasks, width)
        self.context = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                     nn.Linear(width, width))
        self.gate = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                  nn.Linear(width, experts))
        self.experts = _mlp_layers(experts, [in_features, width, width])
        self.layers = _mlp_layers(ensemble, [2 * width, *hidden_sizes])
        with torch.no_grad():  # mtrl's weight_init: Xavier-uniform weights (per expert / member), zero biases
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    module.bias.zero_()
                elif isinstance(module, EnsembleLinear):
                    for weight in module.weight:
                        nn.init.xavier_uniform_(weight)
                    module.bias.zero_()

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        context = self.context(F.relu(self.embedding(task)))                # [B, W]
        alpha = torch.softmax(self.gate(context), dim=-1)                   # [B, k]
        h = x.expand(len(self.experts[0].weight), *x.shape)                 # [k, B, in]
        h = self.experts[1](F.relu(self.experts[0](h)))                     # [k, B, W]
        mixture = torch.einsum("kbw,bk->bw", h, alpha)
        h = torch.cat([mixture, context], dim=-1).expand(self.ensemble, len(x), -1)
        for layer in self.layers:
            h = self.activation(layer(h))
        return h

    def task_specific(self, name: str) -> bool:
        return name.startswith("embedding.")

    def task_axes(self) -> dict[str, tuple[int, int]]:
        return {"embedding.weight": (0, 1)}  # row t: task t's embedding


def gram_schmidt(h: torch.Tensor) -> torch.Tensor:
    """[..., k, d] -> orthonormal rows, per leading index, in order 0..k-1 (classical Gram-Schmidt:
    each row minus its projections on the earlier unit rows, then normalised), as MOORE's
    OrthogonalLayer1D. Differentiable; no epsilon, like the original. Written with elementwise
    products and row sums: the einsum form ran as batched matmuls of [i x d] blocks per sample,
    ~3x slower forward and backward for MOORE's shapes (k = 4, d = 128-400, thousands of rows)."""
    basis = []
    for v in h.unbind(-2):
        w = v
        for u in basis:
            w = w - (v * u).sum(-1, keepdim=True) * u
        basis.append(w / w.norm(dim=-1, keepdim=True))
    return torch.stack(basis, dim=-2)


class MOORETrunk(nn.Module):
    """MOORE (Hendawy et al. 2024), as in its authors' code (moore/utils/mixture_layers.py,
    networks_sac.py): k experts, each an MLP of `hidden_sizes` (ReLU between layers, the last one
    linear), orthonormalised per sample by Gram-Schmidt, combined by a learned per-task weight
    vector (Linear(one-hot -> k), no bias, no softmax), then tanh:

        features = tanh(sum_j w_task,j u_j),   (u_1, ..., u_k) = GramSchmidt(expert_1(x), ..., expert_k(x))

    Every ensemble member (each twin critic) has its own experts and task weights, as MOORE's
    separate critics. Experts use torch's default init (MOORE's constructor sets Xavier, then its
    ParallelLayer resets it to the default); the task weights are Xavier-uniform."""

    def __init__(self, ensemble: int, in_features: int, hidden_sizes: tuple[int, ...], num_tasks: int,
                 activation: str = "relu", layer_norm: bool = False, experts: int = 4):
        super().__init__()
        self.ensemble, self.experts, self.out_features = ensemble, experts, hidden_sizes[-1]
        self.layers = _mlp_layers(ensemble * experts, [in_features, *hidden_sizes])
        bound = (6 / (num_tasks + experts)) ** 0.5  # Xavier-uniform, as MOORE's Linear(T -> k, bias=False)
        self.task_weights = nn.Parameter(torch.empty(ensemble, num_tasks, experts).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        h = x.expand(self.ensemble * self.experts, *x.shape)
        for i, layer in enumerate(self.layers):
            h = layer(h) if i == len(self.layers) - 1 else F.relu(layer(h))
        h = h.view(self.ensemble, self.experts, len(x), -1).transpose(1, 2)   # [K, B, k, d]
        u = gram_schmidt(h)
        w = self.task_weights[:, task]                                       # [K, B, k]
        return torch.tanh(torch.einsum("kbe,kbed->kbd", w, u))

    def task_specific(self, name: str) -> bool:
        return name == "task_weights"

    def task_axes(self) -> dict[str, tuple[int, int]]:
        return {"task_weights": (1, 1)}  # [K, T, k]: task t's mixing weights


class BroNetTrunk(nn.Module):
    """BroNet (Nauman et al.: BRO 2024, BRC 2025), as in their code (jaxrl/networks.py):

        x = ReLU(LN(Dense(x)));  then per block:  x = x + LN(Dense(ReLU(LN(Dense(x)))))

    hidden_sizes = (W, W, ..., W): the first Dense, then one residual block per further entry (BRC's
    critic: width 4096, 2 blocks; its actor: 256, 1 block). Dense layers are orthogonally
    initialised with gain sqrt(2), biases zero; LayerNorm eps 1e-6 (Flax's). Only the trunk is
    BRC's: its categorical critic, AdamW, reward normalisation and shared temperature are not."""

    def __init__(self, ensemble: int, in_features: int, hidden_sizes: tuple[int, ...], num_tasks: int,
                 activation: str = "relu", layer_norm: bool = False):
        super().__init__()
        width = hidden_sizes[0]
        if any(size != width for size in hidden_sizes):
            raise ValueError("a BroNet trunk has one width: sac.hidden_sizes must repeat it (width, width, ...)")
        self.out_features = width
        self.first = EnsembleLinear(ensemble, in_features, width)
        self.first_norm = EnsembleLayerNorm(ensemble, width, eps=1e-6)
        self.blocks = nn.ModuleList(nn.ModuleList([EnsembleLinear(ensemble, width, width),
                                                   EnsembleLayerNorm(ensemble, width, eps=1e-6),
                                                   EnsembleLinear(ensemble, width, width),
                                                   EnsembleLayerNorm(ensemble, width, eps=1e-6)])
                                    for _ in hidden_sizes[1:])
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, EnsembleLinear):
                    module.weight.copy_(torch.stack([nn.init.orthogonal_(torch.empty(w.shape), gain=2 ** 0.5)
                                                     for w in module.weight]))
                    module.bias.zero_()

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.first_norm(self.first(x.expand(len(self.first.weight), *x.shape))))
        for dense1, norm1, dense2, norm2 in self.blocks:
            h = h + norm2(dense2(F.relu(norm1(dense1(h)))))
        return h

    def task_specific(self, name: str) -> bool:
        return False


TRUNKS = {"mlp": MLPTrunk, "hyper": HyperTrunk, "care": CARETrunk, "moore": MOORETrunk, "bronet": BroNetTrunk}
