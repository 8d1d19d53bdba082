"""The table of a study of continual learning without task boundaries (continual.boundaries=hidden).

    python launch/study.py benchmarks/studies/task-free-pointmass.yaml   # pointmass PM2, target visible
    python launch/study.py benchmarks/studies/task-free-pm2r.yaml        # PM2R: target visible, tasks in conflict
    python launch/study.py benchmarks/studies/task-free-pm2r-8k.yaml     # PM2R at 8,000 env steps per task
    python launch/study.py benchmarks/studies/task-free-3rl.yaml         # the target hidden: 3RL, +- a detector
    python launch/study.py benchmarks/studies/task-free-metaworld.yaml   # a short Meta-World sequence
    python benchmarks/task_free.py table STUDY_DIR
    python benchmarks/task_free.py table RUNS_DIR    # a folder of plain runs (one per seed): one row
    python benchmarks/task_free.py returns DIR       # what the change detector sees at each switch, run by run
    python benchmarks/task_free.py detectors DIR...  # its first alarms, std against mad scale, over every run

Rows: the task-aware references (EWC and PackNet told every boundary, with their per-task heads and
task one-hot, the continual defaults), then with hidden boundaries: fine-tuning (a FIFO replay of
replay.capacity_per_task: 50,000 rows, the whole stream), reservoir, mir, clear, tfmas, 3rl, and EWC
with each detector; on pointmass also fine-tuning, reservoir and MIR with a memory smaller than the
stream; the hidden rows abrupt and with blended switches (continual.blend_steps).
Columns: Continual World's average performance, forgetting and forward transfer (against the
single-task reference runs of the row's own network: the study's references), anytime average
performance, and the detection delay (env steps after a switch; false alarms and missed switches per
run) for runs with a detector; mean over seeds [90% bootstrap CI] (metrics/continual.py,
metrics/task_free.py); success is a window's last evaluation. Under the table, each row's final success
per task, run by run.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import table  # noqa: E402


def row_name(label: str) -> str:
    """A study group's label as the table's row: "continual.boundaries=hidden, variant=ewc+plateau,
    continual.blend_steps=2000" -> "ewc + plateau, blended"; the given rows -> "ewc (given)"."""
    from launch.studies.results import label_values
    values = label_values(label)
    if values.get("continual.boundaries") == "given":
        return f"{values['method']} (given)"
    name = values.get("variant") or (f"{values['method']}" if "method" in values else "")
    name = name.replace("+", " + ").replace("-memory-", ", memory ")
    if "detector" in values:  # task-free-3rl: the method is the study's (3rl)
        name = "3rl" if values["detector"] == "none" else f"3rl + {values['detector']} detector"
    return f"{name}, blended" if values.get("continual.blend_steps", "0") != "0" else name


def cell(entry, digits: int = 2) -> str:
    if entry is None or entry.get("mean") is None:
        return "n/a"
    return f"{entry['mean']:.{digits}f} [{entry['lower']:.{digits}f}, {entry['upper']:.{digits}f}]"


COLUMNS = ["method", "seeds", "average performance", "forgetting", "forward transfer", "anytime performance",
           "detection delay (steps); per run"]


def row(name: str, runs: list, refs: list) -> list:
    """One table row: the runs' metrics, forward transfer against refs (none: n/a)."""
    from metrics import continual
    from metrics.summary import ReportSettings, task_free_metrics
    cw = continual.summarize(runs, refs or None, last_k=1)
    free = task_free_metrics(runs, ReportSettings(last_k=1))
    detection = free.get("detection")
    return [name, len(runs), cell(cw["performance"]), cell(cw["forgetting"]), cell(cw.get("forward_transfer")),
            cell(free["anytime_performance"]),
            "n/a" if detection is None else
            f"{cell(detection['delay'], 0)}; {detection['false_alarms']['mean']:.1f} false, "
            f"{detection['missed']['mean']:.1f} missed"]


def summarize_runs(folder: Path) -> None:
    """A folder of plain runs (e.g. the issue's command for seeds 0-4): a row for each setting that more than
    one run shares (metrics/grouping.py: the report's groups), and each run's final success per task."""
    from metrics.grouping import group_runs
    from metrics.runs import read_run
    dirs = sorted(d for d in folder.iterdir() if (d / "config.yaml").is_file())
    runs = [read_run(d) for d in dirs]
    pooled = {label: group for label, group in group_runs(runs).items() if len(group) > 1}
    print(f"{folder.name}: success = the last evaluation of a window; mean over seeds [90% bootstrap CI]")
    if pooled:
        print(table(COLUMNS, [row(folder.name if len(pooled) == 1 else label, group, [])
                              for label, group in pooled.items()]))
    for d, run in zip(dirs, runs):
        final = " / ".join(f"{s:.2f}" for s in run.success[-1])
        print(f"{d.name}: final success per task ({', '.join(run.tasks)}) {final}")


def summarize(study_dir: Path) -> None:
    import yaml

    from launch.studies.results import grid_runs, reference_runs
    from metrics.runs import read_run

    references = reference_runs(study_dir)
    rows, finals = [], []
    for label, dirs in grid_runs(study_dir).items():
        if not dirs:
            continue
        name, runs = row_name(label), [read_run(d) for d in dirs]
        rows.append(row(name, runs, [read_run(d) for d in references.get(label, [])]))
        finals.append(final_success(name, runs))
    tree = yaml.safe_load((study_dir / "study.yaml").read_text())
    base = tree["base"]
    transfer = ("against each row's own single-task references (n/a: none finished)" if tree.get("references")
                else "n/a: the study has no single-task references")
    print(f"{base['suite']} {base['sequence']}, {base['steps_per_task']:,} env steps per task (study {tree['name']}); "
          f"success = the last evaluation of a window; mean over seeds [90% bootstrap CI]; forward transfer {transfer}")
    print(table(COLUMNS, rows))
    print("\nfinal success per task, run by run (seed order), and the mean:")
    print("\n".join(finals))


def final_success(name: str, runs: list) -> str:
    """A row's last evaluation per task: each run's ("1.0/0.0", BENCHMARKS.md's per-seed tables) and the
    mean over its runs ("1.00 / 0.20")."""
    import numpy as np
    last = np.array([run.success[-1] for run in runs])  # [runs, tasks]
    each = ", ".join("/".join(f"{s:.1f}" for s in final) for final in last)
    mean = " / ".join(f"{s:.2f}" for s in last.mean(axis=0))
    return f"{name}: {each}; mean {mean} ({', '.join(runs[0].tasks)})"


DETECTOR_KEYS = ("change_threshold", "change_tolerance", "change_min_episodes", "change_scale")


def fed_returns(run):
    """The run's training returns and their tasks, by each episode's start step: the order the trainer fed
    them to its detector (their arrival) wherever episodes arrive in the order they start, as in every
    committed record (the replay below gives every committed run's recorded detections in this order; with
    several actors the two orders may differ). episodes.jsonl itself groups a log block's episodes by task,
    which reorders blended switches."""
    import numpy as np
    order = np.argsort(run.episodes.start, kind="stable")  # ties keep the log's order
    return run.episodes.returns[order], run.episodes.task[order]


def replay(returns, settings: dict, scale: str | None = None) -> list[int]:
    """The indices of the returns at which the change detector (at `settings`, with `scale` if given) alarms."""
    from continual.detectors import ChangeDetector
    detector = ChangeDetector(float(settings["change_threshold"]), float(settings["change_tolerance"]),
                              int(settings["change_min_episodes"]), scale or settings["change_scale"])
    return [i for i, x in enumerate(returns) if detector.observe_return(float(x))]


def detector_settings(run) -> dict:
    """The run's change-detector settings; today's defaults (ContinualConfig) where its config predates one."""
    from launch.config import ContinualConfig
    recorded, defaults = run.config.get("continual") or {}, ContinualConfig()
    return {key: recorded.get(key, getattr(defaults, key)) for key in DETECTOR_KEYS}


def change_detector_view(run) -> str:
    """What the change detector (continual/detectors.py) sees in a run's training returns (fed_returns): for each
    switch, the last stage's returns (mean, standard deviation, count), the next task's first 10 and the drop d
    between them in those standard deviations, with the episodes Page-Hinkley needs for a drop of d (threshold
    / (d - tolerance) or more: its running mean takes in the lower returns as they come; none while d <=
    tolerance) and how many of the next task's episodes the stage holds; then the detector replayed over the
    returns at the run's own settings (its alarms, each as the number of the next task's episodes finished by
    then; with several switches, episodes of any later task). The replay sees what the run's detector saw; for
    a run without one, what it would have seen up to its first alarm."""
    import numpy as np
    settings = detector_settings(run)
    threshold, tolerance = float(settings["change_threshold"]), float(settings["change_tolerance"])
    returns, tasks = fed_returns(run)
    parts = []
    for k in range(1, len(run.schedule)):
        before, after = returns[tasks == k - 1], returns[tasks == k]
        if len(before) < 2 or not len(after):
            continue
        mean, std, first = before.mean(), before.std(), after[:10].mean()
        d = (mean - first) / std if std > 0 else float("nan")
        needs = f"{threshold / (d - tolerance):.0f} or more" if d > tolerance else "no number of"
        parts.append(f"switch {k}: {run.tasks[k - 1]} {mean:.0f} +- {std:.0f} ({len(before)} episodes), "
                     f"{run.tasks[k]}'s first 10 {first:.0f}: a drop of {d:.2f} sd, Page-Hinkley needs {needs} "
                     f"episodes, the stage has {len(after)}")
    alarms = [int(np.sum(tasks[:i + 1] >= 1)) for i in replay(returns, settings)]
    recorded = "" if run.detected is None else f"; recorded detections at env steps {list(run.detected)}"
    return "; ".join(parts + [f"replayed alarms after the next task's episode {alarms or 'none'}{recorded}"])


def scale_outcomes(run) -> list[tuple[str, tuple, object]]:
    """(scale, the returns up to the outcome, outcome) for each scale, std and mad: the first alarm replayed
    over the run's returns is a hit (at or after the second task's first episode; the outcome is the number of
    its episodes finished by then), "false" (before it) or "miss". A run with the change detector is read up to
    its own first detection (after it the detection changed the run): a scale whose first alarm comes later,
    or never, has no outcome for that run (so the two scales may count different numbers of streams)."""
    import numpy as np
    returns, tasks = fed_returns(run)
    settings = detector_settings(run)
    first = {scale: (replay(returns, settings, scale) or [None])[0] for scale in ("std", "mad")}
    own = first[settings["change_scale"]] if run.config["continual"].get("detector") == "change" else None
    switch = int(np.argmax(tasks >= 1))
    out = []
    for scale, alarm in first.items():
        if own is not None and (alarm is None or alarm > own):
            continue
        end = len(returns) if alarm is None else alarm + 1
        outcome = "miss" if alarm is None else "false" if alarm < switch else int(np.sum(tasks[:alarm + 1] >= 1))
        out.append((scale, tuple(returns[:end]), outcome))
    return out


def compare_scales(folders: list[Path]) -> None:
    """The change detector's first alarm with each scale (std: mean and standard deviation; mad: median and
    MAD), replayed over every hidden-boundary run in the folders with a second task (scale_outcomes); runs
    with the plateau detector are left out (its detections changed their returns). Runs that share the
    returns up to the outcome count once."""
    import numpy as np

    from metrics.runs import read_run
    outcomes: dict[tuple, dict] = {}
    for config in sorted(path for folder in folders for path in folder.rglob("config.yaml")):
        run = read_run(config.parent)
        continual = run.config.get("continual") or {}
        if continual.get("boundaries") != "hidden" or continual.get("detector") == "plateau" \
                or not (run.episodes.task >= 1).any():
            continue
        group = ("metaworld" if run.config.get("env", {}).get("suite") == "metaworld" else "pointmass",
                 "blended" if int(continual.get("blend_steps") or 0) else "abrupt")
        for scale, returns, outcome in scale_outcomes(run):
            outcomes.setdefault((*group, scale), {})[returns] = outcome
    rows = []
    for (suite, blend, scale), found in sorted(outcomes.items(), key=lambda item: (item[0][:2], item[0][2] != "std")):
        values = list(found.values())
        delays = [v for v in values if isinstance(v, int)]
        rows.append([f"{suite}, {blend}", scale, len(values), len(delays), values.count("false"), values.count("miss"),
                     f"{np.median(delays):.0f} [{max(delays)}]" if delays else "n/a"])
    print(table(["runs", "scale", "streams", "switch found", "false alarm first", "missed",
                 "delay, episodes of the new task: median [max]"], rows))


def returns_view(folder: Path) -> None:
    """change_detector_view for every run in a study directory or a folder of runs."""
    from metrics.runs import read_run
    dirs = sorted(d for d in folder.rglob("config.yaml") if (d.parent / "episodes.jsonl").is_file())
    for config in dirs:
        print(f"{config.parent.relative_to(folder)}: {change_detector_view(read_run(config.parent))}")


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["table", "returns", "detectors"],
                   help="table: the study's table; returns: what the change detector sees at each switch; "
                        "detectors: its first alarms with each scale, replayed over every run in the folders")
    p.add_argument("study_dir", type=Path, help="a task-free study's directory, or a folder of runs")
    p.add_argument("more", type=Path, nargs="*", help="detectors: more folders")
    args = p.parse_args()
    if args.more and args.mode != "detectors":
        p.error(f"{args.mode} reads one folder; more than one is for detectors")
    if args.mode == "detectors":
        compare_scales([args.study_dir, *args.more])
    elif args.mode == "returns" and args.study_dir.is_dir():
        returns_view(args.study_dir)
    elif (args.study_dir / "study.yaml").is_file():
        summarize(args.study_dir)
    elif args.study_dir.is_dir() and any((d / "config.yaml").is_file() for d in args.study_dir.iterdir()):
        summarize_runs(args.study_dir)
    else:
        p.error(f"{args.study_dir} is neither a study directory (launch/study.py benchmarks/studies/task-free-*.yaml) "
                "nor a folder of run directories")


if __name__ == "__main__":
    main()
