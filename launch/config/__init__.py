"""One config tree: dataclass defaults < suite preset (presets/<suite>.yaml) < --config FILE
< named flags (--steps, --seed, ...) < --set key=value. The resolved tree is saved with the run.
Keys and values are checked by launch/config/overrides.py; this module holds the tree, the presets,
the cross-field validation, and the schedule a continual sequence resolves to."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from agents.auxiliary import AuxConfig
from agents.balancers import PER_TASK_GRADIENTS, BalanceConfig
from agents.sac.compiled import COMPILE_MODES
from agents.sac.config import SACConfig
from launch.config.overrides import merge, parse_override, read_yaml, set_key
from launch.errors import UserError

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass
class EnvConfig:
    suite: str = "metaworld"
    tasks: str = ""              # a preset (MT10, MT50, PM4, ...) or a comma list; "": suite default
    envs_per_task: int = 1       # training envs per task, stepped in lockstep


@dataclass
class ReplayConfig:
    capacity_per_task: int = 200_000
    save_in_checkpoint: bool = False  # also checkpoint the replay buffer (large)
    normalize_rewards: bool = False   # divide sampled rewards by their task's reward std (Kurin et al.); stored raw
    device: str = "auto"              # host | learner (stored and sampled on its device) | auto: learner if a GPU


EVAL_POLICIES = ("mean", "sample")
REPLAY_DEVICES = ("auto", "host", "learner")


@dataclass
class EvalConfig:
    every: int = 250_000          # env steps between evaluations (also at the start and the end)
    goals: int = 50               # episodes per task, one per fixed goal (Meta-World protocol: 50)
    policy: str = "mean"          # act with the policy's mean (tanh(mu)) or a sampled action (CW's tables)


@dataclass
class RunConfig:
    steps: int = 20_000_000       # total env steps over all tasks (MT10: 2M per task)
    seed: int = 0
    device: str = "auto"          # cpu | cuda | cuda:N | auto (the GPU when there is one)
    threads: int = 0              # the learner's intra-op threads; 0: sized to the free cores (launch/machine.py)
    checkpoint_every: int = 100_000
    keep_checkpoints: int = 2
    log_every: int = 10_000       # env steps between progress lines / training scalars
    engine: str = "polytask"      # polytask (our actor/learner loop) | rllib (RLlib's, launch/rllib_engine.py)


@dataclass
class ContinualConfig:
    """Continual runs (tasks one after another); see continual/schedule.py and continual/strategies.
    Defaults follow Continual World (Wołczyk et al. 2021) unless noted."""
    sequence: str = ""            # "": a multi-task run; else a preset (CW10, CW20, PM2, MT10, ...)
                                  # or stages task[+task][:steps],...
    steps_per_task: int = 1_000_000  # a stage's budget unless the sequence gives one; sets run.steps
    method: str = "none"          # none (fine-tuning) | l2 | ewc | online-ewc | si | mas | packnet | agem | replay
                                  # | bc | hnet
    regularize: str = ""          # which networks the method protects: actor | critic | both; "": the method's
                                  # default (CW: the actor; A-GEM: both, its reference gradient needs the critic)
    coef: float | None = None     # penalty weight; None: the method's default (CW: L2 1e5, EWC 1e4, MAS 1e4)
    reset_replay: bool = True     # drop earlier tasks' transitions at each new stage (methods that replay keep them)
    reset_optimizer: bool = True  # fresh optimizer state at each new stage
    importance_samples: int = 2560   # states used to compute EWC / MAS importances at a task's end (CW: 10 x 256)
    online_ewc_gamma: float = 0.9    # online EWC: F <- gamma * F + F_task (ours; not in CW)
    si_xi: float = 0.1               # SI damping xi in omega / (delta^2 + xi) (Zenke et al. 2017)
    packnet_retrain_steps: int = 100_000  # PackNet: learner updates on replay after each stage's pruning (CW)
    memory_per_task: int = 10_000    # A-GEM and BC: transitions / states kept per finished task
    agem_batch_size: int = 128       # A-GEM: memory transitions per reference gradient (CW: 128)
    agem_projection: str = "joint"   # A-GEM: joint (CW: one projection over actor + critic) | separate


BACKENDS = ("single", "local", "ray")


@dataclass
class RuntimeConfig:
    backend: str = "local"        # single (one loop, no workers) | local (actor processes) | ray
    actors: int | str = "auto"    # actor workers per learner rank; auto: sized to the machine (launch/machine.py)
    envs_per_actor: int = 0       # 0: env.envs_per_task envs for each task the actor steps
    chunk_steps: int = 64         # env steps an actor sends at once
    max_policy_lag: int = 1       # an actor refreshes its weights once it is this many versions behind
    publish_every: int = 1        # learner updates between weight publications
    ray_address: str = ""         # join this Ray cluster; "": start a private local one


SYNC_MODES = ("step", "local", "qsr")


@dataclass
class SyncConfig:
    """How torchrun's learner ranks stay in agreement (launch/distributed/ranks.py, launch/distributed/local_sgd.py)."""
    mode: str = "step"            # step: all-reduce gradients every step | local: average parameters every
                                  # `period` updates | qsr: every H = max(period_min, (qsr_alpha / lr)^2) updates
    period: int = 4               # local: H
    period_min: int = 2           # qsr: H_min (its H_base)
    qsr_alpha: float = 6e-4       # qsr: alpha; with the default rates (3e-4) H = 4 until they decay
    average_optimizer_state: bool = False  # local / qsr: also average Adam's moments (default: each rank its own)


ENGINES = ("polytask", "rllib")
RLLIB_ALGOS = ("sac", "ppo")


@dataclass
class RLlibConfig:
    """run.engine=rllib: RLlib's own knobs. The rest of the tree maps onto RLlib's settings
    (launch/rllib_engine.py says how); runtime.actors is the number of remote env runners."""
    algo: str = "sac"                  # sac | ppo
    envs_per_runner: int = 0           # envs each env runner steps; 0: every task's env.envs_per_task over the runners
    rollout_fragment_length: int = 0   # env steps per env per sample call; 0: runtime.chunk_steps / envs_per_runner
    ppo_batch_size: int = 4000         # PPO: env steps per training iteration (RLlib's train_batch_size_per_learner)
    ppo_minibatch_size: int = 128
    ppo_epochs: int = 10


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    aux: AuxConfig = field(default_factory=AuxConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    rllib: RLlibConfig = field(default_factory=RLlibConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)


def build_config(suite: str | None = None, config_file: str | None = None,
                 flags: dict | None = None, overrides: list[str] = ()) -> Config:
    """Resolve the config in precedence order (see module docstring). A continual run (one with
    continual.sequence) also gets presets/<suite>-continual.yaml right after the suite preset,
    and its task list and total steps from the sequence."""
    file_tree = read_yaml(config_file) if config_file else {}
    suite = suite or (file_tree.get("env") or {}).get("suite") or Config().env.suite

    def resolve(continual_preset: bool) -> Config:
        cfg = Config()
        for preset in (PRESETS_DIR / f"{suite}.yaml", PRESETS_DIR / f"{suite}-continual.yaml"):
            if preset.exists() and (continual_preset or not preset.stem.endswith("-continual")):
                merge(cfg, read_yaml(preset))
        merge(cfg, file_tree)
        cfg.env.suite = suite
        for key, value in (flags or {}).items():
            if value is not None:
                set_key(cfg, key, value)
        for text in overrides:
            set_key(cfg, *parse_override(text))
        return cfg

    cfg = resolve(continual_preset=False)
    if cfg.continual.sequence:
        cfg = resolve(continual_preset=True)
    given = ("update_order" in (file_tree.get("sac") or {}) or (flags or {}).get("sac.update_order") is not None
             or any(parse_override(text)[0] == "sac.update_order" for text in overrides))
    if cfg.continual.method == "agem" and cfg.continual.agem_projection == "joint" and not given:
        # The joint projection needs both gradients before either step; an explicit setting is
        # honoured, and refused by validate() if it is sequential.
        cfg.sac.update_order = "simultaneous"
    validate(cfg)
    return cfg


def plan_schedule(cfg: Config):
    """A continual run's Schedule (continual/schedule.py), built once per process from its sequence;
    it also sets the run's suite tasks and run.steps. None for a multi-task run."""
    if not cfg.continual.sequence:
        return None
    from continual.schedule import schedule_from
    from envs.registry import sequence_presets
    try:
        schedule = schedule_from(cfg.continual.sequence, sequence_presets(cfg.env.suite), cfg.continual.steps_per_task)
    except ValueError as e:
        raise UserError(str(e)) from None
    cfg.env.tasks = ",".join(schedule.names)
    cfg.run.steps = schedule.stages[-1].end
    return schedule


def single_task_configs(cfg: Config, schedule) -> list[tuple[str, Config]]:
    """The single-task reference runs of a continual config (what forward transfer and relative
    performance compare with): per distinct task of the sequence, the same settings on that task
    alone, for the longest stage budget the sequence gives it."""
    from envs.base import base_task_name
    budget: dict[str, int] = {}
    for stage in schedule.stages:
        for t in stage.tasks:
            task = base_task_name(schedule.names[t])
            budget[task] = max(budget.get(task, 0), stage.steps)
    out = []
    for task, steps in budget.items():
        single = copy.deepcopy(cfg)
        single.continual.sequence, single.continual.method = "", "none"
        single.env.tasks, single.run.steps = task, steps
        out.append((task, single))
    return out


def validate(cfg: Config) -> None:
    positive = {"run.steps": cfg.run.steps, "eval.goals": cfg.eval.goals,
                "run.checkpoint_every": cfg.run.checkpoint_every, "run.log_every": cfg.run.log_every,
                "env.envs_per_task": cfg.env.envs_per_task, "run.keep_checkpoints": cfg.run.keep_checkpoints,
                "replay.capacity_per_task": cfg.replay.capacity_per_task,
                "sac.batch_size_per_task": cfg.sac.batch_size_per_task,
                "runtime.chunk_steps": cfg.runtime.chunk_steps, "runtime.max_policy_lag": cfg.runtime.max_policy_lag,
                "runtime.publish_every": cfg.runtime.publish_every}
    actors = cfg.runtime.actors  # rllib: 0 = sample in the driver
    if actors != "auto" and not (isinstance(actors, int) and actors + (cfg.run.engine == "rllib") > 0):
        raise UserError(f"runtime.actors must be a positive number or auto, got {actors!r}")
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"{key} must be positive, got {value}")
    for key, value in {"eval.every": cfg.eval.every, "run.threads": cfg.run.threads,
                       "sac.warmup_steps_per_task": cfg.sac.warmup_steps_per_task,
                       "sac.updates_per_round": cfg.sac.updates_per_round,
                       "runtime.envs_per_actor": cfg.runtime.envs_per_actor}.items():
        if value < 0:
            raise UserError(f"{key} must be >= 0, got {value}")
    if cfg.replay.capacity_per_task < cfg.sac.batch_size_per_task:
        raise UserError(f"replay.capacity_per_task ({cfg.replay.capacity_per_task}) must hold at least one batch "
                        f"(sac.batch_size_per_task = {cfg.sac.batch_size_per_task})")
    if cfg.sac.critic_hidden_sizes and min(cfg.sac.critic_hidden_sizes) <= 0:
        raise UserError("sac.critic_hidden_sizes must be positive sizes (or empty: sac.hidden_sizes)")
    if not cfg.sac.hidden_sizes or min(cfg.sac.hidden_sizes) <= 0:
        raise UserError("sac.hidden_sizes must be a non-empty list of positive sizes")
    if cfg.runtime.backend not in BACKENDS:
        raise UserError(f"unknown backend {cfg.runtime.backend!r}; valid: {', '.join(BACKENDS)}")
    from agents.balancers import BALANCERS, MGDA_NORMALIZE, NETWORKS, POSITIVE_LOSSES_ONLY
    from agents.heads import HEADS
    from agents.trunks import ACTIVATIONS, TRUNKS
    if cfg.sac.encoder and cfg.sac.encoder not in TRUNKS:
        raise UserError(f"unknown sac.encoder {cfg.sac.encoder!r}; valid: {', '.join(TRUNKS)} (or empty: none)")
    for key, value, registry in (("sac.trunk", cfg.sac.trunk, TRUNKS), ("sac.head", cfg.sac.head, HEADS),
                                 ("sac.activation", cfg.sac.activation, ACTIVATIONS),
                                 ("balance.method", cfg.balance.method, BALANCERS)):
        if value not in registry:
            raise UserError(f"unknown {key} {value!r}; valid: {', '.join(registry)}")
    if not 0 < cfg.sac.tau <= 1 or not 0 <= cfg.sac.gamma <= 1:
        raise UserError("sac.tau must be in (0, 1] and sac.gamma in [0, 1]")
    if not 0 <= cfg.sac.encoder_tau <= 1:
        raise UserError("sac.encoder_tau must be in [0, 1] (0: the encoder follows sac.tau)")
    if cfg.sac.encoder_tau and not cfg.sac.encoder:
        raise UserError("sac.encoder_tau is the target rate of a shared encoder: set sac.encoder too")
    choices = {"sac.log_std_mode": (cfg.sac.log_std_mode, ("tanh", "clip")),
               "sac.update_order": (cfg.sac.update_order, ("sequential", "simultaneous")),
               "eval.policy": (cfg.eval.policy, EVAL_POLICIES),
               "sac.compile": (cfg.sac.compile, COMPILE_MODES), "replay.device": (cfg.replay.device, REPLAY_DEVICES),
               "balance.mgda_normalize": (cfg.balance.mgda_normalize, MGDA_NORMALIZE)}
    for key, (value, valid) in choices.items():
        if value not in valid:
            raise UserError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")
    if cfg.sac.compile != "none" and cfg.balance.method in PER_TASK_GRADIENTS:
        raise UserError(f"balance.method {cfg.balance.method} reads per-task gradients through forward hooks, which "
                        f"compiled passes do not run: use sac.compile=none with it")
    if not cfg.sac.log_std_min < cfg.sac.log_std_max:
        raise UserError("sac.log_std_min must be below sac.log_std_max")
    if cfg.sac.encoder and (not cfg.sac.encoder_sizes or min(cfg.sac.encoder_sizes) <= 0):
        raise UserError("sac.encoder_sizes must be a non-empty list of positive sizes")
    if cfg.sac.experts < 1 or cfg.sac.task_embedding_dim < 0:
        raise UserError("sac.experts must be positive and sac.task_embedding_dim >= 0")
    bronet = ([cfg.sac.encoder_sizes] if cfg.sac.encoder == "bronet" else []) + \
        ([cfg.sac.hidden_sizes, cfg.sac.critic_hidden_sizes] if cfg.sac.trunk == "bronet" else [])
    for sizes in bronet:
        if len(set(sizes)) > 1:
            raise UserError("a bronet trunk has one width: its sizes must repeat it, e.g. [512, 512, 512] "
                            "(a first layer and two residual blocks)")
    validate_aux(cfg)
    validate_schedule(cfg)
    b = cfg.balance
    if set(b.networks) - set(NETWORKS):
        raise UserError(f"balance.networks must name some of {', '.join(NETWORKS)}, got {list(b.networks)}")
    if b.method in POSITIVE_LOSSES_ONLY and set(b.networks) - {"critic"}:
        raise UserError(f"balance.method {b.method} weights log-losses or loss ratios, defined for the critic's "
                        f"positive loss only (SAC's actor and temperature losses take any sign): "
                        f"balance.networks=[critic]")
    if min(b.lr, b.gradnorm_alpha, b.nashmtl_update_every) <= 0 or min(b.famo_decay, b.cagrad_c,
                                                                       b.nashmtl_max_norm) < 0:
        raise UserError("balance.lr, gradnorm_alpha and nashmtl_update_every must be positive; "
                        "famo_decay, nashmtl_max_norm (0: no clip) and cagrad_c >= 0")
    if cfg.sac.actor_weight_decay < 0 or cfg.sac.max_grad_norm < 0:
        raise UserError("sac.actor_weight_decay and sac.max_grad_norm must be >= 0")
    if cfg.sac.trunk == "hyper" and cfg.sac.layer_norm:
        raise UserError("sac.trunk=hyper generates every trunk layer and has no LayerNorm: set sac.layer_norm=false")
    validate_continual(cfg)
    if cfg.run.engine not in ENGINES:
        raise UserError(f"unknown engine {cfg.run.engine!r}; valid: {', '.join(ENGINES)}")
    if cfg.rllib.algo not in RLLIB_ALGOS:
        raise UserError(f"unknown RLlib algorithm {cfg.rllib.algo!r}; valid: {', '.join(RLLIB_ALGOS)}")
    if min(cfg.rllib.envs_per_runner, cfg.rllib.rollout_fragment_length) < 0 or min(
            cfg.rllib.ppo_batch_size, cfg.rllib.ppo_minibatch_size, cfg.rllib.ppo_epochs) <= 0:
        raise UserError("rllib.envs_per_runner and rllib.rollout_fragment_length must be >= 0; "
                        "rllib.ppo_batch_size, ppo_minibatch_size and ppo_epochs positive")


def validate_schedule(cfg: Config) -> None:
    """The learning-rate schedule and the learner ranks' synchronization."""
    from agents.sac.lr_schedule import SCHEDULES
    sac, sync = cfg.sac, cfg.sync
    if sac.lr_schedule not in SCHEDULES:
        raise UserError(f"unknown sac.lr_schedule {sac.lr_schedule!r}; valid: {', '.join(SCHEDULES)}")
    if min(sac.lr_warmup_updates, sac.lr_schedule_updates) < 0 or not 0 <= sac.lr_final_fraction <= 1:
        raise UserError("sac.lr_warmup_updates and sac.lr_schedule_updates must be >= 0, "
                        "sac.lr_final_fraction in [0, 1]")
    if sync.mode not in SYNC_MODES:
        raise UserError(f"unknown sync.mode {sync.mode!r}; valid: {', '.join(SYNC_MODES)}")
    if min(sync.period, sync.period_min) < 1 or sync.qsr_alpha <= 0:
        raise UserError("sync.period and sync.period_min must be >= 1 and sync.qsr_alpha positive")


def validate_aux(cfg: Config) -> None:
    from agents.auxiliary import NAMES
    a = cfg.aux
    for name in NAMES:
        if getattr(a, name) < 0:
            raise UserError(f"aux.{name} is a loss weight and must be >= 0, got {getattr(a, name)}")
    if a.on not in ("", "encoder", "actor"):
        raise UserError(f"unknown aux.on {a.on!r}; valid: encoder, actor (or empty: the encoder if there is one)")
    if a.on == "encoder" and not cfg.sac.encoder:
        raise UserError("aux.on=encoder needs a shared encoder: set sac.encoder (e.g. mlp)")
    if a.hidden < 1 or a.pvn_tasks < 1 or a.pvn_actions < 1 or not 0 < a.pvn_rate < 1 or not 0 < a.pvn_tau <= 1:
        raise UserError("aux.hidden, aux.pvn_tasks and aux.pvn_actions must be positive, aux.pvn_rate in (0, 1), "
                        "aux.pvn_tau in (0, 1]")


def validate_continual(cfg: Config) -> None:
    from continual.strategies import METHODS
    c = cfg.continual
    if c.method not in METHODS:
        raise UserError(f"unknown continual.method {c.method!r}; valid: {', '.join(METHODS)}")
    if c.regularize not in ("", "actor", "critic", "both"):
        raise UserError(f"unknown continual.regularize {c.regularize!r}; valid: actor, critic, both")
    for key, value in {"continual.steps_per_task": c.steps_per_task, "continual.si_xi": c.si_xi,
                       "continual.importance_samples": c.importance_samples,
                       "continual.memory_per_task": c.memory_per_task,
                       "continual.agem_batch_size": c.agem_batch_size}.items():
        if value <= 0:
            raise UserError(f"{key} must be positive, got {value}")
    if c.coef is not None and c.coef < 0:
        raise UserError(f"continual.coef must be >= 0, got {c.coef}")
    if c.packnet_retrain_steps < 0 or not 0 <= c.online_ewc_gamma <= 1:
        raise UserError("continual.packnet_retrain_steps must be >= 0 and continual.online_ewc_gamma in [0, 1]")
    if c.agem_projection not in ("joint", "separate"):
        raise UserError(f"unknown continual.agem_projection {c.agem_projection!r}; valid: joint, separate")
    if c.method == "agem" and c.agem_projection == "joint" and cfg.sac.update_order != "simultaneous":
        raise UserError("A-GEM's joint projection needs sac.update_order=simultaneous "
                        "(or set continual.agem_projection=separate)")
    if c.method != "none" and not c.sequence:
        raise UserError(f"continual.method {c.method} needs a task sequence (--sequence)")
    if c.method == "hnet" and "hyper" not in (cfg.sac.head, cfg.sac.trunk):
        raise UserError("continual.method hnet regularizes generated weights: "
                        "set sac.head=hyper and/or sac.trunk=hyper")


def load_run_config(path: Path) -> Config:
    """The resolved config saved in a run directory (the `versions` and `schedule` sections are
    informational: the schedule follows from continual.sequence)."""
    tree = read_yaml(path)
    for informational in ("versions", "schedule", "launch"):
        tree.pop(informational, None)
    cfg = Config()
    merge(cfg, tree)
    validate(cfg)
    return cfg
