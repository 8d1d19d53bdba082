"""Continual learning without task boundaries (continual.boundaries=hidden): the settings it implies
and the rules it adds to the rule book (launch/config/validate.py registers them).

Implied settings, applied by build_config unless the user gave the key (a given value is honoured,
or refused by the rules below if it contradicts the setting):
  hidden     sac.task_input=false, sac.head=single (the networks see no task id);
             continual.reset_replay=false, continual.reset_optimizer=false (there is no stage start
             to reset at; with a detector, a given true resets at each detection)
  --method   each task-free method's own (METHOD_DEFAULTS: 3RL's context window), and
             replay.save_in_checkpoint=true: the memory is the method (a resume keeps it)
  3rl        hidden: continual.detector=change. The reference uses each task's start twice (a burn-in
             of random actions, and a batch split 1/(k+1) current task, continual/strategies/task_free.py);
             without boundaries both come at detected ones. continual.detector=none turns it off.
"""

from __future__ import annotations

HIDDEN_DEFAULTS = {"sac.task_input": False, "sac.head": "single", "continual.reset_replay": False,
                   "continual.reset_optimizer": False}
# 3RL (Caccia et al. 2023; its released runs' args.json): a context GRU of 30 units over the last 15 transitions
METHOD_DEFAULTS = {"3rl": {"sac.memory": "gru", "sac.memory_context": 15, "sac.memory_hidden": 30}}
TASK_CONDITIONED_TRUNKS = ("hyper", "care", "moore")  # trunks that read the task id (agents/trunks.py)


def implied(cfg) -> dict:
    """{key: value} the config's boundaries and method imply: a task-free method's memory is the method,
    so its checkpoints keep it (replay.save_in_checkpoint; given false, a resume refills it afresh)."""
    out = dict(HIDDEN_DEFAULTS) if cfg.continual.boundaries == "hidden" else {}
    if task_free_method(cfg):
        out["replay.save_in_checkpoint"] = True
    if cfg.continual.boundaries == "hidden" and cfg.continual.method == "3rl":
        out["continual.detector"] = "change"
    return {**out, **METHOD_DEFAULTS.get(cfg.continual.method, {})}


def task_free_method(cfg) -> bool:
    """Is the config's method a task-free one (its memory is the method)?"""
    return bool(getattr(_method(cfg), "task_free", False))


class _Defaults:  # a registered method that is not a Strategy (tests register such): the base class's answers
    task_free = needs_task_ids = False
    boundary_free = True
    stream_replay = ""


def _method(cfg):
    from continual.strategies import METHODS
    method = METHODS.get(cfg.continual.method)  # an unknown name: check_fields refuses it after
    return method if isinstance(method, type) and hasattr(method, "stream_replay") else _Defaults


def boundaries_need_a_sequence(cfg):
    c = cfg.continual
    if not c.sequence and (c.boundaries == "hidden" or c.blend_steps or c.detector):
        return "continual.boundaries, blend_steps and detector describe a task sequence: give one (--sequence)"


def detector_and_blending_need_hidden_boundaries(cfg):
    c = cfg.continual
    if c.boundaries == "given" and (c.detector or c.blend_steps):
        what = "continual.detector" if c.detector else "continual.blend_steps"
        return f"{what} needs continual.boundaries=hidden (with given boundaries every switch is announced)"


def hidden_networks_see_no_task(cfg):
    if cfg.continual.boundaries != "hidden":
        return None
    sac = cfg.sac
    if sac.task_input or sac.task_embedding_dim:
        return "continual.boundaries=hidden gives the networks no task id: set sac.task_input=false and " \
               "sac.task_embedding_dim=0"
    if sac.head != "single" or sac.trunk in TASK_CONDITIONED_TRUNKS or sac.encoder in TASK_CONDITIONED_TRUNKS:
        return f"continual.boundaries=hidden gives the networks no task id: sac.head={sac.head} / " \
               f"sac.trunk={sac.trunk} / sac.encoder={sac.encoder or 'none'} choose by task (use sac.head=single " \
               "and a trunk and encoder that read no task)"
    if cfg.balance.method != "mean":
        return f"balance.method {cfg.balance.method} balances per-task losses; with hidden boundaries there is " \
               "one task (use the mean)"


def method_fits_the_boundaries(cfg):
    c, method = cfg.continual, _method(cfg)
    if c.boundaries == "given" and getattr(method, "task_free", False):
        return f"--method {c.method} is a task-free method: it runs with --set continual.boundaries=hidden"
    if c.boundaries != "hidden":
        return None
    if method.needs_task_ids:
        return f"--method {c.method} keeps per-task state read by task id; it cannot run with hidden boundaries"
    if not method.boundary_free and not c.detector:
        return f"--method {c.method} acts at task boundaries: with continual.boundaries=hidden give it a detector " \
               f"(--set continual.detector=plateau or change)"


def resets_need_boundaries(cfg):
    c = cfg.continual
    if c.boundaries == "hidden" and not c.detector and (c.reset_replay or c.reset_optimizer):
        return "continual.reset_replay / reset_optimizer reset at task boundaries; with hidden boundaries they " \
               "need a detector (continual.detector) or false"


def stream_replay_holds_transitions(cfg):
    method, name = _method(cfg), cfg.continual.method
    if (method.stream_replay or name == "tfmas") and cfg.sac.memory != "none":
        return f"--method {name} keeps single transitions (a reservoir, a hard buffer): it runs without sac.memory"
    if method.stream_replay and cfg.replay.device == "learner":
        return f"--method {name} keeps its replay on the host (replay.device=host or auto)"
    if method.stream_replay == "recent" and cfg.replay.normalize_rewards:
        return f"--method {name} mixes new and replayed rows in one batch: it runs without replay.normalize_rewards"
    if name == "mir" and cfg.continual.replay_fraction >= 1:
        return "--method mir retrieves what an update on new experience would hurt: continual.replay_fraction < 1"
    if cfg.continual.method == "3rl" and (cfg.sac.memory != "gru" or not cfg.sac.memory_context):
        return "--method 3rl is SAC with a context window: sac.memory=gru with sac.memory_context > 0"
    if cfg.continual.method == "3rl" and cfg.continual.reset_replay:
        return "--method 3rl replays everything it has seen: continual.reset_replay must be false"


def target_visible_is_pointmass(cfg):
    if cfg.env.target_visible and cfg.env.suite != "pointmass":
        return f"env.target_visible is pointmass's; {cfg.env.suite} shows its goal unless env.goal_observable=false"


RULES = [boundaries_need_a_sequence, detector_and_blending_need_hidden_boundaries, hidden_networks_see_no_task,
         method_fits_the_boundaries, resets_need_boundaries, stream_replay_holds_transitions,
         target_visible_is_pointmass]


def check_blend(cfg, schedule) -> None:
    """blend_steps must fit in every stage (a blend is centred on its switch)."""
    from launch.errors import UserError
    shortest = min(stage.steps for stage in schedule.stages)
    if cfg.continual.blend_steps > shortest:
        raise UserError(f"continual.blend_steps={cfg.continual.blend_steps:,} is longer than a stage "
                        f"({shortest:,} env steps)")
    if cfg.continual.blend_steps and len(schedule.stages) > 1 and any(len(s.tasks) > 1 for s in schedule.stages):
        raise UserError("continual.blend_steps blends one task into the next: every stage needs a single task")
