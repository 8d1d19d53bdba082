"""The learner's side of the training loop (launch/loop/trainer.py): the SAC learner with its hooks (the
continual strategy, the auxiliary tasks), replay and its sampler's stream, and the current stage.

Boundaries (`continual.boundaries`):
  given   each stage of the schedule starts with the strategy's start_task and ends with its
          end_task; replay holds one buffer per task, batches are task-balanced and labelled, and
          the networks are told the task (as configured).
  hidden  the learner never hears of stages: its networks have one task (every env task is task 0
          to them: agents/models.py network_task), replay is one buffer for the whole stream (the
          strategy's kind: FIFO, reservoir, reservoir + recent), batches carry no task label but 0,
          and the strategy gets one start_task at the run's start. With a boundary detector
          (`continual.detector`, continual/detectors.py) each detection is a boundary to the
          learner: the strategy's end_task, the configured replay / optimizer resets, then
          start_task of the next detected stage, which begins, as every stage does, with the
          random-action warm-up (3RL's per-task burn-in, at detected switches). The schedule still
          drives the envs (the actors), the evaluator and the metrics; its own switches bring no
          warm-up.
"""

from __future__ import annotations

import torch

from agents import seeding
from agents.auxiliary import make_auxiliary_tasks
from agents.models import build_actor_and_critic, make_replay
from agents.plasticity import load_remedy_state, make_diagnostics, make_remedies, remedy_state
from agents.sac import SACLearner
from agents.stream_replay import RecentReplay, ReservoirReplay
from continual.detectors import make_detector
from continual.schedule import Schedule, Stage
from continual.strategies import TaskContext, make_strategy
from continual.strategies.task_free import replay_config
from envs.base import Suite
from launch.checkpoint import to_device
from launch.config import Config
from launch.distributed.ranks import Dist
from launch.errors import UserError


def build_replay(cfg: Config, suite: Suite, learner: SACLearner, strategy, num_tasks: int, stages: int):
    """The replay the strategy asks for (`stream_replay`: "" the config's, "reservoir", "recent")."""
    kind = strategy.stream_replay
    if not kind:
        replay_cfg = replay_config(cfg.replay, strategy, stages)
        return make_replay(replay_cfg, cfg.sac, num_tasks, suite.obs_dim, suite.action_dim, learner.device)
    rng = seeding.rng(cfg.run.seed, "reservoir")
    args = (num_tasks, cfg.replay.capacity_per_task)
    dims = (suite.obs_dim, suite.action_dim, rng, cfg.replay.normalize_rewards, strategy.replay_extra(suite.action_dim))
    return ReservoirReplay(*args, *dims) if kind == "reservoir" else \
        RecentReplay(*args, cfg.continual.recent_steps, *dims)


class Learning:
    """The learner's side of the loop; for the current stage its TaskContext, the tasks this rank
    collects and those an update samples (a rehearsing strategy's: every task seen so far)."""

    def __init__(self, cfg: Config, suite: Suite, learner: SACLearner, schedule: Schedule, continual: bool,
                 dist: Dist):
        seed, num_tasks = cfg.run.seed, len(suite.tasks)
        self.cfg, self.suite, self.learner, self.schedule, self.continual = cfg, suite, learner, schedule, continual
        self.hidden = cfg.continual.boundaries == "hidden"
        self.network_tasks = 1 if self.hidden else num_tasks
        self.rng = seeding.rng(seed, "replay", dist.rank)
        self.strategy = make_strategy(cfg.continual, learner, [0] if self.hidden else schedule.task_stage, seed)
        self.replay = build_replay(cfg, suite, learner, self.strategy, self.network_tasks, len(schedule.stages))
        self.strategy.use_replay(self.replay)
        self.auxiliary = make_auxiliary_tasks(cfg.aux, learner, suite.obs_dim, suite.action_dim, seed)
        # plasticity remedies (agents/plasticity/): hooks after the strategy, whose frozen weights they respect
        self.remedies = make_remedies(
            cfg.plasticity, learner, self.strategy,
            lambda: build_actor_and_critic(cfg.sac, suite.obs_dim, suite.action_dim, self.network_tasks), seed,
            self.probe_batch)
        self.diagnostics = make_diagnostics(cfg.plasticity, learner, seed) if dist.is_main else None
        # the diagnostics' hook last: it measures the gradient and the step the others left
        self.hooks = [self.strategy, *self.auxiliary, *self.remedies, *([self.diagnostics] if self.diagnostics else [])]
        learner.add_hook_parameters(self.hooks)
        # Rank 0's networks, temperatures and hook tensors on every rank: the auxiliary heads were
        # drawn from each rank's own stream (a single run's draws stay those of rank 0).
        dist.broadcast_tensors(learner.synced_tensors().values())
        self.losses: dict = {}
        self.collected = dist.shard(num_tasks)  # not empty: launch/config/validate.py checks the world first
        self.tasks: list[int] = []  # what an update samples
        self.context: TaskContext | None = None  # the stage's, built once
        self.detector = make_detector(cfg.continual) if self.hidden else None
        self.detected: list[int] = []  # env steps of the detected boundaries
        self.pending = False  # a detection waiting for the trainer's step count (boundary_detected)

    def update(self, updates: int) -> None:
        """`updates` learner updates, each on a batch the strategy samples (by default task-balanced
        over self.tasks); the detector sees each update's critic loss."""
        for _ in range(updates):
            batch = self.strategy.sample(self.replay, self.cfg.sac.batch_size_per_task, self.rng, self.tasks)
            self.losses = self.learner.update(batch, self.hooks)
            if (self.detector is not None and self.detector.reads_losses) or self.strategy.reads_losses:
                loss = float(self.losses["loss/qf1"] + self.losses["loss/qf2"]) / 2  # a host sync: only if read
                self.strategy.after_update(self.learner.critic_rows, loss)
                self.pending |= self.detector is not None and self.detector.observe_loss(loss)

    def probe_batch(self, rng):
        """About plasticity.probe_rows stored transitions over the tasks updates sample (a probe of the networks)."""
        return self.replay.sample(max(1, self.cfg.plasticity.probe_rows // len(self.tasks)), rng, self.tasks)

    def log_plasticity(self, runlog, step: int) -> None:
        """A log point: the plasticity diagnostics and the unit remedies' counts into the run log (rank 0:
        `runlog`; nothing when they are off or before the first update)."""
        if runlog is None or self.diagnostics is None or not self.learner.num_updates:
            return
        out = self.diagnostics.measure(self.replay, self.tasks)
        for remedy in self.remedies:
            out.update({f"plasticity/{key}": value for key, value in remedy.counts().items()})
        runlog.plasticity(step, out)

    def _stage_started(self) -> None:
        """A new stage (given) or a detected one (hidden) has begun: the remedies that act there."""
        for remedy in self.remedies:
            remedy.stage_started()

    def observe_returns(self, returns: list[float]) -> None:
        """Finished training episodes' returns, in arrival order (the change detector's signal)."""
        for episode_return in returns if self.detector is not None else ():
            self.pending |= self.detector.observe_return(episode_return)

    def boundary_detected(self, step: int) -> bool:
        """A detection since the last call (hidden boundaries): at env step `step` the stage detected so far
        ends (the strategy's end_task, replay and optimizer resets as configured) and the next begins."""
        if not self.pending:
            return False
        self.pending = False
        self.detected.append(step)
        if len(self.detected) >= len(self.schedule.stages):  # more detections than the stream has stages:
            return True  # recorded (and warmed up after), not acted on (PackNet would freeze everything)
        self.strategy.end_task(self.context)
        self.pending = False  # what end_task trained on (PackNet's retraining) detects nothing
        if self.cfg.continual.reset_replay and not self.strategy.rehearses:
            self.replay.clear([0])
        if self.cfg.continual.reset_optimizer:
            self.learner.reset_optimizers()
        self.context = self._detected_context(resumed=False)
        self.strategy.start_task(self.context)
        self._stage_started()
        return True

    def _detected_context(self, resumed: bool) -> TaskContext:
        """The learner's stage under hidden boundaries: one task (the stream), numbered by detections;
        PackNet is told how many stages the stream holds (for its pruning fractions), nothing else."""
        stages = len(self.schedule.stages)
        stage = min(len(self.detected), stages - 1)
        return TaskContext(stage, stages, (0,), (0,) if stage else (), 0, self.replay, self.rng, resumed, self.train)

    def ready(self, stage: Stage, step: int) -> bool:
        """May this rank update at env step `step`? The stage's warm-up is over (hidden: the first
        stage's) and each task it samples holds its warm-up's worth of transitions (a refill after a
        resume) and a batch."""
        sac = self.cfg.sac
        refill = max(sac.batch_size_per_task, min(sac.warmup_steps_per_task, self.cfg.replay.capacity_per_task))
        if self.hidden:  # the run's first stage, or the last detected one
            start, tasks = (self.detected[-1], 1) if self.detected else (0, len(self.schedule.stages[0].tasks))
            return step - start >= sac.warmup_steps_per_task * tasks and \
                self.replay.min_size([0]) >= min(refill, self.cfg.replay.capacity_per_task)
        return (step - stage.start >= sac.warmup_steps_per_task * len(stage.tasks)
                and self.replay.min_size([t for t in stage.tasks if t in self.collected]) >= refill)

    def start_stage(self, k: int, resumed: bool, train) -> None:
        """Begin stage k (resumed: in its middle). A continual stage's tasks are what this rank collects; it
        gets fresh replay and optimizers as configured (unless resumed) and the strategy's start_task.
        Hidden boundaries: the actors move on; the learner hears nothing after the run's first stage."""
        ctx = self.schedule.context(k, self.replay, self.rng, train, resumed=self.continual and resumed)
        if self.hidden:
            self.collected, self.tasks = list(ctx.tasks), [0]
            if self.context is None:  # the run's start (or its resume): the learner's only start_task
                self.train = train
                self.context = self._detected_context(resumed or k > 0)
                self.strategy.start_task(self.context)
            return
        self.context = ctx
        if not self.continual:
            self.tasks = self.collected
            return
        self.collected = list(ctx.tasks)
        rehearses, batch = self.strategy.rehearses, self.cfg.sac.batch_size_per_task
        if not ctx.resumed and ctx.stage > 0:
            if self.cfg.continual.reset_replay and not rehearses:
                self.replay.clear(ctx.earlier)
            if self.cfg.continual.reset_optimizer:
                self.learner.reset_optimizers()
        self.strategy.start_task(ctx)
        if not ctx.resumed and ctx.stage > 0:
            self._stage_started()
        self.tasks = sorted(set(ctx.tasks) | (set(ctx.earlier) if rehearses else set()))
        starved = [self.suite.tasks[t].name for t in self.tasks if t not in ctx.tasks and self.replay.size[t] < batch]
        if starved:  # nothing collects these tasks any more: updates would wait forever
            raise UserError(f"stage {ctx.stage + 1} rehearses {', '.join(starved)} but replay holds fewer than "
                            f"a batch ({batch}) of it")

    def end_stage(self) -> bool:
        """The schedule's stage ended: the strategy's end_task (given boundaries; hidden: nothing).
        True if it ran."""
        if self.hidden:
            return False
        self.strategy.end_task(self.context)
        return True

    def eval_weights(self, policy: torch.Tensor, stage: int) -> torch.Tensor:
        """The weights to evaluate with: the strategy's per-task rows (given), the policy itself (hidden:
        the evaluator has no task to pick a row with)."""
        return policy if self.hidden else self.strategy.eval_weights(policy, stage)

    def summary(self) -> dict:
        """learners.json's entries of hidden boundaries: the setting, and the detected boundaries' env steps."""
        out = {"boundaries": "hidden"} if self.hidden else {}
        return {**out, "detected_boundaries": self.detected} if self.detector is not None else out

    def state_dict(self) -> dict:
        """What every rank holds alike (rank 0's is saved); replay only with replay.save_in_checkpoint."""
        state = {"learner": self.learner.state_dict(), "strategy": self.strategy.state_dict(),
                 "auxiliary": [a.state_dict() for a in self.auxiliary]}
        if self.detector is not None:
            state["detector"] = {"state": self.detector.state_dict(), "detected": list(self.detected),
                                 "pending": self.pending}
        if self.remedies:
            state["remedies"] = remedy_state(self.remedies)
        if self.diagnostics is not None:
            state["diagnostics"] = self.diagnostics.state_dict()
        if self.cfg.replay.save_in_checkpoint:
            state["replay"] = self.replay.state_dict()
        return state

    def rank_state(self) -> dict:
        """This rank's own: replay reward statistics (small: kept even when replay is not), its optimizers'
        when ranks' differ (local SGD, unaveraged moments; else None), its balancers' (its tasks' weights)."""
        learner = self.learner
        return {"reward_stats": torch.from_numpy(self.replay.reward_stats.copy()),
                "optimizers": learner.optimizer_state_dicts() if learner.synchronizer.local_optimizer_state else None,
                "balancers": {net: b.state_dict() for net, b in learner.balancers.items()}}

    def load_state_dict(self, state: dict) -> None:
        """state_dict's and this rank's rank_state's entries (launch/checkpoint.py: unpack)."""
        learner, device = self.learner, self.learner.device
        learner.load_state_dict(state["learner"])
        if state["optimizers"] is not None:  # local SGD: this rank's own moments
            learner.load_optimizer_state_dicts(state["optimizers"])
        for net, balancer in learner.balancers.items() if state["balancers"] is not None else ():
            balancer.load_state_dict(state["balancers"].get(net, {}))
        if "replay" in state:
            self.replay.load_state_dict(state["replay"])
        self.replay.reward_stats[:] = state["reward_stats"].numpy()
        self.strategy.load_state_dict(to_device(state.get("strategy", {}), device))
        for task, aux in zip(self.auxiliary, state.get("auxiliary", []), strict=True):
            task.load_state_dict(to_device(aux, device))
        if self.remedies:
            load_remedy_state(self.remedies, to_device(state["remedies"], device))
        if self.diagnostics is not None and "diagnostics" in state:
            self.diagnostics.load_state_dict(state["diagnostics"])
        if self.detector is not None and "detector" in state:
            self.detector.load_state_dict(state["detector"]["state"])
            self.detected, self.pending = list(state["detector"]["detected"]), state["detector"]["pending"]
