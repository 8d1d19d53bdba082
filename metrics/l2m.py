"""DARPA L2M lifelong-learning metrics, computed as the `l2metrics` library (3.1.0) computes them.

Input is a lifelong log cut into *regimes*: maximal runs of consecutive experiences with the same
block number, block type (train | test), subtype (wake | sleep) and task. `l2logger_io` builds
them from l2logger TSV logs or from our runs. Single-task expert (STE) data, when given, is a
list of such logs per task (one per STE run).

Pipeline (each step as in l2metrics' MetricsReport; the settings are its CLI options):
1. Smooth each training regime (and test regimes with smooth_eval_data) with a moving window of
   `window_length` (default min(20% of the regime, 100); none below 3), reflecting the ends.
   Every STE regime is smoothed the same way.
2. Optionally clamp each task's values to its 10%/90% quantiles (over our values and its STE
   training values) or to a given data range.
3. Normalize per task (or per run) to [1, 101] using the min/max over our values and the STE
   training values (a constant task becomes 1).
4. Per regime: term_perf = mean of the last 10% of a training regime or of the whole test regime;
   saturation = max of the (again) smoothed curve and exp_to_sat its first index.
5. Metrics (task-level values, then the lifetime value is their mean, or median):
   - performance maintenance: for each test of a task after its first post-training test,
     test term_perf minus that most recent post-training test's term_perf (mrlep) or minus the
     most recent training regime's term_perf (mrtlp); a task's value is the mean.
   - forward/backward transfer from trained task i to task j: j's test term_perf before (tp1)
     and after (tp2) a training regime of i; ratio tp2/tp1, contrast (tp2 - tp1)/(tp1 + tp2);
     forward if that training of i came before j's first training, else backward. The lifetime
     value is the mean over task pairs of each pair's first value.
   - recovery time: experiences a training regime needs to reach the term_perf of the task's
     previous training regime (the regime length + 1 if never); performance recovery is minus the
     Theil-Sen slope of a task's recovery times.
   - relative performance: sum of our training values over sum of the STE's, over the first
     min(n_ours, n_STE) training experiences (per STE run, then averaged: "metrics"; or against
     the averaged STE curve: "time").
   - sample efficiency: (sat / sat_STE) * (exp_to_sat_STE / exp_to_sat), 0 where our saturation
     is below 20% of the STE's or our training curve's linear fit has a negative slope; a task whose
     saturation comes at experience 0 is skipped.
   - average training / evaluation performance: mean of the regimes' means.
Quirks kept for equality with l2metrics: when two trained tasks are followed by the same test of
another task, the later pair in its task-permutation order overwrites the earlier value; STE
regimes are smoothed even when smooth_eval_data is off.
Not implemented: variant-agnostic mode (our task names carry no variants) and experience units
other than exp_num.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

WINDOWS = ("flat", "hanning", "hamming", "bartlett", "blackman")


@dataclass
class Regime:
    block_num: int
    block_type: str          # "train" | "test"
    block_subtype: str       # "wake" | "sleep"
    task: str
    exp_nums: np.ndarray     # [n] experience numbers, non-decreasing
    values: np.ndarray       # [n] the performance measure


@dataclass(frozen=True)
class L2MSettings:
    """l2metrics' options, with its defaults."""
    smoothing: str = "flat"             # one of WINDOWS, or "none"
    window_length: int | None = None
    smooth_eval_data: bool = False
    clamp_outliers: bool = False
    normalization: str = "task"         # task | run | none
    data_range: dict | None = None      # {task: {"min": .., "max": ..}} instead of the data's range
    aggregation: str = "mean"           # mean | median
    ste_averaging: str = "metrics"      # metrics | time

    def __post_init__(self):
        for name, value, valid in (("smoothing", self.smoothing, WINDOWS + ("none",)),
                                   ("normalization", self.normalization, ("task", "run", "none")),
                                   ("aggregation", self.aggregation, ("mean", "median")),
                                   ("ste_averaging", self.ste_averaging, ("metrics", "time"))):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


LIFETIME_METRICS = ("perf_recovery", "avg_train_perf", "avg_eval_perf", "perf_maintenance_mrlep",
                    "perf_maintenance_mrtlp", "forward_transfer_ratio", "backward_transfer_ratio",
                    "forward_transfer_contrast", "backward_transfer_contrast", "ste_rel_perf",
                    "sample_efficiency")


# -- preprocessing -------------------------------------------------------------------------------

def smooth(x: np.ndarray, window_len: int | None = None, window: str = "flat") -> np.ndarray:
    """l2metrics' smoother (the SciPy cookbook's): a normalized window convolved with the signal,
    whose ends are reflected; the output has the input's length."""
    x = np.asarray(x, np.float64)
    if window_len is None or x.size < window_len:
        window_len = min(int(x.size * 0.2), 100)
    if window_len < 3:
        return x
    s = np.r_[x[window_len - 1:0:-1], x, x[-2:-window_len - 1:-1]]
    s = s[~np.isnan(s)]
    w = np.ones(window_len) if window == "flat" else getattr(np, window)(window_len)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[int(np.floor(window_len / 2 - 1)):-int(np.ceil(window_len / 2))]


def _train_values(ste_runs: list[list[Regime]]) -> list[np.ndarray]:
    """Each STE run's training values, regimes concatenated in order."""
    return [np.concatenate([r.values for r in run if r.block_type == "train"] or [np.empty(0)])
            for run in ste_runs]


def _map_values(regimes: list[Regime], fn) -> list[Regime]:
    return [replace(r, values=fn(r)) for r in regimes]


def preprocess(log: list[Regime], ste: dict[str, list[list[Regime]]], s: L2MSettings):
    """Steps 1-3: smoothed, clamped and normalized copies of the log and of the STE logs of its tasks."""
    tasks = _unique(r.task for r in log)
    ste = {t: ste[t] for t in tasks if ste.get(t)}  # only the log's tasks count
    if s.smoothing != "none":
        def smoothed(r, all_regimes=False):
            if all_regimes or r.block_type == "train" or s.smooth_eval_data:
                return smooth(r.values, s.window_length, s.smoothing)
            return r.values
        log = _map_values(log, smoothed)
        ste = {t: [_map_values(run, lambda r: smoothed(r, True)) for run in runs] for t, runs in ste.items()}
    if s.clamp_outliers:
        bounds = {}
        for t in tasks:
            if s.data_range:
                bounds[t] = (s.data_range[t]["min"], s.data_range[t]["max"])
            else:
                x = np.concatenate([r.values for r in log if r.task == t] + _train_values(ste.get(t, [])))
                bounds[t] = tuple(np.quantile(x, (0.1, 0.9)))
        log = _map_values(log, lambda r: np.clip(r.values, *bounds[r.task]))
        ste = {t: [_map_values(run, lambda r, t=t: np.clip(r.values, *bounds[t]) if r.task == t else r.values)
                   for run in runs] for t, runs in ste.items()}
    data_range = None
    if s.normalization != "none":
        data_range = s.data_range or {}
        if not s.data_range:
            for t in tasks:
                x = np.concatenate([r.values for r in log if r.task == t])
                x_ste = np.concatenate(_train_values(ste[t])) if t in ste else np.empty(0)
                data_range[t] = {"min": float(np.nanmin(np.r_[x, x_ste])), "max": float(np.nanmax(np.r_[x, x_ste]))}
        missing = [t for t in tasks if t not in data_range]
        if missing:
            raise ValueError(f"data range not defined for tasks {missing}")
        run_min = min(v["min"] for v in data_range.values())
        run_max = max(v["max"] for v in data_range.values())

        def normalized(r):
            if s.normalization == "run":
                return (r.values - run_min) / (run_max - run_min) * 100 + 1
            if r.task not in data_range:
                raise ValueError(f"missing data range for task {r.task!r}")
            lo, hi = data_range[r.task]["min"], data_range[r.task]["max"]
            return r.values * 0 + 1 if lo == hi else (r.values - lo) / (hi - lo) * 100 + 1
        log = _map_values(log, normalized)
        ste = {t: [_map_values(run, normalized) for run in runs] for t, runs in ste.items()}
    return log, ste, data_range


# -- per-regime quantities -----------------------------------------------------------------------

def _per_experience(exp_nums: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Values averaged per experience number where several workers logged the same one."""
    if len(values) <= 1 or len(np.unique(exp_nums)) == len(exp_nums):
        return np.asarray(values, np.float64)
    _, inverse = np.unique(exp_nums, return_inverse=True)
    return np.bincount(inverse, weights=values) / np.bincount(inverse)


def saturation(exp_nums, values) -> tuple[float, float]:
    """(max of the re-smoothed curve, first experience index reaching it)."""
    smoothed = smooth(_per_experience(np.asarray(exp_nums), np.asarray(values, np.float64)))
    smoothed = smoothed[~np.isnan(smoothed)]
    if not len(smoothed):
        return np.nan, np.nan
    sat = np.max(smoothed)
    return float(sat), int(np.flatnonzero(smoothed == sat)[0])


def terminal_perf(r: Regime) -> float:
    data = _per_experience(r.exp_nums, r.values)
    data = data[~np.isnan(data)]
    if not len(data):
        return np.nan
    ratio = 1 if r.block_type == "test" else 0.1
    return float(np.mean(data[int((1 - ratio) * data.size):]))


def experiences_to_reach(r: Regime, target: float) -> float:
    data = _per_experience(r.exp_nums, r.values)
    data = data[~np.isnan(data)]
    if not len(data):
        return np.nan
    reached = np.flatnonzero(data >= target)
    return int(reached[0]) if len(reached) else len(r.values) + 1


# -- metrics ---------------------------------------------------------------------------------------

def _unique(items) -> list:
    return list(dict.fromkeys(items))


def _train_wake(log: list[Regime], task: str) -> list[int]:
    return [i for i, r in enumerate(log) if r.task == task and r.block_type == "train" and r.block_subtype == "wake"]


def _maintenance(log, term, kept):
    """Per task: maintenance values {test regime: value} by mrlep and by mrtlp."""
    out = {"mrlep": {}, "mrtlp": {}}
    for task in _unique(log[i].task for i in kept):
        train = np.array([i for i in kept if log[i].task == task and log[i].block_type == "train"], int)
        tests = np.array([i for i in kept if log[i].task == task and log[i].block_type == "test"], int)
        ref_tests = np.array([tests[np.argmax(tests > x)] for x in train if np.any(tests > x)], int)
        vals = {"mrlep": [], "mrtlp": []}
        for t in tests:
            if np.any(t > ref_tests) and t not in ref_tests:
                vals["mrtlp"].append(term[t] - term[train[t > train][-1]])
                vals["mrlep"].append(term[t] - term[ref_tests[t > ref_tests][-1]])
        for method in out:
            if vals[method]:
                out[method][task] = vals[method]
    return out


def _transfer(log, term, kept):
    """{(kind, method): {trained task: {evaluated task: [values]}}} for kind forward/backward and
    method ratio/contrast, keyed the way l2metrics keys them (by the later test regime)."""
    by_regime = {(k, m): {} for k in ("forward", "backward") for m in ("ratio", "contrast")}
    tasks = _unique(log[i].task for i in kept)
    for task, other in itertools.permutations(tasks, 2):
        train = np.array([i for i in kept if log[i].task == task and log[i].block_type == "train"], int)
        other_tests = [i for i in kept if log[i].task == other and log[i].block_type == "test"]
        other_train = np.array([i for i in kept if log[i].task == other and log[i].block_type == "train"], int)
        if not len(train):
            continue
        first_other = other_train.min() if len(other_train) else None
        groups = {"forward": train if first_other is None else train[train < first_other],
                  "backward": [] if first_other is None else train[train > first_other]}
        for kind, regs in groups.items():
            for tr in regs:
                for t1, t2 in itertools.pairwise(other_tests):
                    if t1 < tr < t2:
                        tp1, tp2 = term[t1], term[t2]
                        if tp1 != 0:
                            by_regime[(kind, "ratio")][t2] = (task, tp2 / tp1)
                        if tp1 + tp2 != 0:
                            by_regime[(kind, "contrast")][t2] = (task, (tp2 - tp1) / (tp1 + tp2))
    out = {}
    for key, regime_values in by_regime.items():
        pairs: dict = {}
        for regime in sorted(regime_values):
            trained, value = regime_values[regime]
            pairs.setdefault(trained, {}).setdefault(log[regime].task, []).append(float(value))
        out[key] = pairs
    return out


def _ste_metrics(log, ste, task, s: L2MSettings):
    """(relative performance, sample efficiency) of one task against its STE runs (NaN if none)."""
    idx = _train_wake(log, task)
    if not idx or not ste.get(task):
        return np.nan, np.nan
    exp = np.concatenate([log[i].exp_nums for i in idx])
    vals = np.concatenate([log[i].values for i in idx])
    ste_curves = _train_values(ste[task])
    if s.ste_averaging == "time":
        n = min(map(len, ste_curves))
        ste_curves = [np.array([c[:n] for c in ste_curves]).mean(0)]
    rel = []
    for curve in ste_curves:
        n = min(len(vals), len(curve))
        rel.append(np.nansum(vals[:n]) / np.nansum(curve[:n]))
    rel_perf = float(np.nanmean(rel))

    slope = np.polyfit(exp, vals, 1)[0]
    sat, exp_to_sat = saturation(exp, vals)
    if exp_to_sat == 0:
        return rel_perf, np.nan
    se = []
    for run, curve in zip(ste[task], ste_curves):
        if s.ste_averaging == "time":
            ste_sat, ste_exp = saturation(np.arange(len(curve)), curve)
        else:
            train = [r for r in run if r.block_type == "train"]
            ste_sat, ste_exp = saturation(np.concatenate([r.exp_nums for r in train]), curve)
        if ste_exp == 0:
            continue
        se.append(0.0 if sat < ste_sat * 0.2 or slope < 0 else (sat / ste_sat) * (ste_exp / exp_to_sat))
    return rel_perf, float(np.nanmean(se)) if se else np.nan


def l2m_metrics(log: list[Regime], ste: dict[str, list[list[Regime]]] | None = None,
                settings: L2MSettings = L2MSettings()) -> dict:
    """All L2M metrics of one lifelong log: {"lifetime": {...}, "tasks": {task: {...}},
    "regimes": [{task, block_type, term_perf, saturation, exp_to_sat}], "data_range": ...}.
    Missing values are NaN."""
    if not log:
        raise ValueError("the log has no experiences")
    log, ste, data_range = preprocess(log, ste or {}, settings)
    term = [terminal_perf(r) for r in log]
    sats = [saturation(r.exp_nums, r.values) for r in log]
    # with sleep blocks, wake evaluations are left out of maintenance, transfer and averages
    has_sleep = any(r.block_subtype == "sleep" for r in log)
    kept = [i for i, r in enumerate(log) if not (has_sleep and r.block_type == "test" and r.block_subtype == "wake")]

    block_order = _unique(r.task for r in log)
    tasks = _unique([r.task for r in log if r.block_type == "train"] + block_order)
    per_task = {t: {} for t in tasks}

    recovery = {t: [] for t in tasks}
    for t in block_order:
        train = _train_wake(log, t)
        for prev, cur in itertools.pairwise(train):
            recovery[t].append(experiences_to_reach(log[cur], term[prev]))
    enough_recoveries = sum(np.count_nonzero(~np.isnan(np.asarray(v, float))) for v in recovery.values()) > 1
    maintenance = _maintenance(log, term, kept)
    transfer = _transfer(log, term, kept)
    for t in tasks:
        m = per_task[t]
        times = [x for x in recovery[t] if not np.isnan(x)]
        m["recovery_times"] = [float(x) for x in times]
        m["perf_recovery"] = float(-stats.theilslopes(times)[0]) if enough_recoveries and len(times) > 1 else np.nan
        train_means = [np.nanmean(log[i].values) for i in kept if log[i].task == t and log[i].block_type == "train"]
        test_means = [np.nanmean(log[i].values) for i in kept if log[i].task == t and log[i].block_type == "test"]
        m["avg_train_perf"] = float(np.mean(train_means)) if train_means else np.nan
        m["avg_eval_perf"] = float(np.mean(test_means)) if test_means else np.nan
        for method in ("mrlep", "mrtlp"):
            values = maintenance[method].get(t, [])
            m[f"maintenance_val_{method}"] = [float(v) for v in values]
            m[f"perf_maintenance_{method}"] = float(np.mean(values)) if values else np.nan
        for (kind, method), pairs in transfer.items():
            m[f"{kind}_transfer_{method}"] = pairs.get(t, {})
        m["ste_rel_perf"], m["sample_efficiency"] = _ste_metrics(log, ste, t, settings)

    aggregate = np.nanmean if settings.aggregation == "mean" else np.nanmedian
    lifetime = {}
    for name in LIFETIME_METRICS:
        if "transfer" in name:
            kind, _, method = name.split("_")
            vals = [v[0] for pairs in transfer[(kind, method)].values() for v in pairs.values()]
        else:
            vals = [per_task[t][name] for t in tasks if not np.isnan(per_task[t][name])]
        lifetime[name] = float(aggregate(vals)) if vals else np.nan
    regimes = [{"block_num": r.block_num, "block_type": r.block_type, "task": r.task, "term_perf": term[i],
                "saturation": sats[i][0], "exp_to_sat": sats[i][1]} for i, r in enumerate(log)]
    return {"lifetime": lifetime, "tasks": per_task, "regimes": regimes, "data_range": data_range}
