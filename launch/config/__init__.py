"""One config tree: dataclass defaults < suite preset (presets/<suite>.yaml) < --config FILE
< named flags (--steps, --seed, ...) < --set key=value. The resolved tree is saved with the run.
This module holds the tree, the presets and the schedule a continual sequence resolves to. Where a
rule goes: a rule on one field is that field's metadata (choices, bounds), checked by
launch/config/overrides.py; a rule between fields, or between the config and the world it runs in
(learner ranks, the suite, the engine), is one rule in launch/config/validate.py."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from agents.auxiliary import AuxConfig
from agents.balancers import BalanceConfig
from agents.plasticity.config import PlasticityConfig
from agents.sac.config import SACConfig
from launch.config import boundaries
from launch.config.overrides import merge, parse_override, read_yaml, set_key
from launch.config.validate import validate
from launch.errors import UserError

PRESETS_DIR = Path(__file__).parent / "presets"


def _suites():
    from envs.registry import SUITES
    return SUITES


def _methods():
    from continual.strategies import METHODS
    return METHODS


# A field's metadata is its constraints (launch/config/overrides.py: check_fields): choices, bounds.
POSITIVE = {"above": 0}
AT_LEAST_0 = {"min": 0}


@dataclass
class EnvConfig:
    suite: str = field(default="metaworld", metadata={"choices": _suites, "name": "suite"})
    tasks: str = ""              # a preset (MT10, MT50, PM4, ...) or a comma list; "": suite default
    envs_per_task: int = field(default=1, metadata=POSITIVE)  # training envs per task, stepped in lockstep
    goal_observable: bool = True  # false: the goal's coordinates read 0 (Meta-World's ML benchmarks' partial
                                  # observability); pointmass never shows its target
    target_visible: bool = False  # pointmass: append the target to the observation, [x, y, target_x, target_y]
                                  # (a memoryless agent can tell its tasks apart without a task id)


@dataclass
class ReplayConfig:
    capacity_per_task: int = field(default=200_000, metadata=POSITIVE)
    save_in_checkpoint: bool = False  # also checkpoint the replay buffer (large)
    normalize_rewards: bool = False   # divide sampled rewards by their task's reward std (Kurin et al.); stored raw
    device: str = field(default="auto", metadata={"choices": ("auto", "host", "learner")})  # host | learner
                                      # (stored and sampled on its device) | auto: learner if a GPU


@dataclass
class EvalConfig:
    every: int = field(default=250_000, metadata=AT_LEAST_0)  # env steps between evaluations (also at the
                                                               # start and the end)
    goals: int = field(default=50, metadata=POSITIVE)  # episodes per task, one per fixed goal (Meta-World: 50)
    policy: str = field(default="mean", metadata={"choices": ("mean", "sample")})  # act with the policy's mean
                                  # (tanh(mu)) or a sampled action (CW's tables)
    # -- evaluation videos (launch/evaluation/videos.py): filmed by the evaluator, from its own episodes --
    video: int = field(default=0, metadata=AT_LEAST_0)  # episodes per task to record, the first N goals (0: none)
    video_every: int = field(default=1, metadata=POSITIVE)  # record at every k-th evaluation (and always at a
                                                            # continual stage's end and the run's)
    video_size: str = "256x256"   # WIDTHxHEIGHT in pixels, even numbers (H.264)
    video_frame_skip: int = field(default=1, metadata=POSITIVE)  # keep every k-th step's frame


@dataclass
class RunConfig:
    steps: int = field(default=20_000_000, metadata=POSITIVE)  # total env steps over all tasks (MT10: 2M per task)
    seed: int = 0
    device: str = "auto"          # cpu | cuda | cuda:N | auto (the GPU when there is one)
    threads: int = field(default=0, metadata=AT_LEAST_0)  # the learner's intra-op threads; 0: sized to the
                                                          # free cores (launch/machine.py)
    checkpoint_every: int = field(default=100_000, metadata=POSITIVE)
    keep_checkpoints: int = field(default=2, metadata=POSITIVE)
    log_every: int = field(default=10_000, metadata=POSITIVE)  # env steps between progress lines / training scalars
    engine: str = field(default="polytask", metadata={"choices": ("polytask", "rllib"), "name": "engine"})
                                  # polytask (our actor/learner loop) | rllib (RLlib's, launch/rllib_engine.py)


@dataclass
class ContinualConfig:
    """Continual runs (tasks one after another); see continual/schedule.py and continual/strategies.
    Defaults follow Continual World (Wołczyk et al. 2021) unless noted."""
    sequence: str = ""            # "": a multi-task run; else a preset (CW10, CW20, PM2, MT10, ...)
                                  # or stages task[+task][:steps],...
    steps_per_task: int = field(default=1_000_000, metadata=POSITIVE)  # a stage's budget unless the sequence
                                                                        # gives one; sets run.steps
    method: str = field(default="none", metadata={"choices": _methods})  # continual.strategies.METHODS;
                                                                         # none: fine-tuning
    regularize: str = field(default="", metadata={  # which networks the method protects (CW: the actor;
        "choices": ("actor", "critic", "both"),     # A-GEM: both, its reference gradient needs the critic)
        "empty": "the method's default"})
    coef: float | None = field(default=None, metadata=AT_LEAST_0)  # penalty weight; None: the method's
                                  # default (CW: L2 1e5, EWC 1e4, MAS 1e4)
    reset_replay: bool = True     # drop earlier tasks' transitions at each new stage (methods that replay keep them)
    reset_optimizer: bool = True  # fresh optimizer state at each new stage
    importance_samples: int = field(default=2560, metadata=POSITIVE)  # states used to compute EWC / MAS
                                                                      # importances at a task's end (CW: 10 x 256)
    online_ewc_gamma: float = field(default=0.9, metadata={"min": 0, "max": 1})  # online EWC: F <- gamma * F
                                                                                 # + F_task (ours; not in CW)
    si_xi: float = field(default=0.1, metadata=POSITIVE)  # SI damping xi in omega / (delta^2 + xi) (Zenke 2017)
    hnet_fisher: bool = False     # hnet: weight each generated weight's term by its Fisher at its task's end
                                  # (Ehret et al.'s optional form; continual/strategies/hnet.py)
    packnet_retrain_steps: int = field(default=100_000, metadata=AT_LEAST_0)  # PackNet: learner updates on
                                                                              # replay after each pruning (CW)
    memory_per_task: int = field(default=10_000, metadata=POSITIVE)  # A-GEM and BC: transitions / states kept
                                                                     # per finished task
    agem_batch_size: int = field(default=128, metadata=POSITIVE)  # A-GEM: memory transitions per reference
                                                                  # gradient (CW: 128)
    agem_projection: str = field(default="joint", metadata={"choices": ("joint", "separate")})  # A-GEM: joint
                                  # (CW: one projection over actor + critic) | separate
    # -- without task boundaries (launch/config/boundaries.py, launch/loop/learning.py) --
    boundaries: str = field(default="given", metadata={"choices": ("given", "hidden")})  # hidden: the learner
                                  # and the networks see no task id and no stage starts or ends; one replay
                                  # for the stream (the schedule drives the envs, the evaluator, the metrics)
    blend_steps: int = field(default=0, metadata=AT_LEAST_0)  # > 0: each switch blends over this many env
                                  # steps (centred on it): the next task's share of episodes rises 0 -> 1
    detector: str = field(default="", metadata={"choices": ("plateau", "change", "none"),
                                                "empty": "the method's default: change for 3rl, else none"})
                                  # hidden: detected boundaries run the method's end-of-task step
                                  # (continual/detectors.py); none: no detector, even for 3rl
    detector_window: int = field(default=5, metadata=POSITIVE)  # plateau: losses in its window (TF-MAS: 5)
    detector_block: int = field(default=100, metadata=POSITIVE)  # plateau / tfmas: learner updates whose mean
                                  # critic loss is one window value
    plateau_mean: float = field(default=0.2, metadata=POSITIVE)  # plateau: window mean below this fraction of
                                  # the peak's (TF-MAS: 0.2, of an absolute loss)
    plateau_variance: float = field(default=0.1, metadata=POSITIVE)  # plateau: window variance below this
                                  # fraction of the peak's squared mean (TF-MAS: 0.1, absolute)
    change_threshold: float = field(default=10.0, metadata=POSITIVE)  # change: Page-Hinkley alarm, in standard
                                  # deviations of episode returns
    change_tolerance: float = field(default=0.5, metadata=AT_LEAST_0)  # change: drift ignored, in standard
                                  # deviations (Page-Hinkley's delta)
    change_min_episodes: int = field(default=20, metadata=POSITIVE)  # change: episodes since the last alarm
                                  # before the next can fire
    change_scale: str = field(default="std", metadata={"choices": ("std", "mad")})  # change: returns measured
                                  # against their mean and standard deviation, or median and MAD (robust)
    tfmas_hard_buffer: int = field(default=30, metadata=POSITIVE)  # tfmas: highest-loss samples kept (TF-MAS: 30)
    replay_fraction: float = field(default=0.5, metadata={"above": 0, "max": 1})  # clear / mir: the batch's
                                  # replayed share (the rest: the newest experience; CLEAR: 0.5)
    recent_steps: int = field(default=10_000, metadata=POSITIVE)  # clear / mir: the newest env steps the
                                  # batch's new share is drawn from
    mir_candidates: int = field(default=5, metadata={"above": 1})  # mir: candidates drawn per replayed row
                                  # (MIR: 50 for 10)
    clear_policy_cloning: float = field(default=0.01, metadata=AT_LEAST_0)  # clear: KL(behaviour || pi) weight
    clear_value_cloning: float = field(default=0.005, metadata=AT_LEAST_0)  # clear: value-cloning weight


@dataclass
class RuntimeConfig:
    backend: str = field(default="local", metadata={"choices": ("single", "local", "ray"), "name": "backend"})
                                  # single (one loop, no workers) | local (actor processes) | ray
    actors: int | str = "auto"    # actor workers per learner rank; auto: sized to the machine (launch/machine.py)
    envs_per_actor: int = field(default=0, metadata=AT_LEAST_0)  # 0: env.envs_per_task envs for each task
                                                                 # the actor steps
    chunk_steps: int = field(default=64, metadata=POSITIVE)      # env steps an actor sends at once
    max_policy_lag: int = field(default=1, metadata=POSITIVE)    # an actor refreshes its weights once it is
                                                                 # this many versions behind
    publish_every: int = field(default=1, metadata=POSITIVE)     # learner updates between weight publications
    ray_address: str = ""         # join this Ray cluster; "": start a private local one


@dataclass
class SyncConfig:
    """How torchrun's learner ranks stay in agreement (launch/distributed/ranks.py, launch/distributed/local_sgd.py)."""
    mode: str = field(default="step", metadata={"choices": ("step", "local", "qsr")})
                                  # step: all-reduce gradients every step | local: average parameters every
                                  # `period` updates | qsr: every H = max(period_min, (qsr_alpha / lr)^2) updates
    period: int = field(default=4, metadata=POSITIVE)           # local: H
    period_min: int = field(default=2, metadata=POSITIVE)       # qsr: H_min (its H_base)
    qsr_alpha: float = field(default=6e-4, metadata=POSITIVE)   # qsr: alpha; with the default rates (3e-4)
                                                                # H = 4 until they decay
    average_optimizer_state: bool = False  # local / qsr: also average Adam's moments (default: each rank its own)


@dataclass
class RLlibConfig:
    """run.engine=rllib: RLlib's own knobs. The rest of the tree maps onto RLlib's settings
    (launch/rllib_engine.py says how); runtime.actors is the number of remote env runners."""
    algo: str = field(default="sac", metadata={"choices": ("sac", "ppo"), "name": "RLlib algorithm"})
    envs_per_runner: int = field(default=0, metadata=AT_LEAST_0)  # envs each env runner steps; 0: every
                                                                  # task's env.envs_per_task over the runners
    rollout_fragment_length: int = field(default=0, metadata=AT_LEAST_0)  # env steps per env per sample
                                                                  # call; 0: runtime.chunk_steps / envs_per_runner
    ppo_batch_size: int = field(default=4000, metadata=POSITIVE)  # PPO: env steps per training iteration
                                                                  # (RLlib's train_batch_size_per_learner)
    ppo_minibatch_size: int = field(default=128, metadata=POSITIVE)
    ppo_epochs: int = field(default=10, metadata=POSITIVE)


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
    plasticity: PlasticityConfig = field(default_factory=PlasticityConfig)
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

    def given(key: str) -> bool:  # did the user set it (file, named flag or --set)? presets do not count
        section, _, name = key.partition(".")
        return (name in (file_tree.get(section) or {}) or (flags or {}).get(key) is not None
                or any(parse_override(text)[0] == key for text in overrides))
    if cfg.continual.method == "agem" and cfg.continual.agem_projection == "joint" and not given("sac.update_order"):
        # The joint projection needs both gradients before either step; an explicit setting is
        # honoured, and refused by validate() if it is sequential.
        cfg.sac.update_order = "simultaneous"
    for key, value in boundaries.implied(cfg).items():  # hidden boundaries' and task-free methods' settings
        if not given(key):
            set_key(cfg, key, value)
    _no_detector_is_empty(cfg)
    validate(cfg)
    return cfg


def _no_detector_is_empty(cfg) -> None:
    """continual.detector=none, said explicitly (3RL's implied detector off), is recorded as no detector."""
    if cfg.continual.detector == "none":
        cfg.continual.detector = ""


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
    boundaries.check_blend(cfg, schedule)
    return schedule


def single_task_configs(cfg: Config, schedule) -> list[tuple[str, Config]]:
    """The single-task reference runs of a continual config (what forward transfer and relative
    performance compare with): per distinct task of the sequence, the same settings on that task
    alone, for the longest stage budget the sequence gives it, with the continual section at its
    defaults (no method, boundaries given)."""
    from envs.base import base_task_name
    budget: dict[str, int] = {}
    for stage in schedule.stages:
        for t in stage.tasks:
            task = base_task_name(schedule.names[t])
            budget[task] = max(budget.get(task, 0), stage.steps)
    out = []
    for task, steps in budget.items():
        single = copy.deepcopy(cfg)
        # one task alone has no continual settings: no method, boundaries to hide, switches to blend or
        # detect, stage starts to reset at (the network settings hidden boundaries imply, one head and
        # no task input, stay); runs that differ only there share references
        single.continual = ContinualConfig(steps_per_task=cfg.continual.steps_per_task)
        if boundaries.task_free_method(cfg):  # its replay in checkpoints is the method's (launch/config/boundaries.py)
            single.replay.save_in_checkpoint = ReplayConfig.save_in_checkpoint
        single.env.tasks, single.run.steps = task, steps
        out.append((task, single))
    return out


def load_run_config(path: Path) -> Config:
    """The resolved config saved in a run directory (the `versions` and `schedule` sections are
    informational: the schedule follows from continual.sequence)."""
    tree = read_yaml(path)
    for informational in ("versions", "schedule", "launch"):
        tree.pop(informational, None)
    cfg = Config()
    merge(cfg, tree)
    _no_detector_is_empty(cfg)
    validate(cfg)
    return cfg
