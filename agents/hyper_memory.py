"""A recurrent memory whose weights a hypernetwork generates per task (`sac.memory=gru|lstm` with
`sac.trunk=hyper`), Ehret et al. 2021's setting ("Continual learning in recurrent neural networks":
every weight of the main network comes from a task-conditioned hypernetwork; `--method hnet`
keeps what it generates for earlier tasks, continual/strategies/hnet.py).

The same network as agents/recurrent.py's Memory (Ni et al. 2022's embeddings of o_t, a_{t-1},
r_{t-1}, then one GRU or LSTM layer), plus the read-out embedding beside it (the actor's embed'(o_t),
the critic's shortcut(o_t, a_t)), all generated: one hypernetwork (agents/hypernets.py, any
`sac.hypernet`) emits, from task t's embedding, the three input embeddings, the recurrent layer's
input and hidden maps (W_ih [in, G H] and W_hh [H, G H] with their biases, G = 3 gates for a GRU,
4 for an LSTM, in torch's gate order and equations) and the read-out. A window is one task's, so
each window runs with its task's weights: only the tasks present are generated, and each task's
windows run together in plain matmuls (a Python loop over steps: slower than torch's fused
kernels).

theta_0 (the MIP base the generated residual is added to) starts as Ni et al.'s memory starts:
orthogonal recurrent maps, zero recurrent biases; the embeddings as nn.Linear's default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agents.hypernets import Hypernetwork

OBS_EMBED, ACTION_EMBED, REWARD_EMBED = 32, 16, 16  # as agents/recurrent.py (Ni et al.'s)


def _linear(x: torch.Tensor, layer: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x [..., in] through one task's (weight [in, out], bias [out])."""
    weight, bias = layer
    return torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], -1)


def _in_order(groups: list[tuple], order: torch.Tensor) -> tuple:
    """Per-task groups of (tensor | tuple of tensors | None) outputs joined back in the windows' order."""
    def join(values):
        if values[0] is None:
            return None
        if isinstance(values[0], tuple):
            return tuple(join([v[i] for v in values]) for i in range(len(values[0])))
        return torch.cat(values)[order]
    return tuple(join([g[i] for g in groups]) for i in range(len(groups[0])))


def recurrent_pass(cell: str, x: torch.Tensor, input_map, hidden_map, state: tuple):
    """torch's GRU / LSTM equations with one task's weights: x [B, L, in], state (h,) (an LSTM's
    (h, c)), each [B, H] -> (h [B, L, H], the final state, as given)."""
    gates_x = _linear(x, input_map)  # [B, L, G H]: the input's part of every gate, all steps at once
    weight_hh, bias_hh = hidden_map
    h, c = state if cell == "lstm" else (state[0], None)
    out = []
    for t in range(x.shape[1]):
        gates_h = torch.addmm(bias_hh, h, weight_hh)
        if cell == "gru":  # r, z, n (torch.nn.GRU): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
            xr, xz, xn = gates_x[:, t].chunk(3, dim=-1)
            hr, hz, hn = gates_h.chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        else:  # i, f, g, o (torch.nn.LSTM)
            i, f, g, o = (gates_x[:, t] + gates_h).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out, dim=1), ((h, c) if cell == "lstm" else (h,))


class HyperMemory(nn.Module):
    """(o_t, a_{t-1}, r_{t-1}, task) -> h_t, every weight generated for the window's task; also the
    read-out embedding of (readout_in) -> readout_out features."""

    def __init__(self, obs_dim: int, action_dim: int, cell: str, hidden: int, num_tasks: int,
                 readout: tuple[int, int], hyper_options: dict, chunk_units: int = 8):
        super().__init__()
        gates = 3 if cell == "gru" else 4
        self.cell, self.lstm, self.out_features = cell, cell == "lstm", hidden
        self.input_size = OBS_EMBED + ACTION_EMBED + REWARD_EMBED
        self.names = ("obs_embed", "action_embed", "reward_embed", "input_map", "hidden_map", "readout")
        sizes = [(obs_dim, OBS_EMBED), (action_dim, ACTION_EMBED), (1, REWARD_EMBED),
                 (self.input_size, gates * hidden), (hidden, gates * hidden), readout]
        # chunked (Ehret et al.): the recurrent maps in chunks of c output units, each other layer one chunk
        groups = [((0,), OBS_EMBED), ((1,), ACTION_EMBED), ((2,), REWARD_EMBED),
                  ((3, 4), chunk_units), ((5,), readout[1])]
        self.generator = Hypernetwork(1, sizes, num_tasks, groups=groups, **hyper_options)
        with torch.no_grad():  # Ni et al.'s recurrent init for theta_0: orthogonal_ on torch's [G H, in] matrix
            for index in (3, 4):
                base = self.generator.base[index]
                base.weight[0].copy_(nn.init.orthogonal_(torch.empty(base.weight.shape[2], base.weight.shape[1])).T)
                base.bias.zero_()

    def initial_state(self, batch: int, device=None):
        """A zero state, laid out as torch's recurrent layers lay it out ([1, B, H]; an LSTM's (h, c))."""
        h = torch.zeros(1, batch, self.out_features, device=device)
        return (h, h.clone()) if self.lstm else h

    def layers(self, task: torch.Tensor):
        """(the tasks present [P], each window's index among them [B], each layer's (weight [P, in, out],
        bias [P, out])): generated for the present tasks only."""
        present, index = torch.unique(task, return_inverse=True)
        generated = self.generator.generate(present)
        return present, index, {name: (w[:, 0], b[:, 0]) for name, (w, b) in zip(self.names, generated)}

    def forward(self, obs, prev_action, prev_reward, task, state=None, readout=None):
        """obs [B, L, d], prev_action [B, L, A], prev_reward [B, L], task [B] -> (h [B, L, H], final
        state) and, given `readout` [B, L, in], relu(read-out(readout)) with the same generated weights."""
        if state is None:
            h = torch.zeros_like(obs[:, 0, :1]).expand(obs.shape[0], self.out_features)
            state = (h, h) if self.lstm else (h,)
        else:  # torch's layout [1, B, H] -> [B, H]; (h,) for a GRU
            state = tuple(part[0] for part in state) if self.lstm else (state[0],)
        present, index, layers = self.layers(task)
        tasks = len(present)
        groups = [slice(None)] if tasks == 1 else [(index == p).nonzero().squeeze(1) for p in range(tasks)]
        outputs = []
        for p, rows in enumerate(groups):  # each task's windows with its weights: plain matmuls
            own = {name: (w[p], b[p]) for name, (w, b) in layers.items()}
            inputs = (None if x is None else x[rows] for x in (obs, prev_action, prev_reward, readout))
            outputs.append(self._pass(*inputs, tuple(part[rows] for part in state), own))
        h, final, read = outputs[0] if tasks == 1 else _in_order(outputs, torch.cat(groups).argsort())
        final = tuple(part.unsqueeze(0) for part in final)
        final = final if self.lstm else final[0]
        return (h, final) if readout is None else (h, final, read)

    def _pass(self, obs, prev_action, prev_reward, readout, state, layers):
        """One task's windows: (h, final state (h,) or (h, c), read-out features or None)."""
        x = torch.cat([F.relu(_linear(prev_action, layers["action_embed"])),
                       F.relu(_linear(prev_reward.unsqueeze(-1), layers["reward_embed"])),
                       F.relu(_linear(obs, layers["obs_embed"]))], dim=-1)
        h, final = recurrent_pass(self.cell, x, layers["input_map"], layers["hidden_map"], state)
        return h, final, None if readout is None else F.relu(_linear(readout, layers["readout"]))

    def readout(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """relu(read-out(x)) with each window's task's weights: x [B, L, in]."""
        _, index, layers = self.layers(task)
        weight, bias = layers["readout"]
        return F.relu(torch.einsum("bli,bio->blo", x, weight[index]) + bias[index].unsqueeze(1))
