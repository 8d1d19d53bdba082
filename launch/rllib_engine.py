"""`--engine rllib`: train on RLlib's new API stack with our suites, networks, strategies and run log.

    python launch/train.py --engine rllib --algo sac --suite pointmass --steps 8000
    python launch/train.py --engine rllib --algo ppo --suite metaworld --tasks MT10
    python launch/train.py --engine rllib --suite pointmass --sequence PM2 --method ewc

The config tree maps onto RLlib's (integrations/rllib/ holds the parts):
  env          our suite registered as "polytask" (integrations/rllib/env.py): [obs, one_hot(task)],
               each env slot stepping its share of the stage's tasks
  runtime.actors  remote env runners (Ray actors; their modules are inference-only: the policy);
               0: the driver's own env runner samples
  sac.*        SAC: our SACModule (integrations/rllib/modules.py) with RLlib's SAC loss, through our
               RLlibSACLearner (integrations/rllib/learners.py: auxiliary losses, continual strategy);
               lrs, gamma, tau, init_alpha, target_entropy, batch = batch_size_per_task x tasks,
               learning starts after warmup_steps_per_task x tasks env steps, and RLlib's
               training_intensity set so that the updates per env step equal ours
               (updates_per_round per num_tasks x envs_per_task env steps)
  replay       RLlib's uniform EpisodeReplayBuffer of capacity_per_task x tasks transitions
               (save_in_checkpoint -> store_buffer_in_checkpoints)
  rllib.*      PPO's batch/minibatch/epochs, env runner sizes; PPO uses sac.actor_lr and the
               network settings of sac.* (PPOModule)
  eval.*, run.*  our evaluation protocol (envs/evaluation.py, launch/evaluation/evaluator.py; PPO's policy:
               integrations/rllib/policy.py) on the learner's current weights in the driver, every
               eval.every env steps; checkpoints every run.checkpoint_every: RLlib's save_to_path
               with the strategy and the driver's counters (integrations/rllib/checkpoint.py).

The run directory is ours (metrics/runlog.py): config.yaml (with the schedule), evals.jsonl,
episodes.jsonl (the env's per-episode records via integrations/rllib/callbacks.py), tb/,
learners.json (per-task env steps per stage), so launch/report.py reads it like any run.

Not supported (one line, exit 2): --balancer other than mean, the Kurin stabilizers, torchrun,
--sync local/qsr and learning-rate schedules, continual methods beyond
none/l2/ewc/online-ewc/mas/packnet (SI needs the loss's gradient before its penalty; A-GEM,
replay, bc and hnet need our replay or update path), PPO with auxiliary losses or a continual
sequence, --mode single-task. SIGTERM (preemption) stops an RLlib run at once, as RLlib does;
resume from its latest checkpoint. Differences in the update itself are listed
in integrations/rllib/modules.py; besides, RLlib's env runners act with the initial policy, not
uniformly at random, before learning starts. A sampling round is chosen to divide every stage's
length (integrations/rllib/algorithm.py: sizes), so stages switch exactly at their boundaries.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from agents import seeding
from continual.schedule import Schedule
from continual.strategies import METHODS
from integrations.rllib import checkpoint
from integrations.rllib.algorithm import algorithm_config, build_algo, env_runners
from integrations.rllib.policy import PPOEvaluation
from integrations.rllib.replay_view import ReplayView
from launch.actors.ray_pool import init_ray
from launch.config.validate import check_engine
from launch.errors import TrainingDiverged, UserError
from launch.evaluation.evaluator import Evaluation, labelled
from launch.telemetry import Progress, format_duration


def _init_ray(cfg) -> str:
    """Start (or join) Ray (launch/actors/ray_pool.py), with a CPU for each env runner and the
    driver's; returns a private temp dir (under $TMPDIR) for Ray's session files and RLlib's
    trainable log dir, removed at the end of the run."""
    temp = tempfile.mkdtemp(prefix="polytask-rllib-")
    init_ray(cfg.runtime.ray_address, env_runners(cfg) + 1, temp)
    return temp


def _on_learner(algo, fn):
    """fn(learner) on the (one) learner, local or remote."""
    return next(iter(algo.learner_group.foreach_learner(fn))).get()


class RLlibRun:
    """The driver: RLlib's training iterations, our stages, evaluations, logs and checkpoints."""

    def __init__(self, cfg, suite, schedule, run_dir: Path, resume: bool, log=print):
        check_engine(cfg)  # launch/config/validate.py (train.py checked it already; a direct caller too)
        self.cfg, self.suite, self.run_dir, self.log = cfg, suite, Path(run_dir), log
        self.schedule = schedule or Schedule.multitask(suite.task_names, cfg.run.steps)
        self.stages = self.schedule.stages
        self.step, self.stage_index, self.next_eval, self.next_ckpt = 0, 0, 0, cfg.run.checkpoint_every
        self.stage_steps = [Counter() for _ in self.stages]  # per stage: task name -> env steps (finished episodes)
        self.rng = seeding.rng(cfg.run.seed, "replay", 0)
        try:
            state = checkpoint.latest(self.run_dir / checkpoint.DIR) if resume else None
        except ValueError as e:
            raise UserError(str(e)) from None
        if state is not None:
            self.step, self.stage_index, self.next_eval, self.next_ckpt = (
                state["step"], state["stage"], state["next_eval"], state["next_ckpt"])
            self.stage_steps = [Counter(c) for c in state["stage_steps"]]
        lengths = tuple(stage.steps for stage in self.stages) if schedule is not None else ()
        try:
            self.config = algorithm_config(cfg, suite, list(self.stages[self.stage_index].tasks),
                                           self.schedule.task_stage, lengths)
        except ValueError as e:
            raise UserError(str(e)) from None
        self.temp_dir = _init_ray(cfg)
        try:
            self._build(state)
        except BaseException:
            self.close()
            raise

    def _build(self, state: dict | None) -> None:
        from metrics.runlog import RunLog

        cfg = self.cfg
        self.algo = build_algo(self.config, self.temp_dir)
        if state is not None:
            try:
                self.algo.restore_from_path(str(state["path"] / "algorithm"))
            except Exception as e:  # RLlib raises many types for a damaged or foreign checkpoint
                raise UserError(f"corrupt or incompatible RLlib checkpoint {state['path']}: {type(e).__name__}") \
                    from None
            if state.get("strategy") is not None:
                _on_learner(self.algo, lambda learner, s=state["strategy"]: learner.strategy.load_state_dict(s))
        elif cfg.continual.sequence:
            self._start_stage(resumed=False)
        self.runlog = RunLog(self.run_dir, resume_step=self.step if state is not None else None)
        self.evaluation = Evaluation(cfg.env.suite, cfg.env.tasks, cfg.run.seed, cfg.sac, cfg.eval.goals,
                                     cfg.eval.policy, cfg.env.goal_observable,
                                     cfg.env.target_visible) if cfg.rllib.algo == "sac" else None
        self.ppo_evaluation = PPOEvaluation(self.suite, cfg.run.seed, cfg.eval.goals, cfg.eval.policy) \
            if self.evaluation is None else None
        self.updates = 0
        self.env_runners = env_runners(cfg)

    # -- stages (continual runs) ----------------------------------------------------------
    def _start_stage(self, resumed: bool) -> None:
        ctx = self.schedule.context(self.stage_index, None, self.rng, resumed=resumed)
        _on_learner(self.algo, lambda learner: learner.strategy.start_task(ctx))

    def _train_on_replay(self, updates: int) -> None:
        """Learner updates on what RLlib's replay holds, no new env steps (PackNet's retraining)."""
        buffer, batch = self.algo.local_replay_buffer, self.config.train_batch_size_per_learner
        for _ in range(updates):
            episodes = buffer.sample(num_items=batch, n_step=1, gamma=self.cfg.sac.gamma, sample_episodes=True)
            self.algo.learner_group.update(episodes=episodes)
        self.algo.env_runner_group.sync_weights(from_worker_or_learner_group=self.algo.learner_group,
                                                inference_only=True)

    def _end_stage(self) -> None:
        """The strategy's end_task; one that reads stored states gets a sample of RLlib's replay."""
        cl = self.cfg.continual
        replay = ReplayView(self.algo.local_replay_buffer, len(self.suite.tasks), max(cl.importance_samples * 2, 512),
                            self.cfg.sac.gamma) if METHODS[cl.method].needs_states else None
        ctx = self.schedule.context(self.stage_index, replay, self.rng, self._train_on_replay)
        # The learner is local (num_learners=0), so PackNet's retraining (ctx.train) can call back
        # into the driver's learner group from inside end_task.
        _on_learner(self.algo, lambda learner: learner.strategy.end_task(ctx))

    def _switch_stage(self) -> None:
        """Every env runner's envs move to the next stage's tasks and reset now (foreach_env is
        broken on the new stack, ray#53248: reach the envs through the env runners)."""
        self._end_stage()
        self._evaluate()  # the finished stage's final evaluation (what forgetting is measured from)
        self.stage_index += 1
        tasks = list(self.stages[self.stage_index].tasks)

        def switch(runner, tasks=tasks):
            if runner.env is not None:  # the driver's env runner has no envs when remote ones sample
                runner.env.unwrapped.call("set_stage", tasks)
                runner._needs_initial_reset = True  # drop unfinished episodes of the old stage's tasks

        self.algo.env_runner_group.foreach_env_runner(switch, local_env_runner=True)
        if self.cfg.continual.reset_replay:
            buffer = self.algo.local_replay_buffer
            self.algo.local_replay_buffer = type(buffer)(capacity=buffer.capacity)
        if self.cfg.continual.reset_optimizer:
            _on_learner(self.algo, lambda learner: learner.strategy.learner.reset_optimizers())
        self._start_stage(resumed=False)

    # -- evaluation ------------------------------------------------------------------------
    def _policy_rows(self) -> list[dict]:
        """One evaluation by our protocol on the learner's current weights."""
        stage, suite = self.stage_index, self.suite
        if self.evaluation is not None:  # SAC: our evaluator on the actor's weight vector (PackNet: per task)
            flat = _on_learner(self.algo, lambda learner: learner.strategy.eval_weights(learner.policy_vector(), stage)
                               if learner.strategy is not None else learner.policy_vector())
            return self.evaluation(self.step, self.updates, flat)
        results = self.ppo_evaluation(_on_learner(self.algo, lambda learner: learner.module["default_policy"]))
        return labelled(results, self.step, self.updates, suite.task_names, [t.env_name for t in suite.tasks],
                        self.cfg.eval.policy)

    def _evaluate(self) -> None:
        rows = self._policy_rows()
        self.runlog.evaluation(rows)
        self.next_eval = (self.step // self.cfg.eval.every + 1) * self.cfg.eval.every if self.cfg.eval.every else \
            float("inf")

    # -- checkpoints ---------------------------------------------------------------------
    def _checkpoint(self) -> None:
        """integrations/rllib/checkpoint.py; the newest run.keep_checkpoints are kept."""
        strategy = _on_learner(self.algo, lambda learner: learner.strategy.state_dict()) \
            if self.cfg.continual.sequence else None
        checkpoint.save(self.run_dir / checkpoint.DIR, self.step, self.algo.save_to_path, strategy, {
            "step": self.step, "stage": self.stage_index, "next_eval": self.next_eval, "next_ckpt": self.next_ckpt,
            "stage_steps": [dict(c) for c in self.stage_steps]}, self.cfg.run.keep_checkpoints)

    # -- the loop ------------------------------------------------------------------------
    def _episodes(self, result: dict) -> float | None:
        from integrations.rllib.callbacks import EPISODES_KEY
        records = result.get("env_runners", {}).get(EPISODES_KEY) or []
        names = self.suite.task_names
        rows = [{"task": names[int(t)], "task_index": int(t), "success": float(s), "return": float(r)}
                for t, s, r, _ in records]
        for t, _, _, length in records:
            self.stage_steps[self.stage_index][names[int(t)]] += int(length)
        return self.runlog.episodes(self.step, rows) if rows else None

    def run(self) -> None:
        cfg, total = self.cfg, self.stages[-1].end
        progress, started, previous = Progress(total, self.step, 0), time.perf_counter(), self.step
        if self.step == 0:
            self._evaluate()
        train_success, last_log = None, self.step
        while self.step < total:
            result = self.algo.train()
            self.step = int(result.get("num_env_steps_sampled_lifetime", self.step))
            learner = result.get("learners", {}).get("default_policy", {})
            if cfg.rllib.algo == "sac":  # each update trains one batch
                self.updates = int(learner.get("num_module_steps_trained_lifetime", 0)) \
                    // self.config.train_batch_size_per_learner or self.updates
            else:
                self.updates = int(result.get("training_iteration", 0))
            losses = {k: v for k, v in learner.items() if "loss" in k}
            if any(not np.isfinite(v) for v in losses.values()):
                raise TrainingDiverged(f"the RLlib learner diverged at env step {self.step:,} (non-finite loss); "
                                       f"the last good checkpoint is intact")
            success = self._episodes(result)
            train_success = success if success is not None else train_success
            progress.advance(self.step - previous, learning=bool(learner))
            previous = self.step
            if self.step - last_log >= cfg.run.log_every or self.step >= total:
                steps_s, updates_s = progress.rates(self.step, self.updates)
                self.runlog.scalars(self.step, {**{k if k.startswith("loss/") else f"loss/{k}": v
                                                   for k, v in losses.items()},
                                                "perf/env_steps_per_s": steps_s, "perf/updates_per_s": updates_s})
                eta = progress.eta(0, total - self.step)
                if eta is not None:
                    self.runlog.scalars(self.step, {"perf/eta_hours": eta / 3600})
                progress.show(progress.line(self.step, steps_s, updates_s, train_success, self.runlog.eval_success,
                                            eta))
                last_log = self.step
            if cfg.continual.sequence and self.step >= self.stages[self.stage_index].end \
                    and self.stage_index < len(self.stages) - 1:
                self._switch_stage()
            if self.step >= self.next_eval and self.step < total:
                self._evaluate()
            if self.step >= self.next_ckpt:
                self._checkpoint()
                self.next_ckpt = (self.step // cfg.run.checkpoint_every + 1) * cfg.run.checkpoint_every
        if cfg.continual.sequence:
            self._end_stage()
        self._evaluate()
        self._checkpoint()
        self.runlog.learners({"engine": "rllib", "algo": cfg.rllib.algo, "env_steps": self.step,
                              "updates": self.updates, "env_runners": env_runners(cfg),
                              "task_steps_by_stage": [dict(c) for c in self.stage_steps]})
        self.log(self.runlog.headline_metrics(self.step))
        self.log(f"polytask: done in {format_duration(time.perf_counter() - started)}; "
                 f"run dir {self.run_dir}")

    def close(self) -> None:
        try:
            if hasattr(self, "runlog"):
                self.runlog.close()
            if hasattr(self, "algo"):
                self.algo.stop()
        finally:
            import ray
            if ray.is_initialized():
                ray.shutdown()
            if hasattr(self, "temp_dir"):
                shutil.rmtree(self.temp_dir, ignore_errors=True)

