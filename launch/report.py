"""Turn runs into a lifelong-learning metrics report.

    python launch/report.py runs/pm-seed0 runs/pm-seed1            # one method, two seeds
    python launch/report.py runs/finetune-* runs/ewc-* --out reports/cw
    python launch/report.py runs/cw-* --reference runs/single-*    # + forward transfer, L2M vs STE
    python launch/report.py runs/pm-seed0 --export-l2logger l2logs # also write an l2logger log

A RUN_DIR may also be a folder of run directories, or a study directory (launch/study.py): then
one group per grid point, seeds aggregated, each with its trials' reference runs. Writes
report.md, report.html (plots embedded), PNG plots, metrics.json and videos/ (eval.video) into --out (default:
RUN_DIR/report for one run or a study, else ./report).
User errors (missing, empty or malformed run directories, bad options) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # `python launch/report.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launch.errors import UserError
from metrics.l2m import WINDOWS, L2MSettings
from metrics.runs import RunReadError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other user error
        raise UserError(message)


def parse_args(argv):
    p = _Parser(prog="report.py",
                description="Lifelong-learning metrics report for polytask runs (docs/metrics-and-reports.md).")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (or folders of them)")
    p.add_argument("--reference", nargs="+", default=[], metavar="RUN_DIR",
                   help="single-task reference runs: forward transfer and the L2M single-task-expert metrics")
    p.add_argument("--out", type=Path, help="output folder (replaced if it exists)")
    p.add_argument("--measure", choices=("success", "return"), default="success")
    p.add_argument("--last-k", type=int, default=5, help="evaluations averaged at the end of a window (CW: 5)")
    p.add_argument("--reps", type=int, default=4000, help="bootstrap resamples over seeds (CW: 4000)")
    p.add_argument("--confidence", type=float, default=0.90, help="CI level over seeds (CW: 0.90)")
    p.add_argument("--smoothing", choices=WINDOWS + ("none",), default="flat", help="L2M smoothing window")
    p.add_argument("--window-length", type=int, default=None, help="L2M smoothing window length")
    p.add_argument("--normalization", choices=("task", "run", "none"), default="task", help="L2M normalization")
    p.add_argument("--clamp-outliers", action="store_true", help="L2M: clamp to the 10%%/90%% quantiles")
    p.add_argument("--aggregation", choices=("mean", "median"), default="mean", help="L2M task aggregation")
    p.add_argument("--ste-averaging", choices=("metrics", "time"), default="metrics")
    p.add_argument("--export-l2logger", type=Path, metavar="DIR", help="also export each run as an l2logger log")
    args = p.parse_args(argv)
    if args.last_k < 1 or args.reps < 1 or not 0 < args.confidence < 1:
        raise UserError("--last-k and --reps must be positive and --confidence in (0, 1)")
    if args.window_length is not None and args.window_length < 1:
        raise UserError("--window-length must be positive")
    return args


def run_dirs(paths: list[str]) -> list[Path]:
    """Run directories named directly, or the run directories inside a named folder."""
    out = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"run directory {path} does not exist")
        if path.is_dir() and not (path / "config.yaml").exists():
            children = sorted(c for c in path.iterdir() if (c / "config.yaml").is_file())
            if not children:
                raise UserError(f"{path} is not a polytask run directory and holds none (no config.yaml)")
            out += children
        else:
            out.append(path)
    return out


def replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished temp folder into place, replacing an older report."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def main(argv=None) -> int:
    tmp = None
    try:
        args = parse_args(argv)
        from launch.studies import results as study
        from metrics.documents import write_report
        from metrics.grouping import group_runs
        from metrics.l2logger_io import export_run
        from metrics.runs import read_run
        from metrics.summary import ReportSettings, compute
        study_dir = None
        if len(args.runs) == 1 and study.is_study(Path(args.runs[0])):  # grouped by the grid's axes
            study_dir = Path(args.runs[0])
            groups = {label: [read_run(d) for d in dirs] for label, dirs in study.grid_runs(study_dir).items() if dirs}
            runs = [r for members in groups.values() for r in members]
            if not runs:
                raise UserError(f"study {study_dir} has no finished trial yet")
            if args.reference:
                references = [read_run(d) for d in run_dirs(args.reference)]
            else:  # each group with its own trials' references, each run read once
                by_group = study.reference_runs(study_dir)
                read = {d: read_run(d) for dirs in by_group.values() for d in dirs}
                references = {label: [read[d] for d in dirs] for label, dirs in by_group.items()}
        else:
            runs = [read_run(d) for d in run_dirs(args.runs)]
            references = [read_run(d) for d in run_dirs(args.reference)] if args.reference else []
            groups = group_runs(runs)
        settings = ReportSettings(measure=args.measure, last_k=args.last_k, cw_reps=args.reps,
                                  cw_confidence=args.confidence,
                                  l2m=L2MSettings(smoothing=args.smoothing, window_length=args.window_length,
                                                  normalization=args.normalization,
                                                  clamp_outliers=args.clamp_outliers,
                                                  aggregation=args.aggregation, ste_averaging=args.ste_averaging))
        for label, members in groups.items():
            if len({r.tasks for r in members}) > 1:
                raise UserError(f"runs of {label} evaluate different tasks: {', '.join(r.name for r in members)}")
        try:
            metrics = compute(groups, references, settings)
        except ValueError as e:
            raise UserError(str(e)) from None
        one = study_dir if study_dir else (Path(runs[0].name) if len(runs) == 1 else None)
        out = args.out or (one / "report" if one else Path("report"))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a report is an ordinary folder
        write_report(tmp, groups, metrics, settings)
        replace_dir(tmp, out)
        tmp = None
        if args.export_l2logger:
            shared = references if isinstance(references, list) else list(
                {r.name: r for refs in references.values() for r in refs}.values())
            for run in runs + shared:
                target = args.export_l2logger / Path(run.name).name
                if target.exists():
                    raise UserError(f"{target} already exists; choose another --export-l2logger folder")
                export_run(run, target)
            print(f"report.py: l2logger logs in {args.export_l2logger}")
        for label, m in metrics["groups"].items():
            cw, mt = m["continual"], m["multitask"]
            print(f"{label}: {len(m['seeds'])} seed(s) | evaluated with the {m['evaluation']['policy']} policy | "
                  f"average performance {_value(cw['performance'])} | "
                  f"forgetting {_value(cw['forgetting'])} | forward transfer {_value(cw.get('forward_transfer'))} | "
                  f"IQM {_value(mt['iqm'])}")
        print(f"report.py: wrote {out}/report.md, report.html, metrics.json and plots")
        return 0
    except (UserError, RunReadError) as e:
        sys.stderr.write(f"report.py: error: {e}\n")
        return 2
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _value(entry) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    ci = f" [{entry['lower']:.2f}, {entry['upper']:.2f}]" if entry.get("lower") is not None else ""
    return f"{entry['mean']:.2f}{ci}"


if __name__ == "__main__":
    sys.exit(main())
