"""Per-parameter importance estimates at the end of a task (EWC's Fisher, MAS), from
per-sample gradients taken with torch.func (vmap over samples, in chunks to bound memory).

Actor Fisher (Continual World's, for a Gaussian policy with mean mu and std sigma per action
dimension d): F = E_s[ sum_d ((d mu_d)^2 + 2 (d sigma_d)^2) / (sigma_d^2 + 1e-6) ], clipped below
at 1e-5. Critic Fisher: E[ sum_j (d Q_j)^2 ] over the twin critics (not clipped, as in CW).
MAS (Aljundi et al. 2018): E_s[ |d ||f(s)||^2 / d theta| ], f the network's output (actor: mean and
log-std; critic: both Q's).

Each estimator takes `States`: the network's inputs for n samples and a mask of their steps, and
returns {name: importance} for the parameters named in `names` (default: all); only those are
differentiated, the others enter as constants. A sample is one state (mask [n, 1]) for feed-forward
networks and 3RL's context windows, or a window of L steps (mask [n, L]) for recurrent networks
(`sac.memory`: the network reads the window from a zero state; each step's output is differentiated
on its own, so a window gives L per-step terms). Expectations are means over the real steps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.func import functional_call, jacrev, vmap

FISHER_FLOOR = 1e-5
CHUNK = 32


def _split(module, names):
    """(parameters to differentiate, the rest), both detached, by name."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    names = set(params) if names is None else set(names)
    return ({n: p for n, p in params.items() if n in names}, {n: p for n, p in params.items() if n not in names})


def _call(module, params, frozen, *args):
    return functional_call(module, {**frozen, **params}, args)


class States(NamedTuple):
    actor: tuple   # the actor's inputs, each [n, ...]
    critic: tuple  # the critic's inputs, each [n, ...] (the stored actions among them)
    mask: torch.Tensor  # [n, L]: the steps that count (L = 1 for single states)


def _mean_over_steps(params, per_chunk, inputs: tuple, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """sum over chunks of per_chunk(params, mask_chunk, *chunk_inputs) (a dict of sums over the
    chunk's real steps), / the real steps; chunks of about CHUNK steps bound the Jacobians' memory."""
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    n, length = mask.shape
    size = max(1, CHUNK // length)
    # recurrent layers run as their decomposition into cell steps: oneDNN's fused LSTM has no vmap
    # batching rule (torch falls back to a slow loop) and its backward fails under it
    with torch.backends.mkldnn.flags(enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None):
        for start in range(0, n, size):
            part = per_chunk(params, mask[start:start + size], *(x[start:start + size] for x in inputs))
            for name in total:
                total[name] += part[name]
    return {name: value / mask.sum().clamp_min(1) for name, value in total.items()}


def _weighted(term: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum over samples, steps (and outputs) of term [n, L, (k,) *shape] * weight [n, L, (k)]."""
    dims = tuple(range(weight.dim()))
    return (term * weight.view(*weight.shape, *[1] * (term.dim() - weight.dim()))).sum(dim=dims)


def _per_step(outputs):
    """outputs: one sample's network outputs with a leading [1] -> [L, k] (L = 1 for a single state)."""
    return outputs.reshape(-1, outputs.shape[-1])


def policy_steps(out):
    """An actor's (mean, log std) on one sample -> ((mean, std), std), each [L, A]: the std again as
    jacrev's aux output (the Fisher's scale)."""
    mean, log_std = out
    std = _per_step(log_std).exp()
    return (_per_step(mean), std), std


def q_steps(q: torch.Tensor) -> torch.Tensor:
    """A critic's Q [2, 1] or [2, 1, L] on one sample -> [L, 2]."""
    return q.reshape(2, -1).T


def gaussian_fisher_sum(d_mean, d_std, std, mask) -> torch.Tensor:
    """sum over samples, steps and action dims of ((d mu)^2 + 2 (d sigma)^2) / (sigma^2 + 1e-6):
    d_* [n, L, A, *shape], std [n, L, A], mask [n, L]."""
    return _weighted(d_mean.pow(2) + 2 * d_std.pow(2), mask[..., None] / (std.pow(2) + 1e-6))


def q_fisher_sum(d_q, mask) -> torch.Tensor:
    """sum over samples, steps and both Q's of (d Q)^2: d_q [n, L, 2, *shape], mask [n, L]."""
    return _weighted(d_q.pow(2), mask[..., None].expand(*mask.shape, 2))


def actor_fisher(actor, states: States, names=None) -> dict[str, torch.Tensor]:
    params, frozen = _split(actor, names)

    def outputs(params, *x):
        return policy_steps(_call(actor, params, frozen, *(v[None] for v in x)))

    def per_chunk(params, mask, *x):
        # vmap over jacrev, never over a bare forward pass: a recurrent layer's fused kernel has no
        # batching rule, and under jacrev it runs as its differentiable decomposition
        (d_mean, d_std), std = vmap(jacrev(outputs, has_aux=True), in_dims=(None, *[0] * len(x)))(params, *x)
        return {name: gaussian_fisher_sum(d_mean[name], d_std[name], std, mask) for name in params}

    with torch.no_grad():
        fisher = _mean_over_steps(params, per_chunk, states.actor, states.mask)
    return {name: f.clamp_min(FISHER_FLOOR) for name, f in fisher.items()}


def _q_values(critic, params, frozen, x):
    """[L, 2]: both Q's at each step of one sample."""
    return q_steps(_call(critic, params, frozen, *(v[None] for v in x)))


def critic_fisher(critic, states: States, names=None) -> dict[str, torch.Tensor]:
    params, frozen = _split(critic, names)

    def per_chunk(params, mask, *x):
        d_q = vmap(jacrev(lambda p, *v: _q_values(critic, p, frozen, v)), in_dims=(None, *[0] * len(x)))(params, *x)
        return {name: q_fisher_sum(d_q[name], mask) for name in params}

    with torch.no_grad():
        return _mean_over_steps(params, per_chunk, states.critic, states.mask)


def actor_mas(actor, states: States, names=None) -> dict[str, torch.Tensor]:
    params, frozen = _split(actor, names)

    def squared_norms(params, *x):  # [L]: ||f(s_t)||^2 at each step
        mean, log_std = _call(actor, params, frozen, *(v[None] for v in x))
        return _per_step(mean).pow(2).sum(-1) + _per_step(log_std).pow(2).sum(-1)

    def per_chunk(params, mask, *x):
        g = vmap(jacrev(squared_norms), in_dims=(None, *[0] * len(x)))(params, *x)  # [n, L, *shape]
        return {name: _weighted(g[name].abs(), mask) for name in params}

    with torch.no_grad():
        return _mean_over_steps(params, per_chunk, states.actor, states.mask)


def critic_mas(critic, states: States, names=None) -> dict[str, torch.Tensor]:
    params, frozen = _split(critic, names)

    def per_chunk(params, mask, *x):
        g = vmap(jacrev(lambda p, *v: _q_values(critic, p, frozen, v).pow(2).sum(-1)),
                 in_dims=(None, *[0] * len(x)))(params, *x)  # [n, L, *shape]
        return {name: _weighted(g[name].abs(), mask) for name in params}

    with torch.no_grad():
        return _mean_over_steps(params, per_chunk, states.critic, states.mask)
