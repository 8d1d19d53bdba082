"""Train one shared multi-task agent.

    python launch/train.py --suite metaworld                  # MT10, the defaults
    python launch/train.py --suite metaworld --tasks MT50 --steps 100000000
    python launch/train.py --suite pointmass --steps 20000 --set sac.actor_lr=1e-3
    python launch/train.py --resume runs/metaworld-MT10-seed0-...
    python launch/train.py --suite metaworld --sequence CW10 --method packnet   # continual
    python launch/train.py --suite metaworld --sequence CW10 --mode single-task # its reference runs
    torchrun --standalone --nproc-per-node=2 --max-restarts=3 launch/train.py --run-dir runs/mt10 --sync local

Reads like a table of contents: parse config -> build suite -> build trainer -> run.
User errors (bad flags, names, files, checkpoints) print one line and exit with code 2; a run
whose learner diverges prints one line and exits with code 3, its last good checkpoint intact;
SIGTERM (preemption) stops it with a checkpoint at the current step and exit code 143; a lost
learner rank ends the others with one line and exit code 1.

Elastic restarts (torchrun --max-restarts N): torchrun starts every rank again after a failure,
with the same arguments; a restarted rank recognises the run directory as its job's (config.yaml
records torchrun's run id) and resumes it from its latest checkpoint, or, if none was written
yet, starts it again with its logs emptied. Without --run-dir the directory is named after the
run id (torchrun's own with --standalone, else --rdzv-id), not the time, so restarts find it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python launch/train.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from launch.config import Config, build_config, load_run_config, plan_schedule, single_task_configs
from launch.config.overrides import choices, leaves, set_key, to_dict
from launch.config.validate import check_launch, validate
from launch.errors import Preempted, TrainingDiverged, UserError


@dataclass(frozen=True)
class Flag:
    """One command-line flag: the config key it sets (None: a flag of the launch itself), its help
    ("{choices}" is filled in from the key's declared choices), whether --resume takes it, and any
    other argparse options. A flag's value is typed by its key's type hint, as --set's are."""
    name: str
    key: str | None
    help: str = ""
    resumable: bool = False
    options: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")


FLAGS = (
    Flag("--suite", "env.suite", "{choices} (default: metaworld)"),
    Flag("--tasks", "env.tasks", "MT1 task name, MT10/MT25/MT50, PM4/PM8, or a comma list"),
    Flag("--steps", "run.steps", "total env steps over all tasks (multi-task runs)", resumable=True),
    Flag("--sequence", "continual.sequence", "continual run: CW10, CW20, PM2, ... or task[+task][:steps],... in order"),
    Flag("--steps-per-task", "continual.steps_per_task", "continual run: env steps of each task's stage (CW: 1000000)"),
    Flag("--method", "continual.method", "continual strategy: {choices} (default: none, fine-tuning)"),
    Flag("--mode", None, "with --sequence: train the sequence (default), or one single-task reference run per task "
         "of it, in subdirectories of the run dir", options={"choices": ("continual", "single-task"),
                                                             "default": "continual"}),
    Flag("--balancer", "balance.method", "multi-task loss balancing: {choices} (default: mean)"),
    Flag("--engine", "run.engine", "polytask (our actor/learner loop, default) or rllib (RLlib's new API stack)"),
    Flag("--algo", "rllib.algo", "with --engine rllib: {choices} (default: sac)"),
    Flag("--seed", "run.seed"),
    Flag("--eval-every", "eval.every", "env steps between evaluations"),
    Flag("--device", "run.device", "cpu, cuda, cuda:N or auto", resumable=True),
    Flag("--backend", "runtime.backend", "local (actor processes, default), ray (Ray actors) or single (one loop)",
         resumable=True),
    Flag("--actors", "runtime.actors", "actor workers per learner rank: auto (default: sized to the machine) or N",
         resumable=True),
    Flag("--envs-per-actor", "runtime.envs_per_actor",
         "envs each actor steps (default: env.envs_per_task per task it steps)", resumable=True),
    Flag("--ray-address", "runtime.ray_address", "join this Ray cluster (default: start a private local one)",
         resumable=True),
    Flag("--sync", "sync.mode", "torchrun learner ranks: step (all-reduce gradients, default), local (average "
         "every --sync-period updates) or qsr (the Quadratic Synchronization Rule)"),
    Flag("--sync-period", "sync.period", "--sync local: updates between parameter averages (H)"),
    Flag("--sync-period-min", "sync.period_min", "--sync qsr: the smallest period H_min"),
    Flag("--qsr-alpha", "sync.qsr_alpha", "--sync qsr: alpha in H = (alpha / learning rate)^2"),
    Flag("--dist-timeout", None, "torchrun: a collective waiting longer than this for the other ranks fails "
         "(default 1800)", resumable=True, options={"type": float, "default": 1800.0, "metavar": "SECONDS"}),
    Flag("--run-dir", None, "where to write the run (default runs/<suite>-<tasks>-seed<seed>-<time>)"),
    Flag("--resume", None, "continue a run from its latest checkpoint", resumable=True,
         options={"metavar": "RUN_DIR"}),
    Flag("--config", None, "YAML file of config overrides", options={"metavar": "FILE.yaml"}),
    Flag("--set", None, "override any config field, e.g. --set sac.actor_lr=1e-3 (repeatable)",
         options={"action": "append", "default": [], "metavar": "KEY=VALUE"}),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 like every user error (argparse would print the usage too)
        raise UserError(message)


def parse_args(argv):
    p = _Parser(prog="train.py", description="Train a multi-task agent (flags and keys: docs/configuration.md).")
    fields = {key: f for key, f, _ in leaves(Config())}
    for flag in FLAGS:
        meta = fields[flag.key].metadata if flag.key else {}
        text = flag.help.format(choices=", ".join(choices(meta))) if "choices" in meta else flag.help
        p.add_argument(flag.name, help=text or None, **flag.options)
    return p.parse_args(argv)


def _flag_values(args) -> dict:
    """Named flags as config keys, their values as typed (set_key reads them by the key's type
    hint, as it reads --set's)."""
    return {flag.key: getattr(args, flag.dest) for flag in FLAGS if flag.key}


def _refuse_changes_on_resume(args) -> None:
    given = [flag.name for flag in FLAGS
             if not flag.resumable and getattr(args, flag.dest) != flag.options.get("default")]
    if given:
        may = [flag.name for flag in FLAGS if flag.resumable and flag.name != "--resume"]
        raise UserError(f"--resume continues a run with its saved config; only {', '.join(may[:-1])} and "
                        f"{may[-1]} may change (not {', '.join(given)})")


def elastic_run_id() -> str | None:
    """torchrun's run id when it may restart this process (--max-restarts > 0), else None."""
    if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0:
        return os.environ.get("TORCHELASTIC_RUN_ID", "none")
    return None


def _restarted_job_owns(run_dir: Path) -> bool:
    """Is `run_dir` this elastic job's own, written before torchrun restarted it?"""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0 or not (run_dir / "config.yaml").is_file():
        return False
    tree = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    return (tree.get("launch") or {}).get("elastic_run_id") == os.environ.get("TORCHELASTIC_RUN_ID")


@dataclass
class Resolved:
    """What resolve() decided; nothing is written yet."""
    cfg: Config
    schedule: object           # a continual run's Schedule (continual/schedule.py); None: a multi-task run
    run_dir: Path
    resume: bool = False       # continue the run dir from its latest checkpoint
    discard_logs: bool = False  # an elastic restart before the first checkpoint: its logs start afresh


def resolve(args) -> Resolved:
    """The config, its schedule and the run directory, checked; nothing is written yet."""
    if args.resume:
        run_dir = Path(args.resume)
        _refuse_changes_on_resume(args)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"cannot resume {run_dir}: no config.yaml (not a polytask run directory)")
        cfg = load_run_config(run_dir / "config.yaml")
        if args.steps is not None and cfg.continual.sequence:
            raise UserError("a continual run's length follows from its sequence; --steps cannot change it")
        for key, value in _flag_values(args).items():
            if value is not None:
                set_key(cfg, key, value)
        validate(cfg)  # the flags a resume may change are checked like any others
        return Resolved(cfg, plan_schedule(cfg), run_dir, resume=True)
    if args.sequence and (args.tasks or args.steps):
        raise UserError("with --sequence, the sequence names the tasks and --steps-per-task the budget "
                        "(--tasks and --steps are for multi-task runs)")
    if args.mode == "single-task" and not args.sequence:
        raise UserError("--mode single-task needs --sequence (it trains one reference run per task of it)")
    if args.algo and args.engine != "rllib":
        raise UserError("--algo chooses RLlib's algorithm: it needs --engine rllib")
    if args.engine == "rllib" and (args.mode != "continual" or args.backend):
        raise UserError("--engine rllib samples with RLlib's env runners (--actors of them) and trains one sequence: "
                        "--backend and --mode single-task do not apply")
    cfg = build_config(args.suite, args.config, _flag_values(args), args.set)
    schedule = plan_schedule(cfg)
    what = cfg.continual.sequence if cfg.continual.sequence else (cfg.env.tasks or "default")
    if cfg.continual.sequence:
        what += f"-{cfg.continual.method}" if args.mode == "continual" else "-single-task"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if elastic_run_id() is not None and not args.run_dir:  # restarts must find the same directory
        if elastic_run_id() == "none":
            raise UserError("torchrun --max-restarts needs --run-dir (or --rdzv-id) so that restarted ranks "
                            "find their run directory")
        stamp = f"job-{elastic_run_id()[:12]}"
    run_dir = Path(args.run_dir or f"runs/{cfg.env.suite}-{what.replace(',', '+').replace(':', '_')}"
                   f"-seed{cfg.run.seed}-{stamp}")
    if run_dir.exists() and any(run_dir.iterdir()):
        if _restarted_job_owns(run_dir):
            from launch.checkpoint import list_checkpoints
            resume = bool(list_checkpoints(run_dir / "checkpoints"))
            return Resolved(cfg, schedule, run_dir, resume=resume, discard_logs=not resume)
        raise UserError(f"run directory {run_dir} already exists; use --resume {run_dir} to continue it")
    return Resolved(cfg, schedule, run_dir)


def train_one(cfg: Config, schedule, run_dir: Path, resume: bool, dist, discard_logs: bool = False) -> None:
    """Build the suite and trainer for one run and train it. A run directory this call created is
    removed again if it fails before the run really started."""
    from envs import make_suite  # heavy imports after the cheap checks
    from launch.loop.trainer import Trainer
    from launch.preemption import sigterm_requests_stop
    from metrics.runlog import write_config
    created, trainer = False, None
    stack = contextlib.ExitStack()
    try:
        try:
            if cfg.eval.video:  # the GL backend MuJoCo renders with: chosen before MuJoCo is imported
                from envs.rendering import prepare
                prepare(cfg.env.suite)
            suite = make_suite(cfg.env.suite, cfg.env.tasks, cfg.run.seed, cfg.env.goal_observable,
                               cfg.env.target_visible)
        except ValueError as e:
            raise UserError(str(e)) from None
        check_launch(cfg, dist.world, suite)  # learner ranks, the suite, the engine: before anything is built
        if not resume and dist.is_main:
            created = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
        log = print if dist.is_main else (lambda *a, **k: print(f"[rank {dist.rank}]", *a, **k))
        if cfg.run.engine == "rllib":
            from launch.rllib_engine import RLlibRun
            trainer = RLlibRun(cfg, suite, schedule, run_dir, resume, log=log)
        else:
            stack.enter_context(sigterm_requests_stop())  # SIGTERM: checkpoint and stop (launch/preemption.py)
            trainer = Trainer(cfg, suite, run_dir, resume, dist, log=log, schedule=schedule,
                              discard_logs=discard_logs)
        if dist.is_main:
            launch = {"world_size": dist.world, "elastic_run_id": os.environ.get("TORCHELASTIC_RUN_ID")}
            # sac.precision as this machine resolved it (auto: its bf16 units; RLlib's learner: fp32)
            launch["precision"] = trainer.learner.precision if cfg.run.engine != "rllib" else "fp32"
            write_config(run_dir, to_dict(cfg), schedule.records() if schedule else None, launch)
            created = False  # from here on the directory is a real run
            if resume:
                print(f"polytask: resuming {run_dir} from step {trainer.step:,}", flush=True)
            print(_banner(cfg, suite, trainer, run_dir, dist.world), flush=True)
        trainer.run()
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if trainer is not None:
            trainer.close()
        stack.close()


def _banner(cfg: Config, suite, trainer, run_dir: Path, world: int) -> str:
    """The start line: what is trained, for how long, on what, and where it is written."""
    what = (f"sequence {cfg.continual.sequence} with method {cfg.continual.method}" if cfg.continual.sequence
            else suite.name)
    where = (f"RLlib {cfg.rllib.algo.upper()}, {trainer.env_runners} env runners, fp32" if cfg.run.engine == "rllib"
             else f"{trainer.device} in {_precision(trainer.learner)}, backend {cfg.runtime.backend} "
                  f"({trainer.plan.note})")
    ranks = f", {world} learner ranks" if world > 1 else ""
    return (f"polytask: training {what} [{', '.join(suite.task_names)}] for {cfg.run.steps:,} env steps on "
            f"{where}{ranks}; run dir {run_dir}")


def _precision(learner) -> str:
    """The learner's precision and how it was chosen: 'bf16 (auto: AMX)', 'fp32'."""
    why = learner.precision_reason
    return learner.precision + (f" ({why})" if why != "set" else "")


def _lost_peer(error: Exception, dist) -> bool:
    """Did a collective fail because another learner rank is gone (or hangs)?"""
    if dist is None or dist.world == 1:
        return False
    import torch.distributed
    return isinstance(error, torch.distributed.DistError) or "gloo" in str(error).lower()


def launch_signature(argv) -> str:
    """What every torchrun rank must agree on: its arguments and the versions it runs."""
    from importlib.metadata import PackageNotFoundError, version
    found = []
    for name in ("polytask", "torch"):
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            found.append(f"{name}==?")
    return "\0".join([*(sys.argv[1:] if argv is None else map(str, argv)), *found])


def main(argv=None) -> int:
    run_dir, dist = None, None
    try:
        args = parse_args(argv)
        from launch.distributed.ranks import init_from_env

        dist = init_from_env(args.dist_timeout)  # one process unless started by torchrun
        dist.check_same_launch(launch_signature(argv))
        # Rank 0 resolves the config (it may read the run dir) and tells every rank: all fail alike.
        resolved = dist.from_main(lambda: resolve(args))
        if args.mode == "single-task":  # one reference run per task of the sequence
            jobs = [(task_cfg, None, resolved.run_dir / task)
                    for task, task_cfg in single_task_configs(resolved.cfg, resolved.schedule)]
        else:
            jobs = [(resolved.cfg, resolved.schedule, resolved.run_dir)]
        for job_cfg, job_schedule, run_dir in jobs:
            train_one(job_cfg, job_schedule, run_dir, resolved.resume, dist, resolved.discard_logs)
        return 0
    except UserError as e:
        sys.stderr.write(f"train.py: error: {e}\n")
        return 2
    except TrainingDiverged as e:
        sys.stderr.write(f"train.py: error: {e}\n")
        return 3
    except Preempted as e:
        sys.stderr.write(f"train.py: {e}\n")
        return 143
    except Exception as e:
        if not _lost_peer(e, dist):
            raise
        # A peer died or hung: torchrun --max-restarts starts the group again.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"train.py: error: lost contact with the other learner ranks ({first[:200]})\n")
        return 1
    except KeyboardInterrupt:
        from launch.checkpoint import list_checkpoints
        if run_dir is not None and (list_checkpoints(run_dir / "checkpoints")
                                    or any((run_dir / "rllib_checkpoints").glob("step-*"))):
            sys.stderr.write(f"\ntrain.py: interrupted; continue with --resume {run_dir}\n")
        else:
            sys.stderr.write("\ntrain.py: interrupted before the first checkpoint; nothing to resume\n")
        return 130
    finally:
        if dist is not None:
            dist.close()


if __name__ == "__main__":
    sys.exit(main())
