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
  eval.*, run.*  our evaluation protocol (envs/evaluation.py, launch/evaluator.py) on the learner's
               current weights in the driver, every eval.every env steps; checkpoints every
               run.checkpoint_every through RLlib's save_to_path.

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

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from agents import seeding
from integrations.rllib.algorithm import algorithm_config, build_algo, env_runners
from launch.errors import TrainingDiverged, UserError
from launch.telemetry import Progress, format_duration

SUPPORTED_METHODS = ("none", "l2", "ewc", "online-ewc", "mas", "packnet")
CKPT_DIR = "rllib_checkpoints"


def check_supported(cfg, dist_world: int = 1) -> None:
    """One UserError line for every setting the RLlib engine cannot honour."""
    algo = cfg.rllib.algo
    problems = []
    if dist_world > 1:
        problems.append("torchrun learner ranks (RLlib scales its learners with its own num_learners)")
    if cfg.balance.method != "mean":
        problems.append(f"--balancer {cfg.balance.method} (RLlib's SAC loss is the mean over the batch)")
    if cfg.replay.normalize_rewards or cfg.sac.actor_weight_decay or cfg.sac.max_grad_norm:
        problems.append("the Kurin stabilizers (replay.normalize_rewards, sac.actor_weight_decay, sac.max_grad_norm)")
    if cfg.continual.method not in SUPPORTED_METHODS:
        problems.append(f"continual method {cfg.continual.method} (supported: {', '.join(SUPPORTED_METHODS)})")
    if algo == "ppo" and cfg.continual.sequence:
        problems.append("continual sequences with --algo ppo (use --algo sac)")
    if algo == "ppo" and any(getattr(cfg.aux, n) for n in ("reward", "dynamics", "inverse", "pvn")):
        problems.append("auxiliary losses with --algo ppo (use --algo sac)")
    if cfg.run.device not in ("cpu", "auto"):
        problems.append(f"--device {cfg.run.device} (the RLlib engine's learner runs on the CPU here)")
    if cfg.sac.compile != "none" or cfg.replay.device == "learner":
        problems.append("sac.compile and replay.device=learner (the GPU learner path is our loop's)")
    if cfg.sac.encoder_tau:
        problems.append("sac.encoder_tau (RLlib's target update has one rate: sac.tau)")
    if cfg.sync.mode != "step" or cfg.sac.lr_schedule != "constant" or cfg.sac.lr_warmup_updates:
        problems.append("--sync local/qsr and sac.lr_schedule (RLlib's learners have their own)")
    if problems:
        raise UserError(f"--engine rllib does not support {'; '.join(problems)}")


def _init_ray(cfg) -> str:
    """Start (or join) Ray; returns a private temp dir (under $TMPDIR) for Ray's session files and
    RLlib's trainable log dir, removed at the end of the run."""
    import ray

    temp = tempfile.mkdtemp(prefix="polytask-rllib-")
    if not ray.is_initialized():
        if cfg.runtime.ray_address:
            ray.init(address=cfg.runtime.ray_address, log_to_driver=False, configure_logging=False)
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster on loopback only
            ray.init(num_cpus=max(os.cpu_count() or 1, env_runners(cfg) + 1), include_dashboard=False,
                     _node_ip_address="127.0.0.1", _temp_dir=temp, log_to_driver=False, configure_logging=False)
    return temp


def _on_learner(algo, fn):
    """fn(learner) on the (one) learner, local or remote."""
    return next(iter(algo.learner_group.foreach_learner(fn))).get()


class _ReplayView:
    """What a continual strategy's end_task reads of replay (size[t], rows(t, idx)), filled with
    transitions sampled from RLlib's replay buffer and split by task."""

    def __init__(self, buffer, num_tasks: int, count: int, gamma: float):
        episodes = buffer.sample(num_items=count, n_step=1, gamma=gamma, sample_episodes=True)
        obs = np.stack([e.get_observations(0) for e in episodes]).astype(np.float32)
        action = np.stack([e.get_actions(0) for e in episodes]).astype(np.float32)
        task = obs[:, -num_tasks:].argmax(1)
        self.data = {t: {"obs": obs[task == t, :-num_tasks], "action": action[task == t]} for t in range(num_tasks)}
        self.size = [len(self.data[t]["obs"]) for t in range(num_tasks)]

    def rows(self, task: int, idx) -> dict:
        return {k: v[idx] for k, v in self.data[task].items()}


class RLlibRun:
    def __init__(self, cfg, suite, schedule, run_dir: Path, resume: bool, log=print):
        check_supported(cfg)
        self.cfg, self.suite, self.run_dir, self.log = cfg, suite, Path(run_dir), log
        T = len(suite.tasks)
        if schedule is None:  # a multi-task run: one stage of every task
            from continual.schedule import Stage
            self.stages = [Stage(tuple(range(T)), 0, cfg.run.steps)]
        else:
            self.stages = list(schedule.stages)
        task_stage = [0] * T
        for k, stage in enumerate(self.stages):
            for t in stage.tasks:
                task_stage[t] = k
        self.task_stage = task_stage
        self.step, self.stage_index, self.next_eval, self.next_ckpt = 0, 0, 0, cfg.run.checkpoint_every
        self.stage_steps = [Counter() for _ in self.stages]  # per stage: task name -> env steps (finished episodes)
        self.rng = seeding.rng(cfg.run.seed, "replay", 0)
        state = self._latest_state() if resume else None
        if state is not None:
            self.step, self.stage_index, self.next_eval, self.next_ckpt = (
                state["step"], state["stage"], state["next_eval"], state["next_ckpt"])
            self.stage_steps = [Counter(c) for c in state["stage_steps"]]
        lengths = tuple(stage.steps for stage in self.stages) if schedule is not None else ()
        try:
            self.config = algorithm_config(cfg, suite, list(self.stages[self.stage_index].tasks), task_stage, lengths)
        except ValueError as e:
            raise UserError(str(e)) from None
        self.temp_dir = _init_ray(cfg)
        try:
            self._build(state)
        except BaseException:
            self.close()
            raise

    def _build(self, state: dict | None) -> None:
        from launch.evaluator import _Evaluation
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
        self.evaluation = _Evaluation(cfg.env.suite, cfg.env.tasks, cfg.run.seed, cfg.sac, cfg.eval.goals,
                                      cfg.eval.policy) if cfg.rllib.algo == "sac" else None
        self.ppo_envs = self._ppo_envs() if self.evaluation is None else None
        self.updates = 0
        self.env_runners = env_runners(cfg)

    # -- stages (continual runs) ----------------------------------------------------------
    def _context(self, train=None):
        from continual.strategies import TaskContext
        k, stage = self.stage_index, self.stages[self.stage_index]
        earlier = tuple(t for st in self.stages[:k] for t in st.tasks)
        needs_states = self.cfg.continual.method in ("ewc", "online-ewc", "mas")  # importances from states
        replay = _ReplayView(self.algo.local_replay_buffer, len(self.suite.tasks),
                             max(self.cfg.continual.importance_samples * 2, 512), self.cfg.sac.gamma) \
            if needs_states else None
        return TaskContext(k, len(self.stages), stage.tasks, earlier, stage.steps, replay, self.rng,
                           train=train or (lambda updates: None))

    def _start_stage(self, resumed: bool) -> None:
        from continual.strategies import TaskContext
        k, stage = self.stage_index, self.stages[self.stage_index]
        ctx = TaskContext(k, len(self.stages), stage.tasks, (), stage.steps, None, self.rng, resumed=resumed)
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
        ctx = self._context(train=self._train_on_replay)
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
    def _ppo_envs(self) -> list:
        suite, seed = self.suite, self.cfg.run.seed
        return [suite.make_env(t, seeding.seed_for(seed, "eval-envs", t.index)) for t in suite.tasks]

    def _policy_rows(self) -> list[dict]:
        """One evaluation by our protocol on the learner's current weights."""
        cfg, stage = self.cfg, self.stage_index
        if self.evaluation is not None:  # SAC: our evaluator on the actor's weight vector (PackNet: per task)
            flat = _on_learner(self.algo, lambda learner: learner.strategy.eval_weights(learner.policy_vector(), stage)
                               if learner.strategy is not None else learner.policy_vector())
            return self.evaluation(self.step, self.updates, flat)
        from envs.evaluation import evaluate
        module = _on_learner(self.algo, lambda learner: learner.module["default_policy"])
        T = len(self.suite.tasks)
        noise = torch.Generator().manual_seed(seeding.seed_for(cfg.run.seed, "eval", 1))

        def act(obs, task):  # PPO's Gaussian: its mean (or a sample), clipped to the action box as RLlib does
            flat = np.concatenate([obs, np.eye(T, dtype=np.float32)[task]], axis=1)
            with torch.no_grad():
                out = module.forward_inference({"obs": torch.from_numpy(flat)})["action_dist_inputs"]
            mean, log_std = out.chunk(2, dim=-1)
            if cfg.eval.policy == "sample":
                mean = mean + log_std.exp() * torch.randn(mean.shape, generator=noise)
            return mean.clamp(-1, 1).numpy()

        rows = evaluate(act, self.ppo_envs, list(range(T)), cfg.eval.goals, seed=seeding.seed_for(cfg.run.seed, "eval"))
        return [{"step": self.step, "task": self.suite.tasks[r["task_index"]].name,
                 "env": self.suite.tasks[r["task_index"]].env_name, **r, "policy": cfg.eval.policy,
                 "policy_version": self.updates} for r in rows]

    def _evaluate(self) -> None:
        rows = self._policy_rows()
        self.runlog.evaluation(rows)
        self.next_eval = (self.step // self.cfg.eval.every + 1) * self.cfg.eval.every if self.cfg.eval.every else \
            float("inf")

    # -- checkpoints ---------------------------------------------------------------------
    def _latest_state(self) -> dict | None:
        root = self.run_dir / CKPT_DIR
        found = sorted(p for p in root.glob("step-*") if (p / "polytask.json").is_file()) if root.is_dir() else []
        if not found:
            raise UserError(f"no RLlib checkpoint in {root}")
        path = found[-1]
        try:
            state = json.loads((path / "polytask.json").read_text())
            strategy = torch.load(path / "strategy.pt", weights_only=True) if (path / "strategy.pt").is_file() else None
        except (ValueError, OSError, RuntimeError) as e:
            raise UserError(f"corrupt checkpoint {path}: {type(e).__name__}") from None
        return {**state, "path": path, "strategy": strategy}

    def _checkpoint(self) -> None:
        """Atomic: written to a temp dir, renamed into place; the newest run.keep_checkpoints kept."""
        root = self.run_dir / CKPT_DIR
        final, tmp = root / f"step-{self.step:012d}", root / f".tmp-step-{self.step:012d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.algo.save_to_path(str((tmp / "algorithm").resolve()))
        if self.cfg.continual.sequence:
            torch.save(_on_learner(self.algo, lambda learner: learner.strategy.state_dict()), tmp / "strategy.pt")
        (tmp / "polytask.json").write_text(json.dumps({
            "step": self.step, "stage": self.stage_index, "next_eval": self.next_eval,
            "next_ckpt": self.next_ckpt, "stage_steps": [dict(c) for c in self.stage_steps]}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-self.cfg.run.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

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

