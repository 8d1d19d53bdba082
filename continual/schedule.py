"""Task schedules: a continual run trains a sequence of stages, each on its task(s) for a budget.

`--sequence` names the order: a preset (CW10, CW20, PM2, or any task preset such as MT10 read in
order) or a comma list of stages, where a stage is `task[+task...][:steps]`, e.g.
`reach-e:3000,reach-w+reach-n`. A stage's budget defaults to steps_per_task x its task count.
A task that comes back later in the sequence is a new task with its own id (and head), named
"task#2", "task#3", ...: Continual World's CW20 treats its second pass that way, and the metrics
need one training window per task.

The suite of a continual run holds the sequence's tasks in order of first training, so task ids
are sequence positions and every task of the sequence is evaluated throughout the run. A
multi-task run is the one-stage schedule `Schedule.multitask`: both training loops (launch/loop/trainer.py,
launch/rllib_engine.py) read stages, which stage trains each task, and each stage's TaskContext
from a Schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from continual.strategies.base import TaskContext
from envs.base import REPEAT_MARK


@dataclass(frozen=True)
class Stage:
    tasks: tuple[int, ...]  # task ids (indices into the suite)
    start: int              # first env step of the stage
    end: int                # the stage trains env steps [start, end)

    @property
    def steps(self) -> int:
        return self.end - self.start


def parse_sequence(text: str, presets: dict[str, list[str]]) -> list[tuple[list[str], int | None]]:
    """[(task names, budget or None)] per stage, names as written (repeats not yet renamed)."""
    text = text.strip()
    if text in presets:
        return [([name], None) for name in presets[text]]
    stages = []
    for part in text.split(","):
        part = part.strip()
        names, sep, budget = part.partition(":")
        tasks = [n.strip() for n in names.split("+") if n.strip()]
        if not tasks or (sep and not budget.strip()):
            raise ValueError(f"malformed stage {part!r} in sequence {text!r}; "
                             f"expected task[+task...][:steps], or a preset: {', '.join(presets)}")
        if any(REPEAT_MARK in n for n in tasks):
            raise ValueError(f"sequence {text!r}: write a repeated task by its plain name; "
                             f"repeats are numbered automatically")
        steps = None
        if sep:
            try:
                steps = int(budget.replace("_", ""))
            except ValueError:
                raise ValueError(f"stage {part!r}: budget {budget!r} is not a whole number of steps") from None
            if steps <= 0:
                raise ValueError(f"stage {part!r}: budget must be positive")
        stages.append((tasks, steps))
    return stages


def build_schedule(text: str, presets: dict[str, list[str]], steps_per_task: int) -> tuple[list[str], list[Stage]]:
    """The suite's task list (repeats renamed "x#k", in order of first training) and the stages."""
    seen: dict[str, int] = {}
    names: list[str] = []
    stages: list[Stage] = []
    start = 0
    for tasks, steps in parse_sequence(text, presets):
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"sequence {text!r} names a task twice in one stage")
        ids = []
        for name in tasks:
            seen[name] = seen.get(name, 0) + 1
            names.append(name if seen[name] == 1 else f"{name}{REPEAT_MARK}{seen[name]}")
            ids.append(len(names) - 1)
        steps = steps if steps is not None else steps_per_task * len(tasks)
        stages.append(Stage(tuple(ids), start, start + steps))
        start += steps
    return names, stages


@dataclass(frozen=True)
class Schedule:
    """A continual run's plan, resolved once from its sequence: the suite's task names (repeats
    renamed "x#k", in order of first training; task id = position) and the stages in order."""
    names: tuple[str, ...]
    stages: tuple[Stage, ...]

    @classmethod
    def multitask(cls, names: Sequence[str], steps: int) -> Schedule:
        """A multi-task run's plan: one stage of every task, env steps [0, steps)."""
        return cls(tuple(names), (Stage(tuple(range(len(names))), 0, steps),))

    def records(self) -> list[dict]:
        """The stages with task names, as config.yaml records them for the metrics."""
        return [{"tasks": [self.names[t] for t in st.tasks], "start": st.start, "end": st.end} for st in self.stages]

    @property
    def task_stage(self) -> list[int]:
        """task_stage[t]: the stage that trains task t (a task trains in one stage: a repeat is a new task)."""
        return [next(k for k, st in enumerate(self.stages) if t in st.tasks) for t in range(len(self.names))]

    def context(self, k: int, replay, rng: np.random.Generator, train: Callable[[int], None] | None = None,
                resumed: bool = False) -> TaskContext:
        """What stage k's task hooks get (continual/strategies/base.py): its tasks, the tasks of the
        stages before it, its budget, the replay its end_task reads, and `train` (extra learner
        updates on replay; None: there are none)."""
        stage = self.stages[k]
        earlier = tuple(t for st in self.stages[:k] for t in st.tasks)
        extra = {} if train is None else {"train": train}
        return TaskContext(k, len(self.stages), stage.tasks, earlier, stage.steps, replay, rng, resumed, **extra)


def schedule_from(text: str, presets: dict[str, list[str]], steps_per_task: int) -> Schedule:
    names, stages = build_schedule(text, presets, steps_per_task)
    return Schedule(tuple(names), tuple(stages))


def stage_at(stages: list[Stage], step: int) -> int:
    """Index of the stage that trains env step `step` (the last stage once the schedule is done)."""
    for k, stage in enumerate(stages):
        if step < stage.end:
            return k
    return len(stages) - 1


def blend_shares(stages: Sequence[Stage], blend_steps: int, step: int) -> dict[int, float]:
    """Each task's share of the episodes starting at env step `step` (continual.blend_steps, one task a
    stage): at a switch b from task i to task j, over [b - blend/2, b + blend/2) j's share rises
    linearly from 0 to 1 (0.5 at b) and i's falls; elsewhere the stage's task has it all."""
    k = stage_at(list(stages), step)
    current = stages[k].tasks[0]
    half = blend_steps / 2
    if blend_steps and k + 1 < len(stages) and step >= stages[k].end - half:  # towards the next task
        rise = (step - (stages[k].end - half)) / blend_steps
        return {current: 1 - rise, stages[k + 1].tasks[0]: rise}
    if blend_steps and k > 0 and step < stages[k].start + half:  # still leaving the previous one
        rise = 0.5 + (step - stages[k].start) / blend_steps
        return {stages[k - 1].tasks[0]: 1 - rise, current: rise}
    return {current: 1.0}


def updates_per_step(stage: Stage, updates_per_round: int, envs_per_task: int) -> float:
    """What one env step (of any rank) earns in `stage`: a round steps each of its tasks' envs once
    and earns `updates_per_round` updates."""
    return updates_per_round / (len(stage.tasks) * envs_per_task)


@dataclass
class UpdateCredit:
    """The update-to-data contract of the training loop: env steps collected while the learner is
    ready earn `updates_per_step` updates each; whole updates are paid out and the fraction carried
    to the next call; steps collected while it is not ready (warm-up, a replay refill) earn none
    and drop what was carried. The same on every backend and every learner rank (every rank counts
    the global steps), so the ratio depends on neither."""

    carried: float = 0.0

    def earn(self, new_steps: int, per_step: float, ready: bool) -> int:
        """The updates due for `new_steps` env steps."""
        self.carried = self.carried + new_steps * per_step if ready else 0.0
        due = int(self.carried)
        self.carried -= due
        return due

    def reset(self) -> None:
        """A stage ended: nothing carries into the next one."""
        self.carried = 0.0


def planned_updates(stages: list[Stage], warmup_per_task: int, updates_per_round: int, envs_per_task: int) -> int:
    """Updates the stages earn (a round steps every task's envs once; each stage's warm-up earns
    none): the learning-rate schedule's length."""
    total = 0
    for stage in stages:
        learning = max(0, stage.steps - warmup_per_task * len(stage.tasks))
        total += int(learning * updates_per_round / (len(stage.tasks) * envs_per_task))  # exact integer ratio
    return max(total, 1)


def steps_left(stages: list[Stage], step: int, warmup_per_task: int) -> tuple[int, int]:
    """(warm-up, learning) env steps left after `step`, for the ETA."""
    warmup_left = learning_left = 0
    for stage in stages[stage_at(stages, step):]:
        warm_end = min(stage.end, stage.start + warmup_per_task * len(stage.tasks))
        warmup_left += max(0, warm_end - max(step, stage.start))
        learning_left += max(0, stage.end - max(step, warm_end))
    return warmup_left, learning_left
