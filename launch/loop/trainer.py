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
(agents/auxiliary.py) are the hooks of `Learning.hooks` (launch/loop/learning.py), called at the same
points of every update. With hidden boundaries (continual.boundaries=hidden) the learner's side
never hears of stages (launch/loop/learning.py says what it gets instead): the loop still moves the
actors and the evaluator on at each stage, and feeds a boundary detector.

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
from agents.sac import make_learner
from continual.schedule import Schedule, UpdateCredit, planned_updates, stage_at, steps_left, updates_per_step
from envs.base import Suite
from launch import checkpoint, preemption
from launch.actors.stage import StageActors
from launch.config import Config
from launch.distributed import make_synchronizer
from launch.distributed.ranks import Dist
from launch.errors import Preempted, TrainingDiverged
from launch.evaluation.evaluator import make_evaluator
from launch.evaluation.videos import films
from launch.loop.learning import Learning
from launch.machine import free_cores, resolve_device
from launch.telemetry import Progress, Telemetry
from metrics.runlog import RunLog


def crossed(before: int, after: int, every: int) -> bool:
    """Did the step counter pass a multiple of `every` going from `before` to `after`?"""
    return every > 0 and after // every > before // every


def local_end(end: int, dist: Dist, num_tasks: int) -> int:
    """This rank's env-step count when the global count reaches `end`: `end` on one rank; with W ranks
    (multi-task) its share by task count, the shares adding up to `end` (the global count ends at it)."""
    if dist.world == 1:
        return end
    tasks = [len(Dist(r, dist.world).shard(num_tasks)) for r in range(dist.world)]
    shares = [end * n // sum(tasks) for n in tasks]
    return shares[dist.rank] + (1 if dist.rank < end - sum(shares) else 0)


def diverged(step: int, why: str, ckpt_dir: Path) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged at env step {step:,} ({why}); nothing was saved after it (last "
                            f"good checkpoint: {checkpoint.last_good(ckpt_dir)}); lower the learning rates "
                            f"(sac.*_lr) and start again")


def close_all(parts: list, log) -> None:
    """Close every part even if closing another fails: a worker left running would block the
    interpreter's exit (it joins daemon processes, which ignore SIGTERM here)."""
    for part in parts:
        if part is not None:
            try:
                part.close()
            except Exception as e:  # the run is ending: say so, and close the next part anyway
                log(f"closing {type(part).__name__} failed: {type(e).__name__}: {e}")


class Trainer:
    """The loop (the module docstring has its contracts), its stages, and its checkpoint state."""

    def __init__(self, cfg: Config, suite: Suite, run_dir: Path, resume: bool, dist: Dist = Dist(),
                 log=print, schedule: Schedule | None = None, discard_logs: bool = False):
        """schedule: a continual run's stages (launch/config/__init__.py: plan_schedule); None: one stage of
        every task for run.steps. discard_logs: the run dir holds logs of an attempt that failed
        before its first checkpoint (an elastic restart): start them afresh."""
        self.cfg, self.suite, self.run_dir, self.dist, self.log = cfg, suite, run_dir, dist, log
        seed, rank, num_tasks = cfg.run.seed, dist.rank, len(suite.tasks)
        cores = free_cores(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # before any worker starts
        self.continual = schedule is not None
        self.schedule = schedule or Schedule.multitask(suite.task_names, cfg.run.steps)
        self.device = resolve_device(cfg.run.device, dist.local_rank)
        torch.manual_seed(seeding.seed_for(seed, "networks"))  # the same initial networks on every rank
        planned = planned_updates(self.schedule.stages, cfg.sac.warmup_steps_per_task, cfg.sac.updates_per_round,
                                  cfg.env.envs_per_task)
        self.hidden = cfg.continual.boundaries == "hidden"
        network_tasks = 1 if self.hidden else num_tasks  # hidden boundaries: one task to the networks
        self.learner = make_learner(cfg.sac, suite.obs_dim, suite.action_dim, network_tasks, self.device,
                                  synchronizer=make_synchronizer(cfg.sync, dist, num_tasks), balance=cfg.balance,
                                  seed=seed, planned_updates=planned)
        torch.manual_seed(seeding.seed_for(seed, "learner", rank))  # also seeds every CUDA device
        self.learning = Learning(cfg, suite, self.learner, self.schedule, self.continual, dist)
        self.step = self.local_step = 0  # env steps: all ranks / this rank
        self.actors = StageActors(cfg, rank, network_tasks, cores, self.learner.actor, log, self.schedule.stages,
                                  hide_tasks=self.hidden)
        state = checkpoint.load_latest_on_every_rank(run_dir / "checkpoints", dist) if resume else {}
        if resume:
            self.load_state_dict(state)
        log_from = self.step if resume else (-1 if discard_logs else None)
        self.runlog = RunLog(run_dir, resume_step=log_from) if dist.is_main else None
        self.telemetry = Telemetry(dist, suite, self.runlog, log)
        self.evaluator = make_evaluator(cfg, network_tasks, run_dir) if dist.is_main else None
        for request in state.get("pending_evaluations", []) if dist.is_main else []:
            self.evaluator.submit(*request)  # a preempted run's evaluations that had not come back
        self.stage_index = stage_at(self.schedule.stages, self.step)
        self._start_stage(resumed=self.step > self.schedule.stages[self.stage_index].start)

    @property
    def plan(self):
        """How this stage's actors and learner threads were sized (launch/machine.py)."""
        return self.actors.plan

    # -- stages -------------------------------------------------------------------------------
    def _start_stage(self, resumed: bool) -> None:
        """Begin stage `stage_index` (resumed: in its middle): the learner's side, then fresh actors (random first)."""
        k, stages = self.stage_index, self.schedule.stages
        self.learning.start_stage(k, resumed, self._train_on_replay)
        if self.continual and self.dist.is_main:
            names = ", ".join(self.suite.tasks[t].name for t in stages[k].tasks)
            self.log(f"stage {k + 1}/{len(stages)}: {names} (env steps {stages[k].start:,} to {stages[k].end:,})")
        self.actors.start(self.learning.collected, self.step, self.device)
        if self.hidden and self.learner.num_updates:  # no warm-up after the first stage: act at once
            self.actors.publish(self.learner.num_updates, wait=True)

    def _train_on_replay(self, updates: int) -> None:
        """Learner updates on what replay holds, with no new env steps (PackNet's retraining)."""
        self.learning.update(updates)
        self._check_finite()

    def _end_stage(self) -> None:
        """The stage's budget is spent: end_task (it may train further); a rehearsing strategy's replay saved once."""
        strategy, replay, ctx = self.learning.strategy, self.learning.replay, self.learning.context
        if self.learning.end_stage() and strategy.rehearses and self.dist.is_main:
            for t in ctx.tasks:
                checkpoint.save_rehearsal(self.run_dir / "checkpoints", t, replay.task_state(t))

    # -- divergence ---------------------------------------------------------------------------
    def _check_finite(self) -> None:
        """Stop on non-finite weights before anything is saved or evaluated from them. Collective
        (every rank calls it at the same step): under local SGD ranks' weights differ between
        averages, and one rank stopping alone would leave the others waiting in the next all-reduce."""
        why = self.dist.first_reason(self.learner.nonfinite())
        if why:
            raise diverged(self.step, why, self.run_dir / "checkpoints")

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict | None:
        """What a checkpoint at this step holds (launch/checkpoint.py), on rank 0; None on the other
        ranks. A collective every rank calls at the same step: local-SGD ranks are averaged, then
        every rank's own part gathered. pending_evaluations: filled by checkpoint.save_run."""
        self._check_finite()  # collective: all ranks stop together
        self.learner.synchronizer.sync_point(self.learner)
        ranks = self.dist.gather_objects({"steps": self.local_step, "rng": checkpoint.rng_state(self.learning.rng),
                                          "steps_by_actor": dict(self.actors.steps_by_actor),
                                          **self.learning.rank_state()})
        return checkpoint.pack(self.learning.state_dict(), ranks) if self.dist.is_main else None

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's state (every rank, each taking its own part; a rehearsing
        strategy's finished stages' replay from their files); UserError if it does not fit."""
        stages, replay = self.schedule.stages, self.learning.replay
        with checkpoint.loading_into_this_run():
            mine = checkpoint.unpack(state, self.dist.rank, self.dist.world)
            self.learning.load_state_dict(mine)
            checkpoint.set_rng_state(mine["rng"], self.learning.rng)
            self.step, self.local_step = mine["step"], mine["steps"]
            self.actors.steps_by_actor = Counter(mine["steps_by_actor"])
            if self.learning.strategy.rehearses and "replay" not in mine:  # the finished stages' replay
                for task in (t for stage in stages[:stage_at(stages, self.step)] for t in stage.tasks):
                    replay.load_task_state(task, checkpoint.load_rehearsal(self.run_dir / "checkpoints", task))

    def _save_checkpoint(self, preempted: bool = False) -> None:
        state = self.state_dict()  # every rank; rank 0 writes
        if state is not None:
            checkpoint.save_run(self.run_dir / "checkpoints", self.step, state, self.cfg.run.keep_checkpoints,
                                self.evaluator, self.runlog, preempted)

    # -- evaluation ---------------------------------------------------------------------------
    def _write_evals(self, evaluations: list[list[dict]]) -> None:
        for rows in evaluations:
            self.runlog.evaluation(rows)

    def _evaluate(self, video: bool = False) -> None:
        self._check_finite()
        self.learner.synchronizer.sync_point(self.learner)
        if self.dist.is_main:
            policy = torch.nn.utils.parameters_to_vector(self.learner.actor.parameters()).detach().cpu()
            weights = self.learning.eval_weights(policy, self.stage_index)
            self.evaluator.submit(self.step, self.learner.num_updates, weights, video)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> float | None:
        """Train to cfg.run.steps; returns the final mean eval success. Sets `train_steps_per_s`:
        env steps per second of training, evaluation and checkpoints excluded."""
        cfg, learner, learning, actors = self.cfg, self.learner, self.learning, self.actors
        total, stages = cfg.run.steps, self.schedule.stages
        progress = Progress(total, self.step, learner.num_updates)
        episodes = defaultdict(list)  # task -> finished training episodes since the last log
        credit, since_publish = UpdateCredit(), 0
        start_step, start_time, paused = self.step, time.perf_counter(), 0.0
        if self.step == 0:
            self._evaluate(films(cfg, 0, stage_end=False, last=False))
            paused = time.perf_counter() - start_time
        if learner.num_updates and self.step > stages[self.stage_index].start:
            actors.publish(learner.num_updates, wait=True)  # resumed mid-stage: act at once
        while self.step < total:
            stage = stages[self.stage_index]
            per_step = updates_per_step(stage, cfg.sac.updates_per_round, cfg.env.envs_per_task)
            ready = learning.ready(stage, self.step)  # steps collected from here on earn updates if it was
            room = local_end(stage.end, self.dist, len(self.suite.tasks)) - self.local_step
            new_steps, polled = actors.collect(room, learning.replay, episodes)
            self.local_step += new_steps
            before = self.step
            self.step, ready, finite, stop = self.dist.sync_counts(self.local_step, ready, learner.finite_so_far(),
                                                                   preemption.requested())
            if not finite:  # on some rank: every rank stops here together
                raise diverged(self.step, "a non-finite loss", self.run_dir / "checkpoints")
            due = credit.earn(self.step - before, per_step, ready)  # every rank's steps: the same on each
            updating = time.perf_counter()
            learning.update(due)
            learning.observe_returns(actors.take_returns())
            if learning.boundary_detected(self.step):  # a stage start to the learner: fresh actors warm up
                actors.start(learning.collected, self.step, self.device)
                self.log(f"boundary detected at env step {self.step:,} ({cfg.continual.detector} detector)")
            since_publish += due
            if ready and cfg.runtime.backend != "single":  # the single loop steps the envs itself: no "bound"
                progress.learner(polled, time.perf_counter() - updating)
            progress.advance(self.step - before, learning=ready)
            learning.strategy.on_progress(self.step - stage.start, learning.context)
            if due and (since_publish >= cfg.runtime.publish_every or actors.version == 0) \
                    and actors.publish(learner.num_updates):  # False: a GPU learner's copy is on its way
                since_publish = 0
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
                self._evaluate(films(cfg, self.step, stage_done, last))  # filmed too? (eval.video)
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
        learner, actors = self.learner, self.actors
        learner.synchronizer.sync_point(learner)
        ranks = self.telemetry.gather_summaries(learner, {
            "rank": self.dist.rank, "tasks": [self.suite.tasks[i].name for i in self.learning.collected],
            "env_steps": self.local_step, "steps_by_actor": dict(actors.steps_by_actor),
            "actor_restarts": actors.restarts(), "updates": learner.num_updates, "sync": learner.synchronizer.stats()})
        if self.dist.is_main:
            self._write_evals(self.evaluator.wait())
            self.telemetry.finish(self.step, progress, ranks, {
                "sync": self.cfg.sync.mode, "train_env_steps_per_s": self.train_steps_per_s,
                "workers": actors.plan.note, **self.learning.summary()}, self.run_dir)

    def _log_training(self, progress: Progress, episodes: dict) -> None:
        self.learning.log_plasticity(self.runlog, self.step)
        self.telemetry.training(self.step, progress, self.learner, self.learning.losses,
                                steps_left(self.schedule.stages, self.step, self.cfg.sac.warmup_steps_per_task),
                                episodes, self.actors.restarts(), self.actors.steps_by_actor, self.actors.take_lags())

    def close(self) -> None:
        close_all([self.actors, self.evaluator, self.runlog], self.log)
