"""The one interface every continual-learning strategy implements (Avalanche-style plugins).

A strategy is a learner hook (agents/hooks.py: the learner calls its gradient hooks at fixed
points of every update, beside any other hooks) plus the task hooks the trainer calls:

    start_task(ctx)              a stage begins (fresh or after a resume: see `resumed`)
    on_progress(step, ctx)       every trainer iteration, with the env steps done in the stage
    end_task(ctx)                the stage's budget is spent; it may still train (ctx.train, PackNet's
                                 retraining) before the stage's final evaluation
    observe_gradients(network)   the network's .grad holds its task loss's gradient (no penalty yet)
    penalty(network)             a term added to that network's loss (its learner-hook loss term)
    before_step(networks)        gradients final, optimizer steps next: transform them
    after_step(networks)         optimizer steps done: repair weights that must not move
    eval_weights(flat, stage)    the policy weights to evaluate each task with
    state_dict()/load_state_dict(state)   everything needed to resume (tensors, plain types)

`networks` is ("critic",) then ("actor",) in sequential updates, ("critic", "actor") in
simultaneous ones. Which parameters a method protects: the *shared* parameters of the networks
in `continual.regularize` (`named_shared_parameters()`: the trunk, a shared head; never per-task
heads or task embeddings), as Continual World's `common_variables`.

A strategy that `rehearses` trains on earlier tasks' replay as well: the trainer then keeps
their buffers (and checkpoints them once, at the end of their stage) and samples every seen
task in each update batch. A strategy that `needs_states` reads stored transitions of the
stage's tasks from ctx.replay in end_task (importances, a memory); the others never touch it.
Recurrent agents' replay (`sac.memory`: agents/sequence_replay.py) gives windows of steps instead
of single transitions (`sample_windows`; 3RL's context replay: transitions with their windows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from agents.context import ContextReplay
from agents.hooks import LearnerHook
from agents.sequence_replay import SequenceReplay, positions
from continual.strategies.importance import States

NETWORKS = {"actor": ("actor",), "critic": ("critic",), "both": ("critic", "actor")}


@dataclass
class TaskContext:
    stage: int                  # index of the stage in the schedule
    num_stages: int
    tasks: tuple[int, ...]      # tasks the stage trains
    earlier: tuple[int, ...]    # tasks of the stages before it
    stage_steps: int            # the stage's env-step budget
    replay: object              # agents.replay.MultiTaskReplay (the stage's data is still there at end_task)
    rng: np.random.Generator
    resumed: bool = False       # start_task after a resume: state came from the checkpoint
    train: Callable[[int], None] = lambda updates: None  # run this many extra learner updates on replay


class Strategy(LearnerHook):
    """Fine-tuning: every hook does nothing. Subclasses override what they need."""

    rehearses = False
    stream_replay = ""    # the replay it needs (launch/loop/learning.py build_replay): "" the config's, "reservoir"
                          # (agents/stream_replay.py ReservoirReplay), "recent" (RecentReplay)
    boundary_free = True  # works with hidden boundaries without a detector (fine-tuning; the task-free methods)
    needs_task_ids = False  # reads task ids (its own per-task state): refused with hidden boundaries
    reads_losses = False  # after_update gets each update's losses (a host sync per update)
    needs_states = False  # end_task reads ctx.replay (a training loop without our replay builds a view of its own)
    default_networks = "actor"  # what continual.regularize="" means for this method

    def __init__(self, cfg=None, learner=None, task_stage: list[int] | None = None, seed: int = 0):
        """cfg: launch.config.ContinualConfig; task_stage[t]: the stage that trains task t;
        seed: the run seed (strategies draw their random streams from it, agents/seeding.py)."""
        self.cfg, self.learner, self.task_stage, self.seed = cfg, learner, task_stage or [], seed
        names = NETWORKS[cfg.regularize or self.default_networks] if cfg is not None else ()
        self.networks = {name: getattr(learner, name) for name in names}
        self._shared = {name: list(module.named_shared_parameters()) for name, module in self.networks.items()}

    def shared(self, network: str) -> list[tuple[str, torch.Tensor]]:
        """(name, parameter) pairs the method protects in `network`."""
        return self._shared[network]

    def coef(self, default: float) -> float:
        return default if self.cfg.coef is None else self.cfg.coef

    def replay_extra(self, action_dim: int) -> dict[str, tuple[int, ...]]:
        """Extra per-row columns its stream replay keeps ({name: shape}; computed by its annotate)."""
        return {}

    def use_replay(self, replay) -> None:
        """The replay the learner samples from, once built."""

    def sample(self, replay, per_task: int, rng: np.random.Generator, tasks):
        """One update's batch: by default task-balanced over `tasks`, `per_task` of each."""
        return replay.sample(per_task, rng, tasks)

    def after_update(self, row_losses: torch.Tensor, loss: float) -> None:
        """An update is done: its rows' critic losses before the step [B] and their mean (TF-MAS reads them)."""

    def start_task(self, ctx: TaskContext) -> None:
        pass

    def on_progress(self, step_in_stage: int, ctx: TaskContext) -> None:
        pass

    def end_task(self, ctx: TaskContext) -> None:
        pass

    def penalty(self, network: str) -> torch.Tensor | float:
        return 0.0

    def loss_terms(self, network: str, batch, features) -> dict[str, torch.Tensor]:
        penalty = self.penalty(network)
        return {f"penalty/{network}": penalty} if torch.is_tensor(penalty) else {}

    def restore_frozen(self) -> None:
        """Something outside the update changed weights (a plasticity remedy): put back every weight
        the strategy has frozen, exactly."""

    def eval_weights(self, flat: torch.Tensor, stage: int) -> torch.Tensor:
        """[P] (one policy for every task) or [T, P] (task t evaluated with row t)."""
        return flat

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


NO_STRATEGY = Strategy()


def sample_states(replay, task: int, count: int, rng: np.random.Generator):
    """Up to `count` distinct stored transitions of `task`: (obs, action, task) tensors."""
    size = int(replay.size[task])
    rows = replay.rows(task, rng.choice(size, min(count, size), replace=False))
    return (torch.from_numpy(rows["obs"]), torch.from_numpy(rows["action"]),
            torch.full((len(rows["obs"]),), task, dtype=torch.int64))


def sample_windows(replay: SequenceReplay, tasks, steps: int, rng: np.random.Generator):
    """Windows of about `steps` steps of each task (whole windows of replay.length steps, at least
    one), one batch (a context replay's: transitions with their context windows)."""
    return replay.sample(max(1, -(-steps // replay.length)), rng, tasks=list(tasks))


def importance_states(replay, tasks, count: int, rng: np.random.Generator, device) -> States:
    """The networks' inputs on about `count` stored steps spread over `tasks` (EWC's and MAS's states):
    single transitions, 3RL's transitions with their windows, or windows of steps for a memory."""
    per_task = max(1, count // len(tasks))
    if isinstance(replay, ContextReplay):
        b = replay.sample(per_task, rng, tasks=list(tasks))
        window = b.history[:, :-1]
        states = States((b.obs, window, b.task), (b.obs, b.action, window, b.task), torch.ones(len(b.obs), 1))
    elif isinstance(replay, SequenceReplay):
        b = sample_windows(replay, tasks, per_task, rng)
        obs, prev_action, prev_reward = (x[:, :-1] for x in positions(b))  # the L steps with an action
        states = States((obs, prev_action, prev_reward, b.task), (obs, prev_action, prev_reward, b.action, b.task),
                        b.mask)
    else:
        obs, action, task = (torch.cat(c) for c in zip(*(sample_states(replay, t, per_task, rng) for t in tasks)))
        states = States((obs, task), (obs, action, task), torch.ones(len(obs), 1))
    return States(*(tuple(x.to(device) for x in inputs) for inputs in states[:2]), states.mask.to(device))
