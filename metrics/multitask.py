"""Multi-task metrics: final per-task scores, aggregates over runs x tasks, stratified bootstrap CIs.

Definitions follow rliable (Agarwal et al. 2021, `rliable.metrics` / `rliable.library`):

- A score matrix is `scores[r, t]`: the final score of seed (run) r on task t, one row per seed
  of one method (`score_matrix`).
- `iqm`: interquartile mean of all R*T scores, `scipy.stats.trim_mean(scores, 0.25, axis=None)`
  (drops int(0.25*R*T) scores at each end), as `rliable.metrics.aggregate_iqm`.
- `mean`: mean over tasks of the per-task mean over runs, as `aggregate_mean`.
- `median`: median over tasks of the per-task mean over runs (not the median of all R*T scores),
  as `aggregate_median`.
- `stratified_bootstrap_ci`: rliable's `StratifiedBootstrap` (task_bootstrap=False) with the
  percentile method: every replicate resamples, for each task independently, R run indices with
  replacement; the interval is the (1-c)/2 and (1+c)/2 percentiles (numpy's default linear
  interpolation, as arch's `conf_int(method="percentile")`) of the statistic over replicates.

Aggregates take arrays of shape [..., R, T] and reduce the last two axes, so one call evaluates a
whole batch of bootstrap replicates. A score matrix with a NaN (a task never evaluated) gives NaN
aggregates; `stratified_bootstrap_ci` rejects it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats

from metrics.runs import Run

# Bootstrap replicates are drawn in chunks of at most this many resampled scores, so 50k
# replicates of a large suite stay within a few tens of MB.
_CHUNK_ELEMENTS = 1 << 22


def last_valid_mean(values: np.ndarray, last_k: int) -> float:
    """Mean of the last `last_k` non-NaN entries of a 1-D series (NaN if it has none)."""
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    valid = values[~np.isnan(values)]
    return float(np.mean(valid[-last_k:])) if len(valid) else float("nan")


def final_scores(run: Run, measure: str = "success", last_k: int = 1) -> np.ndarray:
    """[T] per-task final performance: the mean of each task's last `last_k` non-NaN
    evaluations over the whole run (NaN for a task never evaluated)."""
    values = run.values(measure)
    return np.array([last_valid_mean(values[:, t], last_k) for t in range(len(run.tasks))])


def check_same_tasks(runs: Sequence[Run]) -> None:
    """ValueError unless there is at least one run and all have the same task list, in order."""
    if not runs:
        raise ValueError("need at least one run")
    for run in runs[1:]:
        if run.tasks != runs[0].tasks:
            raise ValueError(f"runs have different task lists: {list(runs[0].tasks)} vs {list(run.tasks)}"
                             f" ({run.name or 'seed ' + str(run.seed)})")


def score_matrix(runs: Sequence[Run], measure: str = "success", last_k: int = 1) -> np.ndarray:
    """[num_runs, num_tasks] `final_scores` of the seeds of one method; all runs must have the
    same task list in the same order (ValueError otherwise)."""
    check_same_tasks(runs)
    return np.stack([final_scores(run, measure, last_k) for run in runs])


def iqm(scores: np.ndarray) -> np.ndarray | float:
    """Interquartile mean of the R*T scores of each [..., R, T] matrix (rliable aggregate_iqm)."""
    scores = np.asarray(scores, np.float64)
    flat = scores.reshape(*scores.shape[:-2], -1)
    result = scipy.stats.trim_mean(flat, 0.25, axis=-1)
    # trim_mean sorts NaN to the top and would silently trim it away; make it visible instead.
    result = np.where(np.isnan(flat).any(axis=-1), np.nan, result)
    return float(result) if result.ndim == 0 else result


def mean(scores: np.ndarray) -> np.ndarray | float:
    """Mean over tasks of the per-task mean over runs (rliable aggregate_mean)."""
    result = np.mean(np.mean(np.asarray(scores, np.float64), axis=-2), axis=-1)
    return float(result) if np.ndim(result) == 0 else result


def median(scores: np.ndarray) -> np.ndarray | float:
    """Median over tasks of the per-task mean over runs (rliable aggregate_median)."""
    result = np.median(np.mean(np.asarray(scores, np.float64), axis=-2), axis=-1)
    return float(result) if np.ndim(result) == 0 else result


def task_means(scores: np.ndarray) -> np.ndarray:
    """[..., T] per-task mean over runs."""
    return np.mean(np.asarray(scores, np.float64), axis=-2)


def stratified_bootstrap_ci(scores: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray],
                            reps: int = 50_000, confidence: float = 0.95,
                            seed: int = 0) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(lower, upper) percentile interval of `statistic` under the stratified bootstrap
    (defaults as rliable's `get_interval_estimates`: 50k replicates, 95%).

    scores: [R, T]. Each replicate draws, independently for every task t, R run indices with
    replacement and takes scores[index, t]. `statistic` must map a [n, R, T] batch of replicates
    to [n] (or [n, K] for a vector statistic such as `task_means`); `iqm`, `mean`, `median` do.
    The bounds are floats for a scalar statistic, [K] arrays for a vector one.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"scores must be a non-empty [runs, tasks] matrix, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN (a task without evaluations); drop or fill it first")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    num_runs, num_tasks = scores.shape
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // scores.size)
    columns = np.arange(num_tasks)
    parts = []
    for done in range(0, reps, chunk):
        n = min(chunk, reps - done)
        rows = rng.integers(0, num_runs, size=(n, num_runs, num_tasks))
        values = np.asarray(statistic(scores[rows, columns]), np.float64)
        if values.shape[:1] != (n,):
            raise ValueError(f"statistic must map a [n, runs, tasks] batch to [n, ...]; "
                             f"got shape {values.shape} for n={n}")
        parts.append(values)
    replicates = np.concatenate(parts)
    alpha = (1.0 - confidence) / 2.0
    lower, upper = np.percentile(replicates, [100 * alpha, 100 * (1 - alpha)], axis=0)
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper


def per_task_ci(scores: np.ndarray, reps: int = 50_000, confidence: float = 0.95,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean[T], lower[T], upper[T]): each task's mean over runs and its bootstrap interval
    (the stratified bootstrap of `task_means`, i.e. each task's runs resampled on their own)."""
    lower, upper = stratified_bootstrap_ci(scores, task_means, reps, confidence, seed)
    return task_means(scores), lower, upper
