"""Continual World metrics (Wołczyk et al. 2021): performance, forgetting, forward transfer, CIs.

Definitions follow the paper and its reference code (awarelab/continual_world,
continualworld/results_processing/tables.py; CW logs one evaluation every 20k env steps, the
first after 20k steps, each tagged with the task being trained when it was taken).

Evaluations and windows
    An evaluation at step s measures the policy after s env steps of training. A stage trains
    env steps [start, end), so the evaluations that belong to it, "its window", are those with
    start < s <= end: the one at s == end is the last one of the stage (taken after its final
    step), the one at s == start still shows the previous stage's policy. This is how CW assigns
    evaluations (its eval after step 1M is tagged with task 0, none is tagged at step 0). The
    last stage's window (the stage that ends last) has no upper bound: an evaluation logged after
    the schedule's end (the trainer's final one can land a few steps past it) measures the final
    policy. A task's own window is `Run.training_window(task)`: the first stage that trains it (a
    sequence that repeats a task, like CW20, should name the repetitions as distinct tasks, as
    CW's one-hot heads do).

Value of a task at the end of a window, p_t(window)
    The mean of task t's last `last_k` (default 5, CW's `groupby(...).tail(5).mean()`) non-NaN
    evaluations with step in the window; fewer if the window has fewer, NaN if it has none.
    "At the end of the run" is the end of the last stage's window. CW takes the run's last 5
    log rows instead; the two agree whenever the last stage has >= last_k evaluations (CW: 50),
    and ours keeps the last task's forgetting exactly 0 when it has fewer.

performance (`final_performance`, `average_performance`)
    P_t = p_t(end of run); P = mean over all T tasks of P_t.

forgetting
    F_t = p_t(end of t's own window) - p_t(end of run): positive when the task got worse.
    The mean is over ALL T tasks, including the last one, whose F is 0 by construction (its own
    window ends the run): CW's `calculate_forgetting_individual` returns every task's column and
    `calculate_metrics` averages all of them, which is how its published forgetting is computed.

forward transfer
    AUC_t = mean of task t's non-NaN evaluations in its own window (CW: the mean of
    `current_success` over the log rows with `train/active_env == t`; with evenly spaced
    evaluations this is the right Riemann sum of the normalized area under p_t, not a trapezoid).
    AUC_ref_t = mean over the reference runs of task t (runs whose schedule trains t and nothing
    else) of each one's AUC over the same budget: evaluations with s0 < step <= s0 + L, where
    (s0, e0) is the reference run's window of t and L = end - start of t's window in the
    continual run (CW: the whole 1M-step single-task run). A reference run that trained t for
    fewer than L steps is an error. (A window reaching the end of its run's schedule is
    open-ended on both sides of the comparison, as above.)
    FT_t = (AUC_t - AUC_ref_t) / (1 - AUC_ref_t), NaN when AUC_ref_t == 1; FT = mean over tasks.
    CW normalizes with the reference mean over its seeds, so the mean over seeds of a run's FT_t
    equals CW's per-task figure.

Missing data: a NaN per-task value (no evaluation in a window) makes every mean that includes it
NaN (no silent averaging over a subset of tasks or seeds); `summarize` writes NaN as None.

Confidence intervals (CW's `BootstrapCI`): resample the seeds with replacement `reps` times
(default 4000), take the statistic of each resample, interval = the (1-c)/2 and (1+c)/2
quantiles with midpoint interpolation (default c = 0.90). The resampling draws from
`np.random.RandomState(seed)`, the stream behind CW's `np.random.seed(0); np.random.choice`,
so the bounds reproduce CW's numbers for the same per-seed values. For forward transfer the
method's seeds and the reference seeds are resampled independently, as CW does.

The full task x evaluation-time matrix is `run.success.T`; `performance_matrix` is its
task x stage-end summary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from metrics.multitask import check_same_tasks, last_valid_mean
from metrics.runs import Run


class TaskMetric(NamedTuple):
    """A metric's per-task values (in `run.tasks` order) and their mean over tasks."""
    per_task: np.ndarray
    mean: float


def final_window(run: Run) -> tuple[int, int]:
    """[start, end) of the schedule's last stage (the one that ends last)."""
    last = max(run.schedule, key=lambda stage: stage.end)
    return last.start, last.end


def _in_window(run: Run, window: tuple[int, int]) -> np.ndarray:
    """Mask of the evaluations with start < step <= end; a window that reaches the end of the
    schedule also takes the evaluations logged after it (they measure the final policy)."""
    start, end = window
    if end >= final_window(run)[1]:
        return run.steps > start
    return (run.steps > start) & (run.steps <= end)


def value_at_end(run: Run, task: str, window: tuple[int, int] | None = None, last_k: int = 5,
                 measure: str = "success") -> float:
    """p_task(window): mean of the task's last `last_k` non-NaN evaluations with
    start < step <= end (window None: the last stage's window, "the end of the run"; a window
    reaching the schedule's end is open-ended); NaN if there are none."""
    window = final_window(run) if window is None else window
    values = run.values(measure)[_in_window(run, window), run.task_index(task)]
    return last_valid_mean(values, last_k)


def window_mean(run: Run, task: str, window: tuple[int, int], measure: str = "success") -> float:
    """Mean of the task's non-NaN evaluations with start < step <= end (open-ended if the
    window reaches the schedule's end); NaN if none."""
    values = run.values(measure)[_in_window(run, window), run.task_index(task)]
    values = values[~np.isnan(values)]
    return float(np.mean(values)) if len(values) else float("nan")


def performance_matrix(run: Run, last_k: int = 5, measure: str = "success") -> np.ndarray:
    """[T, S]: value of task t at the end of stage s, p_t((start_s, end_s])."""
    matrix = [[value_at_end(run, task, (stage.start, stage.end), last_k, measure)
               for stage in run.schedule] for task in run.tasks]
    return np.array(matrix, np.float64).reshape(len(run.tasks), len(run.schedule))


def final_performance(run: Run, last_k: int = 5, measure: str = "success") -> np.ndarray:
    """[T] P_t: each task's value at the end of the run."""
    return np.array([value_at_end(run, task, None, last_k, measure) for task in run.tasks])


def average_performance(run: Run, last_k: int = 5, measure: str = "success") -> float:
    """P: mean over all tasks of their value at the end of the run."""
    return float(np.mean(final_performance(run, last_k, measure)))


def forgetting(run: Run, last_k: int = 5, measure: str = "success") -> TaskMetric:
    """F_t = p_t(end of t's own training window) - p_t(end of run); mean over all T tasks,
    the last task (F = 0) included, as in CW."""
    per_task = np.array([value_at_end(run, task, run.training_window(task), last_k, measure)
                         for task in run.tasks]) - final_performance(run, last_k, measure)
    return TaskMetric(per_task, float(np.mean(per_task)))


def _reference_runs_of(task: str, env: str, reference_runs: Sequence[Run]) -> list[Run]:
    """The runs whose schedule trains `task`, or the environment it runs (`env`: a repeat "x#2"
    runs x, so x's single-task runs are its references; the run's log says which), and nothing
    else."""
    return [r for r in reference_runs if r.trained_tasks() in ({task}, {env})]


def reference_aucs(task: str, budget: int, reference_runs: Sequence[Run], env: str | None = None) -> np.ndarray:
    """Per reference run of `task` (running `env`, default: the task itself): its AUC over its
    first `budget` training steps, the mean of its evaluations with s0 < step <= s0 + budget."""
    runs = _reference_runs_of(task, env or task, reference_runs)
    if not runs:
        raise ValueError(f"no reference run trains only {task}; forward transfer needs one")
    aucs = []
    for ref in runs:
        (ref_task,) = ref.trained_tasks()
        start, end = ref.training_window(ref_task)
        if end - start < budget:
            raise ValueError(f"reference run {ref.name or ref.seed} trained {task} for "
                             f"{end - start} steps, fewer than the {budget} to compare with")
        aucs.append(window_mean(ref, ref_task, (start, start + budget)))
    return np.array(aucs)


def _normalized_ft(auc: np.ndarray, auc_ref: np.ndarray) -> np.ndarray:
    """(auc - auc_ref) / (1 - auc_ref), NaN where auc_ref == 1."""
    gap = 1.0 - auc_ref
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap == 0, np.nan, (auc - auc_ref) / gap)


def forward_transfer(run: Run, reference_runs: Sequence[Run]) -> TaskMetric:
    """FT_t = (AUC_t - AUC_ref_t) / (1 - AUC_ref_t) on success; AUC_t = mean of task t's
    evaluations in its own window, AUC_ref_t = mean over t's reference runs of their AUC over
    the same number of steps. Mean over all tasks."""
    auc, auc_ref = _auc_matrices([run], reference_runs, balanced=False)
    per_task = _normalized_ft(auc[0], np.array([np.mean(a) for a in auc_ref]))
    return TaskMetric(per_task, float(np.mean(per_task)))


def _auc_matrices(runs: Sequence[Run], reference_runs: Sequence[Run], balanced: bool):
    """AUC [seeds, T] of the runs and, per task, the reference AUCs ([refs, T] if balanced)."""
    tasks = runs[0].tasks
    windows = [runs[0].training_window(task) for task in tasks]
    auc = np.array([[window_mean(run, task, run.training_window(task)) for task in tasks]
                    for run in runs])
    auc_ref = [reference_aucs(task, end - start, reference_runs, runs[0].env_of(task))
               for task, (start, end) in zip(tasks, windows)]
    if balanced:
        counts = {task: len(a) for task, a in zip(tasks, auc_ref)}
        if len(set(counts.values())) != 1:
            raise ValueError(f"the forward-transfer bootstrap needs the same number of reference "
                             f"runs for every task (as CW's); got {counts}")
        auc_ref = np.stack(auc_ref, axis=1)
    return auc, auc_ref


def bootstrap_ci(values_per_seed: Sequence[float], reps: int = 4000, confidence: float = 0.90,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, lower, upper): the seeds' mean and CW's bootstrap interval of it (resample the
    seeds with replacement, mean of each resample, midpoint quantiles)."""
    values = np.asarray(values_per_seed, np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D sequence of per-seed values")
    rows = np.random.RandomState(seed).choice(len(values), (reps, len(values)))
    lower, upper = _midpoint_interval(values[rows].mean(axis=1), confidence)
    return float(values.mean()), lower, upper


def _midpoint_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    return (float(np.quantile(replicates, alpha, method="midpoint")),
            float(np.quantile(replicates, 1.0 - alpha, method="midpoint")))


def forward_transfer_ci(runs: Sequence[Run], reference_runs: Sequence[Run], reps: int = 4000,
                        confidence: float = 0.90, seed: int = 0) -> tuple[float, float, float]:
    """(FT, lower, upper) over the seeds of one method, as CW's `calculate_forward_transfer`:
    FT = mean over tasks of (mean_seeds AUC_t - mean_refs AUC_ref_t) / (1 - mean_refs AUC_ref_t);
    each replicate resamples the method's seeds and (independently) the reference seeds.
    Every task needs the same number of reference runs (ValueError otherwise). A replicate
    whose reference mean is 1 is NaN, and then so are the bounds."""
    check_same_tasks(runs)
    auc, auc_ref = _auc_matrices(runs, reference_runs, balanced=True)
    point = float(np.mean(_normalized_ft(auc.mean(axis=0), auc_ref.mean(axis=0))))
    # Same draw order as CW: the method's seed indices first, then the reference indices.
    rs = np.random.RandomState(seed)
    rows = rs.choice(len(auc), (reps, len(auc)))
    ref_rows = rs.choice(len(auc_ref), (reps, len(auc_ref)))
    replicates = _normalized_ft(auc[rows].mean(axis=1), auc_ref[ref_rows].mean(axis=1)).mean(axis=1)
    return (point, *_midpoint_interval(replicates, confidence))


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _entry(point: float, lower: float, upper: float, per_task: np.ndarray,
           tasks: tuple[str, ...]) -> dict:
    return {"mean": _json_float(point), "lower": _json_float(lower), "upper": _json_float(upper),
            "per_task": {task: _json_float(v) for task, v in zip(tasks, per_task)}}


def summarize(runs: Sequence[Run], reference_runs: Sequence[Run] | None = None, last_k: int = 5,
              reps: int = 4000, confidence: float = 0.90, seed: int = 0) -> dict:
    """CW's table row for the seeds of one method, JSON-serializable (NaN written as None):

    {"seeds": [...], "confidence": c, "reps": n,
     "performance" | "forgetting" | "forward_transfer": {"mean", "lower", "upper",
                                                         "per_task": {task: mean over seeds}}}

    performance and forgetting: mean over seeds of the per-seed task mean, `bootstrap_ci` over
    seeds. forward_transfer (only with reference_runs): `forward_transfer_ci`.
    """
    check_same_tasks(runs)
    tasks = runs[0].tasks
    summary: dict = {"seeds": [int(run.seed) for run in runs], "confidence": confidence,
                     "reps": reps}
    performance = np.array([final_performance(run, last_k) for run in runs])
    summary["performance"] = _entry(*bootstrap_ci(performance.mean(axis=1), reps, confidence, seed),
                                    performance.mean(axis=0), tasks)
    forgot = np.array([forgetting(run, last_k).per_task for run in runs])
    summary["forgetting"] = _entry(*bootstrap_ci(forgot.mean(axis=1), reps, confidence, seed),
                                   forgot.mean(axis=0), tasks)
    if reference_runs is not None:
        transfer = np.array([forward_transfer(run, reference_runs).per_task for run in runs])
        summary["forward_transfer"] = _entry(
            *forward_transfer_ci(runs, reference_runs, reps, confidence, seed),
            transfer.mean(axis=0), tasks)
    return summary
