"""Hypernetworks: per-task weights of K-ensemble linear layers generated from a learned task
embedding e_t, with MIP's stable parametrization (Gonzalez Ortiz et al. 2024):

    theta_t = theta_0 + f_h([cos e_t, sin e_t])

[cos e, sin e] has the same norm for every e, so the generated weights do not scale with the
embedding's magnitude; theta_0 is learned directly and f_h learns the residual, which starts near
zero (its output layer is initialised small). f_h is one of (`sac.hypernet`):

  mlp      one MLP emits every layer at once (von Oswald et al. 2020's hypernetwork; ours so far);
  chunked  Ehret et al. 2021's structured chunking (hypnettorch StructuredHMLP with their
           `simple_rnn_chunking`, cl_in_rnns): a group of layers is cut into chunks of `chunk_units`
           output units (a recurrent layer's input and hidden maps together, c rows of every gate
           tensor; so a chunk stays inside one gate when c divides the hidden size); each chunk has
           a learned embedding c_j and one MLP per group maps [c_j, cos e_t, sin e_t] (their order:
           chunk embedding first) to it. Every other layer is one chunk of its own (their default).
           Chunk embeddings start N(0, 1) (their default `std_normal_emb`);
  rnn      Chandra et al. 2023's RNN hypernetwork ("Continual Learning with Dependency Preserving
           Hypernetworks"): an LSTM unrolled over the chunks of the flat weight vector (`chunk_size`
           weights each, the last cut; a chunk may span two layers), step j reading the chunk's
           embedding c_j and the task's features, its state carried from chunk to chunk from zero, so each chunk
           depends on the ones before; one linear layer maps each step's h to its chunk. (The code
           concatenates [c_j, cos e_t, sin e_t], chunk embedding first as in the chunked kind.)
           `growth` (their network growth): each task has an input-to-hidden map of its own; when a
           task starts, its map starts as a copy of the last trained one, the earlier tasks' maps
           and the hidden-to-hidden map (after the first task) are frozen, so growing adds capacity
           and changes no earlier task's generated weights (`grow`).

Chandra et al.: the paper's text (arXiv 2209.07712, sections 3-4) could not be read from this
project's tools and no public code is attributed to the authors; what is built follows the abstract
(an RNN that generates the weights chunk by chunk, with regularisation and network growth) and an
unattributed `hypercl`-based implementation of it (LSTM over chunk embeddings concatenated with
the task embedding, zero initial state carried over chunks, a shared linear output layer; "hidden
state weights of LSTM are frozen after first task", per-task copies of the other LSTM weights).
Our choices where that is ambiguous: the LSTM's width is `sac.hyper_hidden` (theirs 96), the chunk
size `sac.hyper_chunk_size` (theirs 2586), one LSTM layer, the output layer is shared and trainable
(protected by the output regulariser, continual/strategies/hnet.py: their regulariser is von
Oswald's, and so is ours), MIP's parametrization around it as for every hypernetwork here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from agents.layers import EnsembleLinear

KINDS = ("mlp", "chunked", "rnn")


def _small_output(layer: nn.Linear) -> nn.Linear:
    """The residual starts small: theta_t ~ theta_0 at first."""
    with torch.no_grad():
        layer.weight.mul_(0.1)
        layer.bias.zero_()
    return layer


class StructuredChunks(nn.Module):
    """Ehret et al.'s structured chunked hypernetwork over `groups` of layers."""

    def __init__(self, ensemble: int, sizes, groups, in_features: int, hidden: int, chunk_embedding_dim: int):
        super().__init__()
        self.ensemble, self.sizes, self.groups = ensemble, sizes, groups
        self.chunk_embeddings, self.nets = nn.ParameterList(), nn.ModuleList()
        for layers, units in groups:
            chunks = sizes[layers[0]][1] // units
            per_chunk = sum(ensemble * (sizes[i][0] + 1) * units for i in layers)
            self.chunk_embeddings.append(nn.Parameter(torch.randn(chunks, chunk_embedding_dim)))
            self.nets.append(nn.Sequential(nn.Linear(chunk_embedding_dim + in_features, hidden), nn.ReLU(),
                                           _small_output(nn.Linear(hidden, per_chunk))))

    def forward(self, features: torch.Tensor, tasks=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """features [T, F] -> per layer (dweight [T, K, in, out], dbias [T, K, out])."""
        k, t = self.ensemble, len(features)
        out = [None] * len(self.sizes)
        for (layers, units), embeddings, net in zip(self.groups, self.chunk_embeddings, self.nets):
            n = len(embeddings)
            x = torch.cat([embeddings.expand(t, n, -1), features[:, None].expand(t, n, -1)], dim=-1)
            flat, at = net(x), 0  # [T, chunks, per_chunk]
            for i in layers:
                rows = self.sizes[i][0]
                weight = flat[..., at:at + k * rows * units].reshape(t, n, k, rows, units)
                at += k * rows * units
                bias = flat[..., at:at + k * units].reshape(t, n, k, units)
                at += k * units
                # chunk j holds output units [j c, (j + 1) c) of every layer in the group
                out[i] = (weight.permute(0, 2, 3, 1, 4).reshape(t, k, rows, n * units),
                          bias.permute(0, 2, 1, 3).reshape(t, k, n * units))
        return out


class ChunkRNN(nn.Module):
    """Chandra et al.'s RNN hypernetwork: an LSTM over the chunks of the flat weight vector."""

    def __init__(self, total: int, num_tasks: int, in_features: int, hidden: int, chunk_size: int,
                 chunk_embedding_dim: int, growth: bool):
        super().__init__()
        self.total, self.chunk_size, self.hidden, self.growth = total, chunk_size, hidden, growth
        chunks = math.ceil(total / chunk_size)
        self.chunk_embeddings = nn.Parameter(torch.randn(chunks, chunk_embedding_dim))
        inputs, bound = chunk_embedding_dim + in_features, 1.0 / math.sqrt(hidden)  # nn.LSTM's init
        copies = num_tasks if growth else 1  # growth: an input-to-hidden map per task
        self.input_maps = nn.ParameterList(nn.Parameter(torch.empty(inputs + 1, 4 * hidden).uniform_(-bound, bound))
                                           for _ in range(copies))  # the last row: the bias
        self.hidden_map = nn.Parameter(torch.empty(hidden + 1, 4 * hidden).uniform_(-bound, bound))
        self.output = _small_output(nn.Linear(hidden, chunk_size))

    def forward(self, features: torch.Tensor, tasks) -> torch.Tensor:
        """features [T, F], tasks [T] (the rows' task ids) -> the flat residual [T, total]."""
        t, n = len(features), len(self.chunk_embeddings)
        x = torch.cat([self.chunk_embeddings.expand(t, n, -1), features[:, None].expand(t, n, -1)], dim=-1)
        maps = torch.stack(list(self.input_maps))[tasks] if self.growth else self.input_maps[0].expand(t, -1, -1)
        gates_x = torch.baddbmm(maps[:, -1:], x, maps[:, :-1])  # [T, chunks, 4H]
        h = c = features.new_zeros(t, self.hidden)
        out = []
        for j in range(n):  # i, f, g, o as torch.nn.LSTM
            i, f, g, o = (gates_x[:, j] + h @ self.hidden_map[:-1] + self.hidden_map[-1]).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return self.output(torch.stack(out, dim=1)).flatten(1)[:, :self.total]

    def grow(self, new_tasks, earlier_tasks, copy: bool) -> None:
        """New tasks start: copy the last trained task's input map into theirs (copy=False on a
        resume: the checkpoint has them), freeze the earlier tasks' maps and the hidden map."""
        if not self.growth or not earlier_tasks:
            return
        with torch.no_grad():
            for task in new_tasks:
                if copy:
                    self.input_maps[task].copy_(self.input_maps[earlier_tasks[-1]])
        for task in earlier_tasks:
            self.input_maps[task].requires_grad_(False)
        self.hidden_map.requires_grad_(False)


class Hypernetwork(nn.Module):
    """Per-task weights of K-ensemble linear layers of the given (in, out) sizes (module docstring).

    groups (chunked): [(layer indices, output units per chunk)], every layer in exactly one group;
    default: each layer one chunk of its own."""

    def __init__(self, ensemble: int, sizes: list[tuple[int, int]], num_tasks: int, embedding_dim: int = 16,
                 hyper_hidden: int = 128, kind: str = "mlp", groups=None, chunk_size: int = 2586,
                 chunk_embedding_dim: int = 16, growth: bool = False):
        super().__init__()
        self.ensemble, self.sizes, self.kind = ensemble, sizes, kind
        self.embedding = nn.Parameter(torch.empty(num_tasks, embedding_dim).uniform_(-torch.pi, torch.pi))
        self.base = nn.ModuleList(EnsembleLinear(ensemble, i, o) for i, o in sizes)  # theta_0
        total = sum(ensemble * (i * o + o) for i, o in sizes)
        if kind == "mlp":
            self.hypernet = nn.Sequential(nn.Linear(2 * embedding_dim, hyper_hidden), nn.ReLU(),
                                          _small_output(nn.Linear(hyper_hidden, total)))
        elif kind == "chunked":
            groups = groups or [((i,), o) for i, (_, o) in enumerate(sizes)]
            self.hypernet = StructuredChunks(ensemble, sizes, groups, 2 * embedding_dim, hyper_hidden,
                                             chunk_embedding_dim)
        else:
            self.hypernet = ChunkRNN(total, num_tasks, 2 * embedding_dim, hyper_hidden, chunk_size,
                                     chunk_embedding_dim, growth)
        self.substitute: tuple[int, list] | None = None  # (task, its layers): continual/strategies/hnet.py's Fisher

    def task_axes(self) -> dict[str, tuple[int, int]]:
        return {"embedding": (0, 1)}  # row t: task t's embedding

    def generate(self, tasks=None, detach_embedding: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, (weight [T, K, in, out], bias [T, K, out]) for the given tasks (default:
        every task, in order); detach_embedding: the embeddings enter as constants."""
        ids = torch.arange(len(self.embedding), device=self.embedding.device) if tasks is None else \
            torch.as_tensor(tasks, dtype=torch.long, device=self.embedding.device).reshape(-1)
        e = self.embedding if tasks is None else self.embedding[ids]
        e = e.detach() if detach_embedding else e
        features = torch.cat([e.cos(), e.sin()], dim=-1)
        if self.kind == "chunked":
            layers = [(base.weight + dw, base.bias.squeeze(1) + db)
                      for base, (dw, db) in zip(self.base, self.hypernet(features))]
        else:
            delta = self.hypernet(features) if self.kind == "mlp" else self.hypernet(features, ids)
            k, layers, at = self.ensemble, [], 0
            for base, (i, o) in zip(self.base, self.sizes):
                weight = base.weight + delta[:, at:at + k * i * o].view(-1, k, i, o)
                at += k * i * o
                bias = base.bias.squeeze(1) + delta[:, at:at + k * o].view(-1, k, o)
                at += k * o
                layers.append((weight, bias))
        if self.substitute is not None:  # one task's layers replaced by given tensors (to differentiate by them)
            task, given = self.substitute
            row = (ids == task).view(-1, *[1] * 3)
            layers = [(torch.where(row, gw, w), torch.where(row.squeeze(-1), gb, b))
                      for (w, b), (gw, gb) in zip(layers, given)]
        return layers

    def grow(self, new_tasks, earlier_tasks, copy: bool = True) -> None:
        """`sac.hyper_growth` (rnn): ChunkRNN.grow; nothing for the other kinds."""
        if self.kind == "rnn":
            self.hypernet.grow(list(new_tasks), list(earlier_tasks), copy)
