"""Per-parameter importance estimates at the end of a task (EWC's Fisher, MAS), from
per-sample gradients taken with torch.func (vmap over samples, in chunks to bound memory).

Actor Fisher (Continual World's, for a Gaussian policy with mean mu and std sigma per action
dimension d): F = E_s[ sum_d ((d mu_d)^2 + 2 (d sigma_d)^2) / (sigma_d^2 + 1e-6) ], clipped below
at 1e-5. Critic Fisher: E[ sum_j (d Q_j)^2 ] over the twin critics (not clipped, as in CW).
MAS (Aljundi et al. 2018): E_s[ |d ||f(s)||^2 / d theta| ], f the network's output (actor: mean and
log-std; critic: both Q's).

Each estimator returns {name: importance} for the parameters named in `names` (default: all);
only those are differentiated, the others enter as constants.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, grad, jacrev, vmap

FISHER_FLOOR = 1e-5
CHUNK = 32


def _split(module, names):
    """(parameters to differentiate, the rest), both detached, by name."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    names = set(params) if names is None else set(names)
    return ({n: p for n, p in params.items() if n in names}, {n: p for n, p in params.items() if n not in names})


def _call(module, params, frozen, *args):
    return functional_call(module, {**frozen, **params}, args)


def _mean_over_samples(params, per_chunk, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """sum over chunks of per_chunk(params, *chunk_inputs) (a dict of summed values), / samples."""
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    n = len(inputs[0])
    for start in range(0, n, CHUNK):
        part = per_chunk(params, *(x[start:start + CHUNK] for x in inputs))
        for name in total:
            total[name] += part[name]
    return {name: value / n for name, value in total.items()}


def actor_fisher(actor, obs: torch.Tensor, task: torch.Tensor, names=None) -> dict[str, torch.Tensor]:
    params, frozen = _split(actor, names)

    def outputs(params, o, t):
        mean, log_std = _call(actor, params, frozen, o[None], t[None])
        return mean[0], log_std[0].exp()

    def per_chunk(params, o, t):
        d_mean, d_std = vmap(jacrev(outputs), in_dims=(None, 0, 0))(params, o, t)  # [n, A, *shape]
        _, std = vmap(outputs, in_dims=(None, 0, 0))(params, o, t)                  # [n, A]
        scale = 1.0 / (std.pow(2) + 1e-6)
        out = {}
        for name in params:
            term = d_mean[name].pow(2) + 2 * d_std[name].pow(2)
            out[name] = (term * scale.view(*scale.shape, *[1] * (term.dim() - 2))).sum(dim=(0, 1))
        return out

    with torch.no_grad():
        fisher = _mean_over_samples(params, per_chunk, (obs, task))
    return {name: f.clamp_min(FISHER_FLOOR) for name, f in fisher.items()}


def critic_fisher(critic, obs: torch.Tensor, action: torch.Tensor, task: torch.Tensor,
                  names=None) -> dict[str, torch.Tensor]:
    params, frozen = _split(critic, names)

    def q_values(params, o, a, t):
        return _call(critic, params, frozen, o[None], a[None], t[None])[:, 0]  # [2]

    def per_chunk(params, o, a, t):
        d_q = vmap(jacrev(q_values), in_dims=(None, 0, 0, 0))(params, o, a, t)  # [n, 2, *shape]
        return {name: d_q[name].pow(2).sum(dim=(0, 1)) for name in params}

    with torch.no_grad():
        return _mean_over_samples(params, per_chunk, (obs, action, task))


def actor_mas(actor, obs: torch.Tensor, task: torch.Tensor, names=None) -> dict[str, torch.Tensor]:
    params, frozen = _split(actor, names)

    def squared_norm(params, o, t):
        mean, log_std = _call(actor, params, frozen, o[None], t[None])
        return mean.pow(2).sum() + log_std.pow(2).sum()

    def per_chunk(params, o, t):
        g = vmap(grad(squared_norm), in_dims=(None, 0, 0))(params, o, t)
        return {name: g[name].abs().sum(dim=0) for name in params}

    with torch.no_grad():
        return _mean_over_samples(params, per_chunk, (obs, task))


def critic_mas(critic, obs: torch.Tensor, action: torch.Tensor, task: torch.Tensor,
               names=None) -> dict[str, torch.Tensor]:
    params, frozen = _split(critic, names)

    def squared_norm(params, o, a, t):
        return _call(critic, params, frozen, o[None], a[None], t[None]).pow(2).sum()

    def per_chunk(params, o, a, t):
        g = vmap(grad(squared_norm), in_dims=(None, 0, 0, 0))(params, o, a, t)
        return {name: g[name].abs().sum(dim=0) for name in params}

    with torch.no_grad():
        return _mean_over_samples(params, per_chunk, (obs, action, task))
