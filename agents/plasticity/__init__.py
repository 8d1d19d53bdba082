"""Plasticity: diagnostics of how much the networks can still learn (diagnostics.py) and remedies
for its loss (remedies.py on parameters, units.py on units), configured by the `plasticity`
section (config.py). Each remedy is a learner hook (agents/hooks.py) that composes with every
continual strategy and balancer; the learner's side of the loop (launch/loop/learning.py) builds
them with `make_remedies` and calls `stage_started` at each stage start."""

from __future__ import annotations

from agents.plasticity.config import PlasticityConfig
from agents.plasticity.diagnostics import Diagnostics
from agents.plasticity.remedies import FreshWeights, L2Init, Parseval, Remedy, Reset, ShrinkPerturb
from agents.plasticity.units import ContinualBackprop, ReDo

__all__ = ["PlasticityConfig", "Diagnostics", "Remedy", "make_remedies", "make_diagnostics"]


def make_remedies(cfg: PlasticityConfig, learner, strategy, build_networks, seed: int, sample_probe) -> list[Remedy]:
    """The remedies the config turns on, in a fixed order. build_networks(): a fresh (actor, critic);
    sample_probe(rng): a probe batch from replay."""
    fresh = FreshWeights(build_networks, seed, learner.device)
    common = (learner, strategy, cfg.networks, fresh)
    remedies: list[Remedy] = []
    if cfg.l2_init:
        remedies.append(L2Init(*common, coef=cfg.l2_init))
    if cfg.parseval:
        remedies.append(Parseval(*common, coef=cfg.parseval, scale=cfg.parseval_scale))
    if cfg.shrink_perturb:
        remedies.append(ShrinkPerturb(*common, shrink=cfg.shrink, perturb=cfg.perturb, every=cfg.shrink_perturb_every))
    if cfg.reset:
        remedies.append(Reset(*common, layers=cfg.reset, temperature=cfg.reset_temperature))
    if cfg.redo:
        remedies.append(ReDo(*common, tau=cfg.redo_tau, every=cfg.redo_every, sample=sample_probe, seed=seed))
    if cfg.cbp:
        remedies.append(ContinualBackprop(*common, rate=cfg.cbp, maturity=cfg.cbp_maturity, decay=cfg.cbp_decay,
                                          seed=seed))
    return remedies


def remedy_state(remedies: list[Remedy]) -> dict:
    """What a checkpoint keeps of the remedies: each one's state and the fresh draws made so far."""
    return {"remedies": [r.state_dict() for r in remedies], "draws": remedies[0].fresh.draws if remedies else 0}


def load_remedy_state(remedies: list[Remedy], state: dict) -> None:
    for remedy, saved in zip(remedies, state["remedies"], strict=True):
        remedy.load_state_dict(saved)
    for remedy in remedies:
        remedy.fresh.draws = state["draws"]


def make_diagnostics(cfg: PlasticityConfig, learner, seed: int) -> Diagnostics | None:
    return Diagnostics(learner, cfg.probe_rows, seed) if cfg.diagnostics else None
