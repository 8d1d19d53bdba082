"""Every metric of a report, per group of runs, as one JSON-serializable tree (metrics.json), and
the headline metrics of one finished run (what the trainer prints and logs at its end). Pure
functions of `Run`s: multi-task (metrics/multitask.py), Continual World (metrics/continual.py)
and DARPA L2M (metrics/l2m.py) metrics side by side."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from metrics import continual, multitask, plasticity, task_free
from metrics.l2logger_io import run_regimes
from metrics.l2m import LIFETIME_METRICS, L2MSettings, l2m_metrics
from metrics.runs import Run


@dataclass(frozen=True)
class ReportSettings:
    measure: str = "success"           # success | return
    last_k: int = 5                    # Continual World: evaluations averaged at the end of a window
    mt_last_k: int = 1                 # multi-task final score: mean of the last k evaluations
    cw_reps: int = 4000                # Continual World bootstrap: 90%, 4000 resamples
    cw_confidence: float = 0.90
    mt_reps: int = 50_000              # rliable stratified bootstrap: 95%, 50k resamples
    mt_confidence: float = 0.95
    l2m: L2MSettings = field(default_factory=L2MSettings)


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _seed_ci(values: list[float], s: ReportSettings) -> dict:
    """Mean over seeds and Continual World's bootstrap interval (NaN seeds left out)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"mean": None, "lower": None, "upper": None, "per_seed": [_num(v) for v in values]}
    mean, lower, upper = continual.bootstrap_ci(vals, s.cw_reps, s.cw_confidence)
    return {"mean": _num(mean), "lower": _num(lower), "upper": _num(upper), "per_seed": [_num(v) for v in values]}


def _references_by_task(references: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for ref in references:
        trained = ref.trained_tasks()
        if len(trained) != 1:
            raise ValueError(f"reference run {ref.name} trains {len(trained)} tasks; a single-task run trains one")
        out.setdefault(trained.pop(), []).append(ref)
    return out


def group_metrics(runs: list[Run], references: list[Run], s: ReportSettings) -> dict:
    tasks = runs[0].tasks
    scores = multitask.score_matrix(runs, s.measure, s.mt_last_k)
    mt = {"final_mean": float(multitask.mean(scores)), "iqm": float(multitask.iqm(scores))}
    if not np.isnan(scores).any():
        for name, stat in (("final_mean", multitask.mean), ("iqm", multitask.iqm)):
            lo, hi = multitask.stratified_bootstrap_ci(scores, stat, s.mt_reps, s.mt_confidence)
            mt[name] = {"mean": mt[name], "lower": lo, "upper": hi}
        means, lo, hi = multitask.per_task_ci(scores, s.mt_reps, s.mt_confidence)
        mt["per_task"] = {t: {"mean": float(m), "lower": float(a), "upper": float(b)}
                          for t, m, a, b in zip(tasks, means, lo, hi)}
    else:
        mt = {k: {"mean": _num(v), "lower": None, "upper": None} for k, v in mt.items()}
        mt["per_task"] = {t: {"mean": _num(float(np.nanmean(scores[:, j]))), "lower": None, "upper": None}
                          for j, t in enumerate(tasks)}
    mt["confidence"], mt["reps"] = s.mt_confidence, s.mt_reps

    refs = _references_by_task(references)
    usable_refs = [r for t in tasks for r in refs.get(t, [])] if all(t in refs for t in tasks) else None
    cw = continual.summarize(runs, usable_refs, s.last_k, s.cw_reps, s.cw_confidence)
    matrices = np.array([continual.performance_matrix(r, s.last_k) for r in runs])  # [seeds, tasks, stages]
    steps, values = curves(runs, s.measure)
    by_evaluation = np.nanmean(values, 0).T.tolist()  # [tasks, evaluations]: the heatmap's data

    ste = {t: [run_regimes(r, s.measure) for r in rs] for t, rs in refs.items()}
    l2m_runs = [l2m_metrics(run_regimes(r, s.measure), ste, s.l2m) for r in runs]
    l2m = {"lifetime": {m: _seed_ci([x["lifetime"][m] for x in l2m_runs], s) for m in LIFETIME_METRICS},
           "settings": asdict(s.l2m)}
    return {"runs": [r.name for r in runs], "seeds": [r.seed for r in runs], "tasks": list(tasks),
            "evaluation": evaluation_protocol(runs[0]), "setting": task_free.setting(runs[0]),
            "task_free": task_free_metrics(runs, s),
            "schedule": [{"tasks": list(st.tasks), "start": st.start, "end": st.end} for st in runs[0].schedule],
            "multitask": mt, "continual": cw, "plasticity": plasticity.group_plasticity(runs),
            "performance_matrix": {"stage_ends": [st.end for st in runs[0].schedule],
                                   "mean": np.nanmean(matrices, 0).tolist(), "per_seed": matrices.tolist(),
                                   "evaluation_steps": steps.tolist(), "by_evaluation": by_evaluation},
            "l2m": l2m, "references": sorted(refs)}


def task_free_metrics(runs: list[Run], s: ReportSettings) -> dict:
    """Anytime average performance (any setting) and, for runs with a detector, its mean delay over
    the switches it hit, its false alarms and missed switches (metrics/task_free.py); mean over seeds [CI]."""
    out = {"anytime_performance": _seed_ci([task_free.anytime_average_performance(r, s.measure) for r in runs], s)}
    found = [task_free.run_detection(r) for r in runs]
    if all(f is not None for f in found) and runs[0].schedule[1:]:
        delays = [np.mean([d for d in f["delays"] if d is not None]) if f["missed"] < len(f["delays"]) else np.nan
                  for f in found]
        out["detection"] = {"delay": _seed_ci(delays, s),
                            "false_alarms": _seed_ci([f["false_alarms"] for f in found], s),
                            "missed": _seed_ci([f["missed"] for f in found], s),
                            "per_seed": found}
    return out


def evaluation_protocol(run: Run) -> dict:
    """How the run's evaluations were taken: {"policy": "mean" | "sample", "episodes": per task}.
    Published tables differ here (Meta-World/mtrl: the mean action; Continual World: sampled)."""
    evaluation = run.config.get("eval") or {}
    policy = evaluation.get("policy") or ("mean" if evaluation.get("deterministic", True) else "sample")
    return {"policy": policy, "episodes": evaluation.get("goals")}


def run_summary(run: Run, s: ReportSettings = ReportSettings()) -> dict[str, float]:
    """The headline metrics of one finished run (what the trainer prints and logs at the end):
    final mean success and IQM over tasks; for a continual run (several stages) also Continual
    World performance and forgetting and the L2M maintenance and transfer values (in a one-stage
    multi-task run these only restate the final success or compare against the untrained start)."""
    scores = multitask.score_matrix([run], s.measure, s.mt_last_k)
    summary = {"final_success": float(multitask.mean(scores)), "final_success_iqm": float(multitask.iqm(scores))}
    if len(run.schedule) > 1:
        summary["average_performance"] = continual.average_performance(run, s.last_k)
        summary["forgetting"] = continual.forgetting(run, s.last_k).mean
        summary["anytime_performance"] = task_free.anytime_average_performance(run, s.measure)
        if run.episodes.step.size:
            l2m = l2m_metrics(run_regimes(run, s.measure), {}, s.l2m)["lifetime"]
            for k in ("perf_maintenance_mrlep", "forward_transfer_ratio", "backward_transfer_ratio"):
                summary[f"l2m_{k}"] = l2m[k]
    return summary


def compute(groups: dict[str, list[Run]], references: list[Run] | dict[str, list[Run]], s: ReportSettings) -> dict:
    """Every group's metrics; `references`: the single-task runs all groups compare with, or
    {label: runs} per group (a study's: each group its own trials' references)."""
    def clean(x):  # JSON has no NaN
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (float, np.floating)):
            return _num(float(x))
        if isinstance(x, np.integer):
            return int(x)
        return x
    return clean({"settings": {**asdict(s), "l2m": asdict(s.l2m)},
                  "groups": {label: group_metrics(runs, references.get(label, []) if isinstance(references, dict)
                                                  else references, s) for label, runs in groups.items()}})


def curves(runs: list[Run], measure: str) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation steps shared by all seeds and values [seeds, steps, tasks] at them."""
    steps = runs[0].steps
    for r in runs[1:]:
        steps = np.intersect1d(steps, r.steps)
    values = np.array([r.values(measure)[np.searchsorted(r.steps, steps)] for r in runs])
    return steps, values
