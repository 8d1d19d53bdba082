"""The `plasticity` section: diagnostics (on by default) and remedies (each 0 / off by default)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PlasticityConfig:
    """Metadata: the constraints launch/config/overrides.py checks (rules between fields:
    launch/config/plasticity.py)."""
    diagnostics: bool = True      # dormant units, srank, norms, entropy at every log point (diagnostics.py)
    probe_rows: int = field(default=256, metadata={"above": 0})  # the diagnostics' probe batch (transitions)
    networks: str = field(default="both", metadata={"choices": ("actor", "critic", "both")})  # what remedies treat
    # -- remedies (remedies.py: parameters; units.py: ReDo and CBP) --
    redo: bool = False            # ReDo: recycle tau-dormant units every redo_every updates
    redo_tau: float = field(default=0.1, metadata={"min": 0})  # ReDo's threshold on the unit score
    redo_every: int = field(default=1000, metadata={"above": 0})  # learner updates between recyclings
    cbp: float = field(default=0.0, metadata={"min": 0, "max": 1, "note": "a replacement rate; 0: off"})
                                  # continual backprop's replacement rate (theirs: 1e-4)
    cbp_maturity: int = field(default=100, metadata={"above": 0})  # updates before a unit may be replaced
    cbp_decay: float = field(default=0.99, metadata={"min": 0, "below": 1})  # the utility's running-average rate
    shrink_perturb: bool = False  # theta <- shrink * theta + perturb * theta_fresh at each stage start
    shrink: float = field(default=0.4, metadata={"min": 0, "max": 1})
    perturb: float = field(default=0.1, metadata={"min": 0})
    shrink_perturb_every: int = field(default=0, metadata={"min": 0})  # > 0: every this many updates
                                  # instead of at stage starts (the task-free setting has none)
    l2_init: float = field(default=0.0, metadata={"min": 0, "note": "a penalty weight; 0: off"})
                                  # lambda ||theta - theta_0||^2
    parseval: float = field(default=0.0, metadata={"min": 0, "note": "a penalty weight; 0: off"})
                                  # lambda sum_layers ||W W^T - s I||_F^2
    parseval_scale: float = field(default=2.0, metadata={"above": 0})  # s (theirs: 2, their init gain^2)
    reset: int = field(default=0, metadata={"min": 0})  # re-initialise the last k layers at each stage
                                  # start (0: off; k >= the network's depth: all of it)
    reset_temperature: bool = False  # with reset: every temperature back to sac.init_alpha too (theirs)
