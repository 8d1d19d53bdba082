"""Run a study: a grid of ordinary training runs (methods x seeds x settings) on Ray Tune.

    python launch/study.py benchmarks/studies/pm2-methods.yaml              # into studies/pm2-methods
    python launch/study.py STUDY.yaml --out runs/my-study --ray-address 10.0.0.1:6379
    python launch/study.py --resume studies/pm2-methods                     # after Ctrl-C, SIGTERM, SIGKILL

The study file's format: launch/studies/spec.py (docs/studies.md). Every trial is one run
directory, trained by launch/train.py; the study directory holds study.yaml (resolved, with its
trials), the run directories named by their grid values, references/ (single-task reference
runs), trials.jsonl (what happened to each trial), logs/ (each trial's train.py output), tune/
(Ray Tune's experiments) and, at the end, report/ (launch/report.py on the study: one row per
grid point, seeds aggregated).

Exit codes: 0 every trial finished and reported; 1 some failed (the report covers the others) or
the report could not be written (report.py said why); 2 a bad study
file or option (one line, before any trial starts, nothing written); 130 interrupted (continue
with --resume).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # `python launch/study.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from launch.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(message)


def parse_args(argv):
    p = _Parser(prog="study.py", description="Run a grid of training runs on Ray Tune (docs/studies.md).")
    p.add_argument("study", nargs="?", metavar="STUDY.yaml", help="the study file (not needed with --resume)")
    p.add_argument("--out", type=Path, metavar="DIR", help="the study directory (default: studies/<name>)")
    p.add_argument("--ray-address", default="", metavar="HOST:PORT",
                   help="run the trials on this Ray cluster (default: a private local Ray sized to the machine)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue a study: finished trials are kept, "
                   "unfinished ones continue from their checkpoints, failed ones are tried again")
    args = p.parse_args(argv)
    if not args.study and not args.resume:
        raise UserError("name a study file, or --resume a study directory")
    if args.resume and args.out:
        raise UserError("--resume continues the study in its own directory; --out does not apply")
    return args


def create(study, out: Path) -> None:
    """The study directory, written whole or not at all: study.yaml, the references' configs and
    the first trials.jsonl rows, in a temp folder moved into place."""
    from launch.studies.driver import log_rows
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"study directory {out} already exists; continue it with --resume {out}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise UserError(f"cannot create the study directory {out}: {e.strerror}") from None
    try:
        (tmp / "study.yaml").write_text(yaml.safe_dump(study.resolved(), sort_keys=False))
        for trial in study.trials:
            if trial.reference:
                (tmp / "references").mkdir(exist_ok=True)
                (tmp / "references" / f"{trial.name}.yaml").write_text(yaml.safe_dump(trial.config, sort_keys=False))
        log_rows(tmp, [{"session": 0, "trial": t.name, "status": "pending"} for t in study.trials])
        tmp.chmod(0o777 & ~_umask())
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _driver():
    try:
        from launch.studies import driver
    except ImportError as e:
        raise UserError(f"launch/study.py needs Ray Tune ({e}): pip install 'polytask[tune]'") from None
    return driver


def _fits_this_machine(study) -> None:
    """A trial that needs more than the private local Ray has would wait forever: refused."""
    cpus = os.cpu_count() or 1
    if study.resources["cpu"] > cpus:
        raise UserError(f"a trial needs {study.resources['cpu']} CPUs (resources.cpu); this machine has {cpus}")
    if study.resources["gpu"]:
        import torch
        if study.resources["gpu"] > torch.cuda.device_count():
            raise UserError(f"a trial needs {study.resources['gpu']} GPUs (resources.gpu); this machine has "
                            f"{torch.cuda.device_count()}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def reopen(study_dir: Path, study_file: str | None):
    """The study of a study directory, checked again; a study file named too must be the same study."""
    from launch.studies import spec
    saved = study_dir / "study.yaml"
    if not saved.is_file():
        raise UserError(f"cannot resume {study_dir}: no study.yaml (not a study directory)")
    study = spec.load(saved, resolved=True)
    if study.resolved() != yaml.safe_load(saved.read_text()):
        raise UserError(f"{saved} no longer resolves to the same trials (was the code or a preset changed?)")
    if study_file and spec.load(study_file).resolved() != study.resolved():
        raise UserError(f"{study_file} is not the study in {study_dir}; --resume DIR alone continues it")
    return study


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        from launch.studies import spec
        driver = _driver()  # Ray Tune is there, before anything is written
        if args.resume:
            study, out = reopen(args.resume, args.study), args.resume
        else:
            study = spec.load(args.study)
            out = args.out or Path("studies") / study.name
        if args.ray_address:
            _join(args.ray_address)  # reachable, before anything is written
        else:
            _fits_this_machine(study)
        if not args.resume:
            create(study, out)
        progress = driver.run(study, out.resolve(), args.ray_address)
        unfinished = [n for n, s in progress.state.items() if s in ("pending", "running")]
        failed = [n for n, s in progress.state.items() if s in ("failed", "refused")]
        if unfinished:
            sys.stderr.write(f"study.py: interrupted with {len(unfinished)} trials unfinished; continue with "
                             f"--resume {out}\n")
            return 130
        if failed:
            sys.stderr.write(f"study.py: {len(failed)} trial(s) failed: {', '.join(failed)} (see trials.jsonl "
                             f"and {out}/logs)\n")
        reported = _report(out, study.report_argv())
        return 1 if failed or not reported else 0
    except UserError as e:
        sys.stderr.write(f"study.py: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\nstudy.py: interrupted\n")
        return 130


def _join(address: str) -> None:
    """Connect to the Ray cluster at `address` (launch/studies/driver.py finds Ray connected)."""
    import ray
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except Exception as e:  # ConnectionError, ValueError (a malformed address), TimeoutError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot join the Ray cluster at {address}: {first[:200]}") from None


def _report(out: Path, options: list[str]) -> bool:
    """launch/report.py on the study into out/report; False if it could not be written."""
    from launch import report
    from launch.studies.results import grid_runs
    if not any(grid_runs(out).values()):
        sys.stderr.write("study.py: no trial finished; no report\n")
        return False
    return report.main([str(out), "--out", str(out / "report"), *options]) == 0


if __name__ == "__main__":
    sys.exit(main())
