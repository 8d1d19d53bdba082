"""The learner runtime: experience from actors -> replay -> SAC updates -> weights -> actors,
with evaluation, logging and checkpoints on step boundaries. One loop serves every backend
(launch/actors/: the loop itself, actor processes, Ray actors) and, under torchrun, every
rank runs it on its shard of the tasks (launch/distributed/ranks.py).

Stages: a run trains a schedule of stages (continual/schedule.py). A multi-task run is one stage
of every task, ending exactly at run.steps (with W learner ranks, each rank ingests its share
of the budget by task count); a continual run (continual.sequence) trains its stages one after another, each
with fresh actors on the stage's tasks, its own random-action warm-up, and (by default) fresh
replay and optimizer state. A stage ends exactly at its budget (experience beyond it is
dropped); its strategy's end_task runs (PackNet prunes and retrains there), then the stage is
evaluated on every task of the sequence, then the next stage starts (continual/strategies).

Updates follow the data: every env step of any rank earns `updates_per_round / (num_tasks *
envs_per_task)` updates, in every backend, so the update-to-data ratio does not depend on the
backend, the number of actors or of learner ranks (every rank counts the global env steps). A
slow learner therefore slows the actors (backpressure), never the other way round. Updates
start once the stage's warm-up is over and every task the stage collects has at least
min(warmup_steps_per_task, replay capacity) transitions (and a batch) in replay: after a
resume without a checkpointed replay, the buffer refills with the restored policy first.

Learner hooks (agents/hooks.py): the continual strategy and the auxiliary tasks
(agents/auxiliary.py) are the hooks of `self.hooks`, called at the same points of every update.

Resume contract: a checkpoint at step S holds everything logged at steps <= S (pending
evaluations are awaited and TensorBoard flushed before it is written). On resume from S, the run
log drops what was logged after S (metrics/runlog.py), so nothing is duplicated or missing. A
rehearsing strategy's earlier tasks' replay is restored from the files written at the end of
their stages (launch/checkpoint.py).

Preemption: SIGTERM stops the run after the current iteration's update round, with a checkpoint
at the current step (launch/preemption.py); evaluations still running are kept in it and asked
for again on resume. Elastic restarts (torchrun --max-restarts) resume the same way, from the
latest checkpoint (launch/train.py finds it).

Divergence: a non-finite loss (checked every iteration) or non-finite weights (checked before
every evaluation and checkpoint) stop the run with TrainingDiverged before anything is written
from the diverged networks: the newest checkpoint stays the last good one.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

from agents import seeding
from agents.auxiliary import make_auxiliary_tasks
from agents.balancers import NEEDS_EVERY_TASK
from agents.replay import make_replay
from agents.sac import SACLearner
from continual.schedule import Schedule, Stage, UpdateCredit, planned_updates, stage_at, steps_left, updates_per_step
from continual.strategies import TaskContext, make_strategy
from envs.base import Suite
from launch import checkpoint, preemption, trainer_state
from launch.actors import actor_specs, make_actor_source
from launch.actors.actor import Chunk
from launch.actors.weights import WeightPublisher
from launch.config import Config
from launch.distributed import make_synchronizer
from launch.distributed.ranks import Dist
from launch.errors import Preempted, TrainingDiverged, UserError
from launch.evaluator import make_evaluator
from launch.machine import free_cores, plan_workers, resolve_device
from launch.telemetry import Progress, Telemetry
from metrics.runlog import RunLog


def crossed(before: int, after: int, every: int) -> bool:
    """Did the step counter pass a multiple of `every` going from `before` to `after`?"""
    return every > 0 and after // every > before // every


class Trainer:
    def __init__(self, cfg: Config, suite: Suite, run_dir: Path, resume: bool, dist: Dist = Dist(),
                 log=print, schedule: Schedule | None = None, discard_logs: bool = False):
        """schedule: a continual run's stages (launch/config/__init__.py: plan_schedule); None: one stage of
        every task for run.steps. discard_logs: the run dir holds logs of an attempt that failed
        before its first checkpoint (an elastic restart): start them afresh."""
        self.cfg, self.suite, self.run_dir, self.dist, self.log = cfg, suite, run_dir, dist, log
        seed, rank, num_tasks = cfg.run.seed, dist.rank, len(suite.tasks)
        self.cores = free_cores(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # before any worker starts
        self.continual = schedule is not None
        self.stages = list(schedule.stages) if schedule else [Stage(tuple(range(num_tasks)), 0, cfg.run.steps)]
        if self.continual and dist.world > 1:
            raise UserError("continual runs (--sequence) train one stage at a time and need a single learner rank")
        self.own_tasks = dist.shard(num_tasks)
        if not self.own_tasks:
            raise UserError(f"{dist.world} learner ranks but only {num_tasks} tasks: every rank needs a task")
        if cfg.replay.save_in_checkpoint and dist.world > 1:
            raise UserError("replay.save_in_checkpoint is not supported with several learner ranks")
        self.device = resolve_device(cfg.run.device, dist.local_rank)
        torch.manual_seed(seeding.seed_for(seed, "networks"))  # the same initial networks on every rank
        if cfg.balance.method in NEEDS_EVERY_TASK and dist.world > 1:
            raise UserError(f"balance.method {cfg.balance.method} reads every task's losses in one place; it "
                            f"needs a single learner rank (the gradient combiners work across ranks)")
        self.learner = SACLearner(cfg.sac, suite.obs_dim, suite.action_dim, num_tasks, self.device,
                                  synchronizer=make_synchronizer(cfg.sync, dist, num_tasks), balance=cfg.balance,
                                  seed=seed)
        sac = cfg.sac
        self.learner.schedule_updates = self.learner.schedule_updates or planned_updates(
            self.stages, sac.warmup_steps_per_task, sac.updates_per_round, cfg.env.envs_per_task)
        torch.manual_seed(seeding.seed_for(seed, "learner", rank))  # also seeds every CUDA device
        self.rng = seeding.rng(seed, "replay", rank)
        self.replay = make_replay(cfg.replay, num_tasks, suite.obs_dim, suite.action_dim, self.device)
        task_stage = [next(k for k, st in enumerate(self.stages) if t in st.tasks) for t in range(num_tasks)]
        self.strategy = make_strategy(cfg.continual, self.learner, task_stage, seed)
        self.auxiliary = make_auxiliary_tasks(cfg.aux, self.learner, suite.obs_dim, suite.action_dim, seed)
        self.hooks = [self.strategy, *self.auxiliary]
        self.learner.add_hook_parameters(self.hooks)
        # Rank 0's networks, temperatures and hook tensors on every rank: the auxiliary heads were
        # drawn from each rank's own stream (a single run's draws stay those of rank 0).
        dist.broadcast_tensors(self.learner.synced_tensors().values())
        self.losses: dict = {}
        self.step = self.local_step = 0  # env steps: all ranks / this rank
        self.steps_by_actor: Counter = Counter()
        self.lags: list[int] = []  # policy-version lag of the chunks received since the last log
        owed = trainer_state.restore(self) if resume else []
        log_from = self.step if resume else (-1 if discard_logs else None)
        self.runlog = RunLog(run_dir, resume_step=log_from) if dist.is_main else None
        self.telemetry = Telemetry(dist, suite, self.runlog, log)
        self.evaluator = make_evaluator(cfg) if dist.is_main else None
        for request in owed:  # a preempted run's evaluations that had not come back
            self.evaluator.submit(*request)
        self.version = 0  # weight version the actors see; 0 = no weights yet: act at random
        self.publish = WeightPublisher(self.learner.actor, cfg.runtime.backend)
        self.source, self.restarts_before = None, 0
        self.stage_index = stage_at(self.stages, self.step)
        self._start_stage(resumed=self.step > self.stages[self.stage_index].start)

    # -- stages -------------------------------------------------------------------------------
    def _context(self) -> TaskContext:
        k, stage = self.stage_index, self.stages[self.stage_index]
        earlier = tuple(t for st in self.stages[:k] for t in st.tasks)
        return TaskContext(k, len(self.stages), stage.tasks, earlier, stage.steps, self.replay, self.rng,
                           train=self._train_on_replay)

    def _train_on_replay(self, updates: int) -> None:
        """Learner updates on what replay holds, with no new env steps (PackNet's retraining)."""
        for _ in range(updates):
            batch = self.replay.sample(self.cfg.sac.batch_size_per_task, self.rng, self.train_tasks)
            self.losses = self.learner.update(batch, self.hooks)
        self._check_finite(weights=True)

    def _start_stage(self, resumed: bool) -> None:
        """Begin stage `stage_index`: actors on its tasks acting at random until the first update;
        fresh replay/optimizer as configured, unless resuming in the middle of it."""
        ctx = self.stage_context = self._context()  # fixed for the stage: built once, not per iteration
        if self.continual:
            self.own_tasks = list(ctx.tasks)
            if not resumed and ctx.stage > 0:
                if self.cfg.continual.reset_replay and not self.strategy.rehearses:
                    self.replay.clear(ctx.earlier)
                if self.cfg.continual.reset_optimizer:
                    self.learner.reset_optimizers()
            ctx.resumed = resumed
            self.strategy.start_task(ctx)
            self.train_tasks = sorted(set(ctx.tasks) | (set(ctx.earlier) if self.strategy.rehearses else set()))
            starved = [self.suite.tasks[t].name for t in self.train_tasks
                       if t not in ctx.tasks and self.replay.size[t] < self.cfg.sac.batch_size_per_task]
            if starved:  # nothing collects these tasks any more: updates would wait forever
                raise UserError(f"stage {ctx.stage + 1} rehearses {', '.join(starved)} but replay holds fewer than "
                                f"a batch ({self.cfg.sac.batch_size_per_task}) of it")
            if self.dist.is_main:
                names = ", ".join(self.suite.tasks[t].name for t in ctx.tasks)
                self.log(f"stage {ctx.stage + 1}/{ctx.num_stages}: {names} (env steps {self.stages[ctx.stage].start:,}"
                         f" to {self.stages[ctx.stage].end:,})")
        else:
            self.train_tasks = self.own_tasks
        if self.source is not None:
            self.restarts_before += self.source.restarts
            self.source.close()
        self.version = 0
        self.publish.reset()
        self.plan = plan_workers(self.cfg, self.device, self.cores, len(self.own_tasks))  # sized to the stage's tasks
        torch.set_num_threads(self.plan.threads)
        specs = actor_specs(self.cfg, self.plan, self.own_tasks, self.dist.rank, len(self.suite.tasks), self.step)
        self.source = make_actor_source(self.cfg.runtime, specs, self.learner.actor, log=self.log)

    def restarts(self) -> int:
        """Actor restarts over the whole run (every stage has its own actors)."""
        return self.restarts_before + self.source.restarts

    def _end_stage(self) -> None:
        """The stage's budget is spent: the strategy's end_task (which may train further), and a
        rehearsing strategy's copy of the stage's replay, written once."""
        self.strategy.end_task(self.stage_context)
        if self.strategy.rehearses and self.dist.is_main:
            for t in self.stage_context.tasks:
                checkpoint.write_atomic(checkpoint.rehearsal_path(self.run_dir / "checkpoints", t),
                                        {"format_version": checkpoint.FORMAT_VERSION, **self.replay.task_state(t)})

    # -- checkpoints --------------------------------------------------------------------------
    def _check_finite(self, weights: bool = False) -> None:
        """Stop on a non-finite loss (or, with weights=True, non-finite weights) before anything
        is saved or evaluated from the diverged networks. The weights check is collective (every
        rank calls it at the same step): under local SGD ranks' weights differ between averages,
        and one rank stopping alone would leave the others waiting in the next all-reduce."""
        if weights:
            why = self.dist.first_reason(self.learner.nonfinite())
        else:
            why = None if bool(self.learner.all_finite) else "a non-finite loss"
        if why:
            self._diverged(why)

    def _diverged(self, why: str):
        latest = checkpoint.list_checkpoints(self.run_dir / "checkpoints")
        last_good = latest[-1].name if latest else "none written yet"
        raise TrainingDiverged(f"training diverged at env step {self.step:,} ({why}); nothing was saved "
                               f"after it (last good checkpoint: {last_good}); lower the learning rates "
                               f"(sac.*_lr) and start again")

    def _save_checkpoint(self, preempted: bool = False) -> None:
        trainer_state.save(self, preempted)

    # -- evaluation ---------------------------------------------------------------------------
    def _policy_weights(self) -> torch.Tensor:
        return torch.nn.utils.parameters_to_vector(self.learner.actor.parameters()).detach().cpu()

    def _write_evals(self, evaluations: list[list[dict]]) -> None:
        for rows in evaluations:
            self.runlog.evaluation(rows)

    def _evaluate(self) -> None:
        self._check_finite(weights=True)
        self.learner.synchronizer.sync_point(self.learner)
        if self.dist.is_main:
            weights = self.strategy.eval_weights(self._policy_weights(), self.stage_index)
            self.evaluator.submit(self.step, self.learner.num_updates, weights)

    # -- the loop -----------------------------------------------------------------------------
    def _ingest(self, chunk: Chunk, episodes: dict) -> int:
        self.replay.add(chunk.task, chunk.obs, chunk.action, chunk.reward, chunk.next_obs, chunk.terminated)
        for episode in chunk.episodes:
            episodes[episode.task].append(episode)
        self.steps_by_actor[chunk.actor_id] += len(chunk)
        self.lags.append(self.version - chunk.policy_version)
        return len(chunk)

    def _local_end(self, stage: Stage) -> int:
        """This rank's env-step count at the stage's end: the stage's end on one rank; with W ranks
        (multi-task) its share of the budget by task count, the shares adding up to the budget, so
        the global count ends exactly at it."""
        if self.dist.world == 1:
            return stage.end
        tasks = [len(Dist(r, self.dist.world).shard(len(self.suite.tasks)))
                 for r in range(self.dist.world)]
        shares = [stage.end * n // sum(tasks) for n in tasks]
        return shares[self.dist.rank] + (1 if self.dist.rank < stage.end - sum(shares) else 0)

    def _ready(self, stage: Stage) -> bool:
        """May this rank update? The stage's warm-up is over and each task it collects holds
        its warm-up's worth of transitions (a refill after a resume) and a batch."""
        sac = self.cfg.sac
        refill = max(sac.batch_size_per_task, min(sac.warmup_steps_per_task, self.cfg.replay.capacity_per_task))
        collected = [t for t in stage.tasks if t in self.own_tasks]
        return (self.step - stage.start >= sac.warmup_steps_per_task * len(stage.tasks)
                and self.replay.min_size(collected) >= refill)

    def run(self) -> float | None:
        """Train to cfg.run.steps; returns the final mean eval success. Sets `train_steps_per_s`:
        env steps per second of training, evaluation and checkpoints excluded."""
        cfg, learner = self.cfg, self.learner
        total = cfg.run.steps
        progress = Progress(total, self.step, learner.num_updates)
        episodes = defaultdict(list)  # task -> finished training episodes since the last log
        credit, since_publish = UpdateCredit(), 0
        start_step, start_time, paused = self.step, time.perf_counter(), 0.0
        if self.step == 0:
            self._evaluate()
            paused = time.perf_counter() - start_time
        if learner.num_updates and self.step > self.stages[self.stage_index].start:
            self.version = self.publish(self.source, learner.num_updates, wait=True)  # resumed mid-stage: act at once
        while self.step < total:
            stage = self.stages[self.stage_index]
            per_step = updates_per_step(stage, cfg.sac.updates_per_round, cfg.env.envs_per_task)
            ready = self._ready(stage)  # steps collected from here on earn updates if the learner was ready
            polled = time.perf_counter()
            chunks = self.source.poll(timeout=1.0)
            polled = time.perf_counter() - polled
            new_steps, local_end = 0, self._local_end(stage)
            for chunk in chunks:
                room = local_end - self.local_step - new_steps
                if room > 0:  # a stage ends exactly at its budget: later experience is dropped
                    new_steps += self._ingest(chunk.head(room), episodes)
            self.local_step += new_steps
            before = self.step
            self.step, ready, finite, stop = self.dist.sync_counts(self.local_step, ready, learner.finite_so_far(),
                                                                   preemption.requested())
            if not finite:  # on some rank: every rank stops here together
                self._diverged("a non-finite loss")
            due = credit.earn(self.step - before, per_step, ready)  # every rank's steps: the same on each
            updating = time.perf_counter()
            for _ in range(due):
                batch = self.replay.sample(cfg.sac.batch_size_per_task, self.rng, self.train_tasks)
                self.losses = learner.update(batch, self.hooks)
                since_publish += 1
            if ready and cfg.runtime.backend != "single":  # the single loop steps the envs itself: no "bound"
                progress.learner(polled, time.perf_counter() - updating)
            progress.advance(self.step - before, learning=ready)
            self.strategy.on_progress(self.step - stage.start, self.stage_context)
            if due and (since_publish >= cfg.runtime.publish_every or self.version == 0):
                published = self.publish(self.source, learner.num_updates)
                if published is not None:  # a GPU learner's copy may still be on its way
                    self.version, since_publish = published, 0
            if self.dist.is_main:
                self._write_evals(self.evaluator.results())

            last = self.step >= total
            stop = stop and not last  # SIGTERM on some rank: this round's updates are done; save and stop
            stage_done = self.continual and self.step >= stage.end
            if crossed(before, self.step, cfg.run.log_every) or last or stop:
                self._log_training(progress, episodes)
                episodes.clear()
            pause_start = time.perf_counter()
            if stage_done:
                self._end_stage()
                credit.reset()
            if crossed(before, self.step, cfg.eval.every) or last or stage_done:
                self._evaluate()
            if crossed(before, self.step, cfg.run.checkpoint_every) or last or stop:
                self._save_checkpoint(preempted=stop)
            if stop:
                raise Preempted(f"stopped by SIGTERM at env step {self.step:,} with a checkpoint there; "
                                f"continue with --resume {self.run_dir}")
            if stage_done and not last:
                self.stage_index += 1
                self._start_stage(resumed=False)
            paused += time.perf_counter() - pause_start
        self.train_steps_per_s = (self.step - start_step) / max(time.perf_counter() - start_time - paused, 1e-9)
        self._finish(progress)
        return self.runlog.eval_success if self.runlog else None

    def _finish(self, progress: Progress) -> None:
        """Gather every rank's summary; rank 0 writes learners.json (with the cross-rank check of
        everything learned) and prints the final line and the run's headline metrics."""
        self.learner.synchronizer.sync_point(self.learner)
        learner = self.learner
        ranks = self.telemetry.gather_summaries(learner, {
            "rank": self.dist.rank, "tasks": [self.suite.tasks[i].name for i in self.own_tasks],
            "env_steps": self.local_step, "steps_by_actor": dict(self.steps_by_actor),
            "actor_restarts": self.restarts(), "updates": learner.num_updates, "sync": learner.synchronizer.stats()})
        if self.dist.is_main:
            self._write_evals(self.evaluator.wait())
            self.telemetry.finish(self.step, progress, ranks, {
                "sync": self.cfg.sync.mode, "train_env_steps_per_s": self.train_steps_per_s,
                "workers": self.plan.note}, self.run_dir)

    def _log_training(self, progress: Progress, episodes: dict) -> None:
        lags, self.lags = self.lags, []
        self.telemetry.training(self.step, progress, self.learner, self.losses,
                                steps_left(self.stages, self.step, self.cfg.sac.warmup_steps_per_task),
                                episodes, self.restarts(), self.steps_by_actor, lags)

    def close(self) -> None:
        """Every part is closed even if closing another fails: a worker left running would block
        the interpreter's exit (it joins daemon processes, which ignore SIGTERM here)."""
        for part in (self.source, self.evaluator, self.runlog):
            if part is not None:
                try:
                    part.close()
                except Exception as e:  # the run is ending: say so, and close the next part anyway
                    self.log(f"closing {type(part).__name__} failed: {type(e).__name__}: {e}")
