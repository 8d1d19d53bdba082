"""The plasticity section's rules between fields (launch/config/validate.py registers them): a remedy
is refused, one line, where it cannot do what it says."""

from __future__ import annotations

from dataclasses import fields

from agents.plasticity import PlasticityConfig

# a remedy's own settings: given without the remedy they would do nothing
SETTINGS_OF = {"redo": ("redo_tau", "redo_every"), "cbp": ("cbp_maturity", "cbp_decay"),
               "shrink_perturb": ("shrink", "perturb", "shrink_perturb_every"), "parseval": ("parseval_scale",),
               "reset": ("reset_temperature",)}
DEFAULTS = {f.name: f.default for f in fields(PlasticityConfig)}
REMEDIES = ("redo", "cbp", "shrink_perturb", "l2_init", "parseval", "reset")


def remedies_on(cfg) -> list[str]:
    return [name for name in REMEDIES if getattr(cfg.plasticity, name)]


def settings_need_their_remedy(cfg):
    p = cfg.plasticity
    for remedy, settings in SETTINGS_OF.items():
        given = [s for s in settings if getattr(p, s) != DEFAULTS[s]]
        if given and not getattr(p, remedy):
            return f"plasticity.{given[0]} is a setting of plasticity.{remedy}, which is off: turn it on or drop it"


def units_live_in_mlp_trunks(cfg):
    """ReDo, CBP and Parseval work on the layers of MLP trunks; the unit remedies need a hidden layer whose
    outgoing weights are shared in some network they treat."""
    p, sac = cfg.plasticity, cfg.sac
    layered = [name for name in ("redo", "cbp", "parseval") if getattr(p, name)]
    if not layered:
        return None
    if sac.trunk != "mlp" or sac.encoder:
        what = "recycles units of" if layered[0] != "parseval" else "regularises the layers of"
        return (f"plasticity.{layered[0]} {what} MLP trunks: it needs sac.trunk=mlp and no sac.encoder "
                f"(got sac.trunk={sac.trunk}{', sac.encoder=' + sac.encoder if sac.encoder else ''})")
    depth = {"actor": len(sac.hidden_sizes), "critic": len(sac.critic_hidden_sizes or sac.hidden_sizes)}
    treated = ("actor", "critic") if p.networks == "both" else (p.networks,)
    unit = [name for name in layered if name != "parseval"]
    if unit and sac.head != "single" and all(depth[net] == 1 for net in treated):
        return (f"plasticity.{unit[0]} has no unit to recycle: the one hidden layer of {' and '.join(treated)} "
                f"feeds per-task heads (sac.head={sac.head}), whose weights belong to each task")


def stage_remedies_need_stage_starts(cfg):
    p, c = cfg.plasticity, cfg.continual
    at_starts = [name for name in ("reset", "shrink_perturb") if getattr(p, name)
                 and not (name == "shrink_perturb" and p.shrink_perturb_every)]
    starts = bool(c.sequence) and (c.boundaries == "given" or bool(c.detector))
    if at_starts and not starts:
        why = "a multi-task run" if not c.sequence else "hidden boundaries without a detector"
        extra = " (or set plasticity.shrink_perturb_every)" if at_starts[0] == "shrink_perturb" else ""
        return f"plasticity.{at_starts[0]} acts at stage starts, and {why} has none{extra}"


RULES = [settings_need_their_remedy, units_live_in_mlp_trunks, stage_remedies_need_stage_starts]


def unit_remedies_need_one_rank(cfg, world, suite):
    unit = [name for name in ("redo", "cbp") if getattr(cfg.plasticity, name)]
    if unit and world > 1:
        return (f"plasticity.{unit[0]} picks units from each rank's own batch, so ranks would recycle different "
                f"units: it needs a single learner rank")


WORLD_RULES = [unit_remedies_need_one_rank]
