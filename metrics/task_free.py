"""Metrics for continual learning without task boundaries (continual.boundaries=hidden). The
Continual World and L2M metrics still apply: they read the recorded schedule (config.yaml), which
the evaluator and the metrics know even when the learner does not.

setting
    How a run met its task switches: "given" or "hidden", with the blend (continual.blend_steps)
    and the detector (continual.detector) if any; the report prints it next to every result.

anytime average performance
    The mean over evaluations of the mean success over the tasks seen so far: an evaluation at
    step s counts the tasks whose training began before s (start < s; s <= first start: none seen,
    the evaluation is left out). It needs no boundary at all (a task's "start" is the schedule's)
    and rewards a method that is good all along, not only at the end (cf. Caccia et al.'s anytime
    evaluation, Koh et al. 2022's A_auc).

detection (learners.json `detected_boundaries`, a list of env steps)
    The true switches are the starts of the stages after the first (with a blend, its midpoint).
    The first detection at or after switch k and before switch k + 1 (or the run's end) is its
    hit: delay = detection - switch (with a blend of B steps, the windows open B/2 earlier, where
    the blend begins). Every other detection is a false alarm (a detection before
    the first switch, or a second one in a stage). A switch with no hit is missed. A plateau
    detector (continual/detectors.py) fires when a task has been learned, so it counts one false
    alarm in the first stage by this definition: it is reported, not hidden.
"""

from __future__ import annotations

import numpy as np

from metrics.runs import Run


def setting(run: Run) -> str:
    """'given', 'hidden', 'hidden, blend 2,000, change detector', 'hidden, change detector (MAD)' ..."""
    c = run.config.get("continual") or {}
    boundaries = c.get("boundaries", "given")
    if boundaries != "hidden":
        return boundaries
    parts = ["hidden"]
    if c.get("blend_steps"):
        parts.append(f"blend {int(c['blend_steps']):,}")
    if c.get("detector"):
        robust = c["detector"] == "change" and c.get("change_scale") == "mad"
        parts.append(f"{c['detector']} detector" + (" (MAD)" if robust else ""))
    return ", ".join(parts)


def anytime_average_performance(run: Run, measure: str = "success") -> float:
    values = run.values(measure)
    starts = {t: run.training_window(t)[0] for t in run.tasks if t in run.trained_tasks()}
    means = []
    for e, step in enumerate(run.steps):
        seen = [run.task_index(t) for t, start in starts.items() if start < step]
        if seen and not np.isnan(values[e, seen]).all():
            means.append(float(np.nanmean(values[e, seen])))
    return float(np.mean(means)) if means else float("nan")


def switches(run: Run) -> list[int]:
    """The env steps where the schedule switches task (each stage's start after the first)."""
    return [stage.start for stage in run.schedule[1:]]


def detection(detected: list[int], switch_steps: list[int], end: int, early: int = 0) -> dict:
    """{"delays": per switch (None: missed), "false_alarms": count, "missed": count}. early: a blend's
    half-width (continual.blend_steps / 2): a switch's window opens that much before it (delays may
    then be negative: detected while the next task's share was still under one half)."""
    bounds = [s - early for s in switch_steps] + [end + 1]
    delays, matched = [], set()
    for k, switch in enumerate(switch_steps):
        hit = next((i for i, d in enumerate(detected) if bounds[k] <= d < bounds[k + 1]), None)
        delays.append(None if hit is None else int(detected[hit] - switch))
        if hit is not None:
            matched.add(hit)
    return {"delays": delays, "false_alarms": len(detected) - len(matched),
            "missed": sum(d is None for d in delays)}


def run_detection(run: Run) -> dict | None:
    """detection() of a run whose learners.json lists its detected boundaries (None if it has none)."""
    if run.detected is None:
        return None
    blend = int((run.config.get("continual") or {}).get("blend_steps") or 0)
    return detection(list(run.detected), switches(run), run.schedule[-1].end, early=blend // 2)
