"""The config's rule book, part two: rules between fields, and between the config and the world it
runs in. A rule on one field (its choices, its bounds) is not here but in that field's metadata,
next to the field (launch/config/overrides.py checks it and words its message).

    validate(cfg)                      every field's constraints, then RULES in order
    check_launch(cfg, world, suite)    WORLD_RULES: the learner ranks, the suite, the RLlib engine;
                                       launch/train.py calls it before anything is built

A rule is a small function that returns the one-line message when the config breaks it, else None;
the first broken one is raised as a UserError (exit code 2). A setting the user gave is honoured or
refused, never replaced. `cfg` is a launch.config.Config (not imported: that package imports this)."""

from __future__ import annotations

import re

import torch

from agents.auxiliary import NAMES as AUX_LOSSES
from agents.balancers import NEEDS_EVERY_TASK, PER_TASK_GRADIENTS, POSITIVE_LOSSES_ONLY
from launch.config.overrides import check_fields
from launch.errors import UserError

RULES = []        # rule(cfg) -> message | None
WORLD_RULES = []  # rule(cfg, world, suite) -> message | None; world: learner ranks; suite: envs.base.Suite


def rule(fn):
    RULES.append(fn)
    return fn


def world_rule(fn):
    WORLD_RULES.append(fn)
    return fn


def validate(cfg) -> None:
    """One UserError line for the first field constraint or rule the config breaks."""
    from launch.config import boundaries, plasticity  # their rules: task-free learning, plasticity remedies
    check_fields(cfg)
    for check in boundaries.RULES + plasticity.RULES + RULES:
        if message := check(cfg):
            raise UserError(message)


def check_launch(cfg, world: int, suite) -> None:
    """The config against the world it is about to run in: `world` learner ranks (torchrun), the
    built `suite`, and, with run.engine=rllib, what that engine supports."""
    from launch.config import plasticity
    if cfg.run.engine == "rllib":
        check_engine(cfg, world)
    for check in WORLD_RULES + plasticity.WORLD_RULES:
        if message := check(cfg, world, suite):
            raise UserError(message)


# ---- between fields ---------------------------------------------------------------------------

@rule
def actors_positive_or_auto(cfg):
    actors = cfg.runtime.actors
    if actors == "auto" or (isinstance(actors, int) and actors > 0):
        return None
    if actors == 0 and cfg.run.engine == "rllib":  # RLlib: 0 env runners = sample in the driver
        return None
    return f"runtime.actors must be a positive number or auto, got {actors!r}"


@rule
def replay_holds_a_batch(cfg):
    if cfg.replay.capacity_per_task < cfg.sac.batch_size_per_task:
        return (f"replay.capacity_per_task ({cfg.replay.capacity_per_task}) must hold at least one batch "
                f"(sac.batch_size_per_task = {cfg.sac.batch_size_per_task})")


@rule
def encoder_tau_needs_an_encoder(cfg):
    if cfg.sac.encoder_tau and not cfg.sac.encoder:
        return "sac.encoder_tau is the target rate of a shared encoder: set sac.encoder too"


@rule
def encoder_has_layers(cfg):
    if cfg.sac.encoder and (not cfg.sac.encoder_sizes or min(cfg.sac.encoder_sizes) <= 0):
        return "sac.encoder_sizes must be a non-empty list of positive sizes"


@rule
def compiled_passes_run_no_gradient_hooks(cfg):
    if cfg.sac.compile != "none" and cfg.balance.method in PER_TASK_GRADIENTS:
        return (f"balance.method {cfg.balance.method} reads per-task gradients through forward hooks, which "
                f"compiled passes do not run: use sac.compile=none with it")


@rule
def log_std_range(cfg):
    if not cfg.sac.log_std_min < cfg.sac.log_std_max:
        return "sac.log_std_min must be below sac.log_std_max"


@rule
def bronet_has_one_width(cfg):
    sac = cfg.sac
    sizes = ([sac.encoder_sizes] if sac.encoder == "bronet" else []) + \
        ([sac.hidden_sizes, sac.critic_hidden_sizes] if sac.trunk == "bronet" else [])
    if any(len(set(s)) > 1 for s in sizes):
        return ("a bronet trunk has one width: its sizes must repeat it, e.g. [512, 512, 512] "
                "(a first layer and two residual blocks)")


@rule
def hyper_trunk_has_no_layer_norm(cfg):
    if cfg.sac.trunk == "hyper" and cfg.sac.layer_norm:
        return "sac.trunk=hyper generates every trunk layer and has no LayerNorm: set sac.layer_norm=false"


@rule
def aux_on_encoder_needs_an_encoder(cfg):
    if cfg.aux.on == "encoder" and not cfg.sac.encoder:
        return "aux.on=encoder needs a shared encoder: set sac.encoder (e.g. mlp)"


@rule
def loss_weightings_balance_the_critic_only(cfg):
    b = cfg.balance
    if b.method in POSITIVE_LOSSES_ONLY and set(b.networks) - {"critic"}:
        return (f"balance.method {b.method} weights log-losses or loss ratios, defined for the critic's "
                f"positive loss only (SAC's actor and temperature losses take any sign): balance.networks=[critic]")


@rule
def agem_joint_projection_needs_simultaneous_updates(cfg):
    c = cfg.continual
    if c.method == "agem" and c.agem_projection == "joint" and cfg.sac.update_order != "simultaneous":
        return ("A-GEM's joint projection needs sac.update_order=simultaneous "
                "(or set continual.agem_projection=separate)")


@rule
def method_needs_a_sequence(cfg):
    if cfg.continual.method != "none" and not cfg.continual.sequence:
        return f"continual.method {cfg.continual.method} needs a task sequence (--sequence)"


# what reads single transitions, not recurrent SAC's windows of steps (agents/sac/recurrent.py), or needs
# a pass recurrent SAC does not make
MEMORY_REFUSES = {"continual.method": ("bc",)}


@rule
def memory_runs_on_windows(cfg):
    sac = cfg.sac
    if sac.memory == "none":
        return "sac.memory_context is a recurrent mode: set sac.memory=gru too" if sac.memory_context else None
    problems = []
    if sac.encoder:
        problems.append(f"sac.encoder={sac.encoder} (each recurrent network reads the observation through its memory)")
    if any(getattr(cfg.aux, n) for n in AUX_LOSSES):
        problems.append("auxiliary losses (they read single transitions)")
    if cfg.balance.method in PER_TASK_GRADIENTS:
        problems.append(f"balance.method={cfg.balance.method} (its per-task gradients skip the recurrent layers)")
    if cfg.continual.method in MEMORY_REFUSES["continual.method"]:
        problems.append(f"continual.method={cfg.continual.method} (it reads single transitions)")
    if cfg.continual.method == "hnet" and sac.trunk != "hyper":
        problems.append("continual.method=hnet without sac.trunk=hyper (the memory's weights are generated, "
                        "and so protected, only with sac.trunk=hyper)")
    if sac.trunk == "hyper" and cfg.continual.method in ("ewc", "online-ewc", "mas"):
        problems.append(f"continual.method={cfg.continual.method} with sac.trunk=hyper (importances through a "
                        "generated memory are not computed: use --method hnet)")
    if sac.trunk == "hyper" and sac.memory_context:
        problems.append("sac.trunk=hyper with sac.memory_context (3RL's context GRU is not generated)")
    if sac.trunk == "hyper" and sac.hypernet == "chunked" and sac.memory_hidden % sac.hyper_chunk_units:
        problems.append(f"sac.hyper_chunk_units={sac.hyper_chunk_units} with sac.memory_hidden={sac.memory_hidden} "
                        "(a chunk must stay inside one gate: the units must divide the hidden size)")
    if sac.compile != "none":
        problems.append(f"sac.compile={sac.compile}")
    if cfg.replay.device == "learner":
        problems.append("replay.device=learner (sequence replay is on the host)")
    if cfg.replay.normalize_rewards:
        problems.append("replay.normalize_rewards (the memories read rewards as inputs: raw while acting)")
    if sac.memory_context and sac.memory != "gru":
        problems.append(f"sac.memory_context={sac.memory_context} with sac.memory={sac.memory} (3RL's context "
                        "window runs through a GRU: sac.memory=gru)")
    if sac.memory_context and sac.memory_burn_in:
        problems.append("sac.memory_burn_in with sac.memory_context (a context window has no stored state to warm up)")
    if sac.memory_burn_in >= sac.memory_sequence:
        problems.append(f"sac.memory_burn_in={sac.memory_burn_in} (it leaves no step of a "
                        f"{sac.memory_sequence}-step window to learn from)")
    if problems:
        return f"sac.memory={sac.memory} does not support yet: {'; '.join(problems)}"
    return None


@rule
def hypernet_settings_need_a_hypernetwork(cfg):
    sac = cfg.sac
    if sac.hypernet != "mlp" and "hyper" not in (sac.head, sac.trunk):
        return f"sac.hypernet={sac.hypernet} shapes hypernetworks: set sac.trunk=hyper and/or sac.head=hyper"
    if sac.hyper_growth and (sac.hypernet != "rnn" or cfg.continual.method != "hnet"):
        return ("sac.hyper_growth is Chandra et al.'s growth of the RNN hypernetwork at each task's start: "
                "it needs sac.hypernet=rnn and --method hnet")
    return None


@rule
def hnet_fisher_needs_hnet(cfg):
    if cfg.continual.hnet_fisher and cfg.continual.method != "hnet":
        return f"continual.hnet_fisher weights the hnet regularizer; continual.method is {cfg.continual.method}"
    return None


@rule
def hnet_needs_generated_weights(cfg):
    if cfg.continual.method == "hnet" and "hyper" not in (cfg.sac.head, cfg.sac.trunk):
        return "continual.method hnet regularizes generated weights: set sac.head=hyper and/or sac.trunk=hyper"


# ---- against the world: learner ranks and the suite (our loop's Trainer builds on these) ------------

@world_rule
def goals_exist(cfg, world, suite):
    if cfg.eval.goals > suite.num_goals:
        return f"eval.goals must be at most {suite.num_goals} for {suite.name}, got {cfg.eval.goals}"


@rule
def video_size_is_width_by_height(cfg):
    match = re.fullmatch(r"(\d+)x(\d+)", str(cfg.eval.video_size).strip())
    if not match or any(int(n) % 2 or not 16 <= int(n) <= 4096 for n in match.groups()):
        return f"eval.video_size must be WIDTHxHEIGHT with even numbers from 16 to 4096 (H.264), e.g. 256x256; " \
               f"got {cfg.eval.video_size!r}"


@rule
def videos_come_from_our_evaluator(cfg):
    if cfg.eval.video and cfg.run.engine == "rllib":
        return "eval.video records in polytask's evaluator; --engine rllib evaluates in RLlib (use the polytask engine)"


@world_rule
def videos_record_evaluation_episodes(cfg, world, suite):
    if cfg.eval.video > cfg.eval.goals:
        return f"eval.video records the first N of each task's {cfg.eval.goals} evaluation episodes (eval.goals); " \
               f"got {cfg.eval.video}"
    if cfg.eval.video and cfg.eval.video_frame_skip > suite.episode_length:
        return f"eval.video_frame_skip must be at most {suite.name}'s episode length, {suite.episode_length} " \
               f"steps (a film keeps every k-th step's frame); got {cfg.eval.video_frame_skip}"


@world_rule
def tf32_needs_a_gpu(cfg, world, suite):
    if cfg.sac.precision == "tf32" and (cfg.run.device == "cpu" or (cfg.run.device == "auto"
                                                                     and not torch.cuda.is_available())):
        return ("sac.precision=tf32 runs matmuls on a CUDA GPU's TF32 tensor cores; this run's learner is on the "
                "CPU (use fp32, bf16 or auto)")
    return None


@world_rule
def continual_needs_one_rank(cfg, world, suite):
    if cfg.continual.sequence and world > 1:
        return "continual runs (--sequence) train one stage at a time and need a single learner rank"


@world_rule
def every_rank_has_a_task(cfg, world, suite):
    if world > len(suite.tasks):  # launch/distributed/ranks.py: rank r trains tasks r, r + world, ...
        return f"{world} learner ranks but only {len(suite.tasks)} tasks: every rank needs a task"


@world_rule
def replay_checkpoint_needs_one_rank(cfg, world, suite):
    if cfg.replay.save_in_checkpoint and world > 1:
        return "replay.save_in_checkpoint is not supported with several learner ranks"


@world_rule
def balancer_reads_every_task(cfg, world, suite):
    if cfg.balance.method in NEEDS_EVERY_TASK and world > 1:
        return (f"balance.method {cfg.balance.method} reads every task's losses in one place; it "
                f"needs a single learner rank (the gradient combiners work across ranks)")


# ---- the RLlib engine (launch/rllib_engine.py) ------------------------------------------------

SUPPORTED_METHODS = ("none", "l2", "ewc", "online-ewc", "mas", "packnet")  # continual methods it runs


def check_engine(cfg, world: int = 1) -> None:
    """One UserError line naming every setting the RLlib engine cannot honour."""
    problems = []
    if world > 1:
        problems.append("torchrun learner ranks (RLlib scales its learners with its own num_learners)")
    if cfg.balance.method != "mean":
        problems.append(f"--balancer {cfg.balance.method} (RLlib's SAC loss is the mean over the batch)")
    if cfg.replay.normalize_rewards or cfg.sac.actor_weight_decay or cfg.sac.max_grad_norm:
        problems.append("the Kurin stabilizers (replay.normalize_rewards, sac.actor_weight_decay, sac.max_grad_norm)")
    if cfg.continual.method not in SUPPORTED_METHODS:
        problems.append(f"continual method {cfg.continual.method} (supported: {', '.join(SUPPORTED_METHODS)})")
    if cfg.rllib.algo == "ppo" and cfg.continual.sequence:
        problems.append("continual sequences with --algo ppo (use --algo sac)")
    if cfg.rllib.algo == "ppo" and any(getattr(cfg.aux, n) for n in AUX_LOSSES):
        problems.append("auxiliary losses with --algo ppo (use --algo sac)")
    if cfg.run.device not in ("cpu", "auto"):
        problems.append(f"--device {cfg.run.device} (the RLlib engine's learner runs on the CPU here)")
    if cfg.sac.compile != "none" or cfg.replay.device == "learner":
        problems.append("sac.compile and replay.device=learner (the GPU learner path is our loop's)")
    if cfg.sac.encoder_tau:
        problems.append("sac.encoder_tau (RLlib's target update has one rate: sac.tau)")
    if cfg.sac.precision == "bf16":  # auto: fp32 here (launch/rllib_engine.py)
        problems.append(f"sac.precision={cfg.sac.precision} (RLlib's learner runs its passes in fp32)")
    if cfg.sac.memory != "none":
        problems.append(f"sac.memory={cfg.sac.memory} (recurrent SAC runs in our loop: --engine polytask)")
    if cfg.continual.boundaries != "given":
        problems.append("continual.boundaries=hidden (task-free learning runs in our loop: --engine polytask)")
    from launch.config.plasticity import remedies_on
    if remedies_on(cfg):
        problems.append(f"plasticity.{remedies_on(cfg)[0]} (the plasticity remedies are hooks of our learner)")
    if cfg.sync.mode != "step" or cfg.sac.lr_schedule != "constant" or cfg.sac.lr_warmup_updates:
        problems.append("--sync local/qsr and sac.lr_schedule (RLlib's learners have their own)")
    if problems:
        raise UserError(f"--engine rllib does not support {'; '.join(problems)}")
