"""Our config tree as RLlib's AlgorithmConfig (launch/rllib_engine.py's docstring lists the mapping).

RLlib SAC's update-to-data ratio is its training_intensity; `training_intensity` sets it so that
the updates per env step equal our loop's, up to RLlib's rounding of the updates per sampling
round to an integer (see `training_intensity`: exact in the default layouts where the env runners
divide tasks x envs_per_task, else typically 1-4% off).
"""

from __future__ import annotations

from dataclasses import asdict


def env_runners(cfg) -> int:
    """runtime.actors as RLlib env runners; auto: one (RLlib's learner, not sampling, bounds its
    runs: BENCHMARKS.md, ~13 env-steps/s of SAC on a CPU against ~1,300 per env runner)."""
    return 1 if cfg.runtime.actors == "auto" else cfg.runtime.actors


def sizes(cfg, num_tasks: int, stage_lengths: tuple[int, ...] = ()) -> tuple[int, int, int]:
    """(remote env runners, envs per runner, rollout fragment length). One sampling round is
    fragment x envs x runners env steps, and the driver acts between rounds: for a continual run
    the default fragment is the largest up to runtime.chunk_steps / envs whose round divides every
    stage's length, so stages switch (and are evaluated) exactly at their boundaries.
    Raises ValueError when no fragment can (a stage length that is not a multiple of envs x runners)."""
    runners = env_runners(cfg)
    envs = cfg.rllib.envs_per_runner or max(1, -(-num_tasks * cfg.env.envs_per_task // max(runners, 1)))
    fragment = cfg.rllib.rollout_fragment_length or max(1, cfg.runtime.chunk_steps // envs)
    if stage_lengths and not cfg.rllib.rollout_fragment_length:
        per_step = envs * max(runners, 1)
        fitting = [f for f in range(fragment, 0, -1) if all(n % (f * per_step) == 0 for n in stage_lengths)]
        if not fitting:
            raise ValueError(f"every stage's length must be a multiple of the env steps RLlib samples at once "
                             f"({envs} envs x {max(runners, 1)} env runners = {per_step}), for stages to switch at "
                             f"their boundaries; got {', '.join(map(str, stage_lengths))}")
        fragment = fitting[0]
    return runners, envs, fragment


def training_intensity(cfg, num_tasks: int, runners: int) -> float:
    """RLlib's training_intensity (sampled transitions trained on per env step sampled) giving our
    update-to-data ratio, sac.updates_per_round per num_tasks x env.envs_per_task env steps.
    RLlib 2.60 (dqn.py calculate_rr_weights) divides it by a "native ratio" that counts the
    driver's env runner as a sampler too (num_env_runners + 1) though it does not sample beside
    remote ones; the factor runners / (runners + 1) undoes that.

    The correction is exact, but RLlib then runs an integer number of updates per sampling round,
    round(w) with w = updates_per_round x (fragment x envs x max(runners, 1)) / (num_tasks x
    envs_per_task) (or one update every round(1/w) rounds when w < 1). The ratio is exact when w
    (or 1/w) is an integer: with the default sizes (updates_per_round 1, envs_per_task 1,
    chunk_steps 64) whenever the env runners divide num_tasks, e.g. PM4 on 1 runner (16 updates per
    4 x 16 env steps: 0.25) or MT10 on 0, 1, 2 or 5. Otherwise, measured with RLlib's own
    calculate_rr_weights: MT10 on 3 runners, 4 envs x 16 steps x 3 = 192 env steps per round, w =
    19.2 -> 19 (0.0990 updates per env step for 0.1, -1.0%); on 4 runners 25 for 25.2 (-0.8%); PM8
    on 3 runners 24 for 23.625 (+1.6%); MT50 on 4 runners 4 for 4.16 (-3.8%). rllib.envs_per_runner
    or rollout_fragment_length overrides can make it larger; learners.json's `updates` and
    `env_steps` show the ratio that ran. (tests/test_rllib.py checks an exact and an inexact case.)"""
    per_step = cfg.sac.updates_per_round / (num_tasks * cfg.env.envs_per_task)
    return per_step * cfg.sac.batch_size_per_task * num_tasks * max(runners, 1) / (runners + 1)


def algorithm_config(cfg, suite, stage_tasks: list[int], task_stage: list[int], stage_lengths: tuple[int, ...] = ()):
    """RLlib's AlgorithmConfig for our config (see the module docstring for the mapping)."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from integrations.rllib import env as rllib_env
    from integrations.rllib.callbacks import EpisodeRecorder

    rllib_env.register()
    T, sac = len(suite.tasks), cfg.sac
    runners, envs, fragment = sizes(cfg, T, stage_lengths)
    model_config = {"sac": asdict(sac), "aux": asdict(cfg.aux), "num_tasks": T, "seed": cfg.run.seed}
    if cfg.rllib.algo == "sac":
        from ray.rllib.algorithms.sac import SACConfig

        from integrations.rllib.learners import RLlibSACLearner
        from integrations.rllib.modules import SACModule
        batch = sac.batch_size_per_task * T
        config = SACConfig().training(
            actor_lr=sac.actor_lr, critic_lr=sac.critic_lr, alpha_lr=sac.alpha_lr, gamma=sac.gamma, tau=sac.tau,
            initial_alpha=sac.init_alpha, target_entropy="auto" if sac.target_entropy is None else sac.target_entropy,
            twin_q=True, n_step=1, train_batch_size_per_learner=batch,
            num_steps_sampled_before_learning_starts=sac.warmup_steps_per_task * T,
            training_intensity=training_intensity(cfg, T, runners),
            replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": cfg.replay.capacity_per_task * T},
            store_buffer_in_checkpoints=cfg.replay.save_in_checkpoint)
        module_class = SACModule
        learner_extra = {"seed": cfg.run.seed, "task_stage": task_stage,
                         "continual": asdict(cfg.continual) if cfg.continual.sequence else None}
        config.learners(learner_class=RLlibSACLearner, learner_config_dict=learner_extra)
    else:
        from ray.rllib.algorithms.ppo import PPOConfig

        from integrations.rllib.modules import PPOModule
        config = PPOConfig().training(lr=sac.actor_lr, gamma=sac.gamma,
                                      train_batch_size_per_learner=cfg.rllib.ppo_batch_size,
                                      minibatch_size=cfg.rllib.ppo_minibatch_size, num_epochs=cfg.rllib.ppo_epochs)
        module_class = PPOModule
    env_config = {"suite": cfg.env.suite, "tasks": cfg.env.tasks, "seed": cfg.run.seed, "stage_tasks": stage_tasks,
                  "envs_per_runner": envs, "goal_observable": cfg.env.goal_observable,
                  "target_visible": cfg.env.target_visible}
    return (config.environment(rllib_env.ENV_NAME, env_config=env_config)
            .env_runners(num_env_runners=runners, num_envs_per_env_runner=envs, rollout_fragment_length=fragment,
                         num_cpus_per_env_runner=1)
            .learners(num_learners=0)
            .rl_module(rl_module_spec=RLModuleSpec(module_class=module_class, model_config=model_config))
            .callbacks(EpisodeRecorder)
            .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0)
            .debugging(seed=cfg.run.seed, log_level="ERROR"))


def build_algo(config, log_dir: str):
    """config.build_algo(), with RLlib's own log dir in `log_dir`: an Algorithm is a Tune Trainable,
    which outside Tune makes a log dir under ~/ray_results (a module constant, read at build time)."""
    import ray.tune.trainable.trainable as trainable

    trainable.DEFAULT_STORAGE_PATH = str(log_dir)
    return config.build_algo()
