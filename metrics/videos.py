"""The evaluation videos a report shows (a run's videos/step-<S>/<task>-goal<g>.mp4, launch/evaluation/videos.py).

Per run and task: the latest film, and for a continual run the film at the end of the task's own
stage and of every later one (the last evaluation filmed in (start, end]: forgetting can be watched
stage by stage; before its stage a task is untrained). Goal 0's film, the same episode start in
every evaluation and every run.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from metrics.runs import Run

STEP_DIR = re.compile(r"step-(\d+)")


def filmed_steps(run_dir: Path) -> list[int]:
    """The env steps of a run's filmed evaluations, ascending."""
    folder = Path(run_dir) / "videos"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if p.is_dir() and (m := STEP_DIR.fullmatch(p.name)))


def film(run_dir: Path, step: int, task: str, goal: int = 0) -> Path | None:
    path = Path(run_dir) / "videos" / f"step-{step}" / f"{task}-goal{goal}.mp4"
    return path if path.is_file() and path.stat().st_size else None


def run_films(run: Run) -> list[tuple[str, Path]]:
    """[(caption, mp4)] for each task of `run`: its latest film, and in a continual run (more than
    one stage) the one at the end of its own stage and of each later one."""
    steps, out = filmed_steps(Path(run.name)), []
    if not steps:
        return out
    continual = len(run.schedule) > 1
    for task in run.tasks:
        filmed = {s: path for s in steps if (path := film(run.name, s, task))}  # ascending steps
        if not continual:
            if filmed:
                last = max(filmed)
                out.append((f"{task}, step {last:,} (latest)", filmed[last]))
            continue
        own = next((k for k, stage in enumerate(run.schedule) if task in stage.tasks), 0)
        for k, stage in enumerate(run.schedule[own:], start=own):
            at = [s for s in filmed if stage.start < s <= stage.end]
            if at:  # a run still in its stage shows its latest film of it, not an "end"
                when = "end of stage" if at[-1] >= stage.end else "in stage"
                out.append((f"{task}, {when} {k + 1} (step {at[-1]:,})", filmed[at[-1]]))
    return out


def copy_films(groups: dict[str, list[Run]], out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """The films of every run, copied under out_dir/videos/ (the report is one folder):
    {"<group>, seed <s>": [(caption, path relative to out_dir)]}; runs without films left out."""
    shown: dict[str, list[tuple[str, str]]] = {}
    for g, (label, runs) in enumerate(groups.items()):
        for r, run in enumerate(runs):
            films = run_films(run)
            if not films:
                continue
            entries = []
            for f, (caption, path) in enumerate(films):
                target = Path("videos") / f"group{g}-run{r}" / f"{f:03d}.mp4"
                (out_dir / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out_dir / target)
                entries.append((caption, target.as_posix()))
            shown[f"{label}, seed {run.seed} ({Path(run.name).name})"] = entries
    return shown
