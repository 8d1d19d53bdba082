"""The table of a study of continual learning without task boundaries (continual.boundaries=hidden).

    python launch/study.py benchmarks/studies/task-free-pointmass.yaml   # pointmass PM2, target visible
    python launch/study.py benchmarks/studies/task-free-pm2r.yaml        # PM2R: target visible, tasks in conflict
    python launch/study.py benchmarks/studies/task-free-pm2r-8k.yaml     # PM2R at 8,000 env steps per task
    python launch/study.py benchmarks/studies/task-free-3rl.yaml         # the target hidden: 3RL, +- a detector
    python launch/study.py benchmarks/studies/task-free-metaworld.yaml   # a short Meta-World sequence
    python benchmarks/task_free.py table STUDY_DIR
    python benchmarks/task_free.py table RUNS_DIR    # a folder of plain runs (one per seed): one row

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


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["table"])
    p.add_argument("study_dir", type=Path, help="a task-free study's directory, or a folder of runs")
    args = p.parse_args()
    if (args.study_dir / "study.yaml").is_file():
        summarize(args.study_dir)
    elif args.study_dir.is_dir() and any((d / "config.yaml").is_file() for d in args.study_dir.iterdir()):
        summarize_runs(args.study_dir)
    else:
        p.error(f"{args.study_dir} is neither a study directory (launch/study.py benchmarks/studies/task-free-*.yaml) "
                "nor a folder of run directories")


if __name__ == "__main__":
    main()
