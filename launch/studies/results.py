"""A study directory's runs as the report groups them: one group per grid point with the seed
axis left out (its seeds aggregated), labelled by its axis values; each group with the reference
runs of its own trials."""

from __future__ import annotations

from pathlib import Path

import yaml

from launch.studies.trial import finished

SEED_AXES = ("seed", "run.seed")


def is_study(path: Path) -> bool:
    return (Path(path) / "study.yaml").is_file() and (Path(path) / "trials.jsonl").is_file()


def _grid_trials(study_dir: Path):
    """(label, trial record) for each grid trial, in the grid's order, and {name: run dir} of the
    references. A label is e.g. "method=ewc" (the study's name when seed is its only axis)."""
    tree = yaml.safe_load((study_dir / "study.yaml").read_text())
    trials = [(", ".join(f"{a}={v}" for a, v in t["values"].items() if a not in SEED_AXES) or tree["name"], t)
              for t in tree["trials"] if not t["reference"]]
    return trials, {t["name"]: study_dir / t["run_dir"] for t in tree["trials"] if t["reference"]}


def label_values(label: str) -> dict[str, str]:
    """A group's label back into its axis values: "method=ewc, remedy=cbp" -> {"method": "ewc", "remedy": "cbp"}."""
    return dict(part.split("=", 1) for part in label.split(", ") if "=" in part)


def grid_runs(study_dir: Path) -> dict[str, list[Path]]:
    """{label: finished run directories}."""
    study_dir = Path(study_dir)
    groups: dict[str, list[Path]] = {}
    for label, trial in _grid_trials(study_dir)[0]:
        members = groups.setdefault(label, [])
        if finished(study_dir / trial["run_dir"]):
            members.append(study_dir / trial["run_dir"])
    return groups


def reference_runs(study_dir: Path) -> dict[str, list[Path]]:
    """{label: the finished reference runs of the group's trials} (its own settings on each task
    alone: a study whose groups train different networks compares each with its own)."""
    trials, references = _grid_trials(Path(study_dir))
    out: dict[str, list[Path]] = {}
    for label, trial in trials:
        members = out.setdefault(label, [])
        members += [references[name] for name in trial["references"]
                    if finished(references[name]) and references[name] not in members]
    return out
