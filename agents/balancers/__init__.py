"""Multi-task loss balancing: how per-task losses become one gradient, one flag away
(`--balancer`, config section `balance`). A new method is one class (base.py: the interface)
plus one line in `BALANCERS`.

    mean         unitary scalarization: the mean of the task losses (default; Kurin et al. 2022)
    uncertainty  learned per-task log variances (Kendall et al. 2018)          weighting.py
    gradnorm     gradient-norm balancing (Chen et al. 2018)                    weighting.py
    famo         fast adaptive multitask optimization (Liu et al. 2023)        weighting.py
    pcgrad, cagrad, mgda, nashmtl, upgrad   gradient combination (torchjd)     gradients.py

`balance.networks` says which losses a method balances; the others use the mean. Its default:
critic, actor and temperature for the gradient combiners (as mtrl applies PCGrad and CAGrad),
the critic only for the loss weightings (as FAMO's Meta-World code for FAMO; its uncertainty
weighting also weights the actor): they read log L_i, L_i / L_i(0) or exp(-s_i) L_i, defined for
positive losses, and SAC's actor and temperature losses take any sign. With one shared
temperature (`sac.shared_temperature`) the combiners' default leaves it out: its Jacobian is
T x 1, one scalar per task, and PCGrad and MGDA return 0 whenever two tasks' scalars differ in
sign (the others nearly 0), so it would stop learning; it takes the mean, as Kurin et al.'s MT10
MGDA run (`+agent.multitask.alpha_use_naive_opt=True`). Naming it in `balance.networks` still
combines it (as mtrl's PCGrad does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from agents.balancers.base import Balancer, Gather, TaskLosses, no_gather
from agents.balancers.gradients import MGDA_NORMALIZE, cagrad, mgda, nashmtl, pcgrad, upgrad
from agents.balancers.weighting import FAMO, GradNorm, UncertaintyWeighting


@dataclass
class BalanceConfig:
    """Metadata: the constraints launch/config/overrides.py checks (registries read at check time)."""
    method: str = field(default="mean", metadata={"choices": lambda: BALANCERS})
    networks: tuple[str, ...] = field(  # the losses it balances (the rest: the mean)
        default=(), metadata={"choices": lambda: NETWORKS, "empty": "the method's default"})
    lr: float = field(default=0.025, metadata={"above": 0})  # Adam lr of the learned weights: uncertainty's s,
                                                             # GradNorm's w, FAMO's logits
    famo_decay: float = field(default=0.01, metadata={"min": 0})  # FAMO: weight decay gamma of its logits
                                                                  # (its MT10 script)
    gradnorm_alpha: float = field(default=1.5, metadata={"above": 0})  # GradNorm: asymmetry alpha (the paper:
                                                                       # 1.5 on NYUv2)
    cagrad_c: float = field(default=0.9, metadata={"min": 0})  # CAGrad: c (its paper: 0.9 on MT10, 0.5 on MT50)
    nashmtl_max_norm: float = field(  # Nash-MTL: the update's norm is clipped to this (authors' default)
        default=1.0, metadata={"min": 0, "note": "0: no clip"})
    nashmtl_update_every: int = field(default=1, metadata={"above": 0})  # Nash-MTL: solve for its weights
                                                                         # every this many updates (authors')
    mgda_normalize: str = field(  # MGDA: "none" (the paper) or "l2": unit-length task gradients (Kurin's MT10)
        default="none", metadata={"choices": MGDA_NORMALIZE})


BALANCERS = {
    "mean": lambda **_: Balancer(),
    "uncertainty": lambda **kw: UncertaintyWeighting(**kw),
    "gradnorm": lambda **kw: GradNorm(**kw),
    "famo": lambda **kw: FAMO(**kw),
    "pcgrad": pcgrad, "cagrad": cagrad, "mgda": mgda, "nashmtl": nashmtl, "upgrad": upgrad,
}
NEEDS_EVERY_TASK = ("gradnorm", "famo")  # their updates read every task's losses: one learner rank only
NETWORKS = ("critic", "actor", "alpha")
PER_TASK_GRADIENTS = ("gradnorm", "pcgrad", "cagrad", "mgda", "nashmtl", "upgrad")  # read each task's gradient
POSITIVE_LOSSES_ONLY = ("uncertainty", "gradnorm", "famo")  # the critic's loss only (see above)


def balanced_networks(cfg: BalanceConfig, shared_temperature: bool = False) -> tuple[str, ...]:
    """The networks whose task losses `cfg.method` combines (a shared temperature: not by default)."""
    if cfg.networks:
        return tuple(cfg.networks)
    if cfg.method in POSITIVE_LOSSES_ONLY:
        return ("critic",)
    return tuple(n for n in NETWORKS if not (shared_temperature and n == "alpha"))


def make_balancers(cfg: BalanceConfig, num_tasks: int, seed: int, device: torch.device,
                   shared_layers: dict[str, torch.Tensor], shared_temperature: bool = False) -> dict[str, Balancer]:
    """One balancer per network (each keeps its own state); the mean where `cfg` does not apply.
    shared_layers: per network, its last shared weight matrix (GradNorm's W), if it has one.
    shared_temperature: one temperature for every task (sac.shared_temperature)."""
    out = {}
    for network in NETWORKS:
        if network not in balanced_networks(cfg, shared_temperature) or cfg.method == "mean":
            out[network] = Balancer()
        elif cfg.method == "gradnorm" and shared_layers.get(network) is None:
            out[network] = Balancer()  # the temperatures share no layer: GradNorm has nothing to balance
        else:
            out[network] = BALANCERS[cfg.method](
                num_tasks=num_tasks, seed=seed, network=network, device=device, layer=shared_layers.get(network),
                lr=cfg.lr, famo_decay=cfg.famo_decay, gradnorm_alpha=cfg.gradnorm_alpha, cagrad_c=cfg.cagrad_c,
                nashmtl_max_norm=cfg.nashmtl_max_norm, nashmtl_update_every=cfg.nashmtl_update_every,
                mgda_normalize=cfg.mgda_normalize)
    return out


__all__ = ["BALANCERS", "BalanceConfig", "Balancer", "Gather", "MGDA_NORMALIZE", "NEEDS_EVERY_TASK", "NETWORKS",
           "PER_TASK_GRADIENTS",
           "POSITIVE_LOSSES_ONLY",
           "TaskLosses", "balanced_networks", "make_balancers", "no_gather"]
