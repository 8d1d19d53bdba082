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
from pathlib import Path

if __package__ in (None, ""):  # `python launch/train.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from launch.config import Config, build_config, load_run_config, plan_schedule, single_task_configs
from launch.config.overrides import set_key, to_dict
from launch.errors import Preempted, TrainingDiverged, UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 like every user error (argparse would print the usage too)
        raise UserError(message)


def parse_args(argv):
    p = _Parser(prog="train.py", description="Train a multi-task agent (flags and keys: docs/configuration.md).")
    p.add_argument("--suite", help="metaworld (default) or pointmass")
    p.add_argument("--tasks", help="MT1 task name, MT10/MT25/MT50, PM4/PM8, or a comma list")
    p.add_argument("--steps", help="total env steps over all tasks (multi-task runs)")
    p.add_argument("--sequence", help="continual run: CW10, CW20, PM2, ... or task[+task][:steps],... in order")
    p.add_argument("--steps-per-task", help="continual run: env steps of each task's stage (CW: 1000000)")
    p.add_argument("--method", help="continual strategy: none, l2, ewc, online-ewc, si, mas, packnet, agem, "
                                    "replay, bc, hnet")
    p.add_argument("--mode", choices=("continual", "single-task"), default="continual",
                   help="with --sequence: train the sequence (default), or one single-task reference run "
                        "per task of it, in subdirectories of the run dir")
    p.add_argument("--balancer", help="multi-task loss balancing: mean (default), uncertainty, gradnorm, famo, "
                                      "pcgrad, cagrad, mgda, nashmtl, upgrad")
    p.add_argument("--engine", help="polytask (our actor/learner loop, default) or rllib (RLlib's new API stack)")
    p.add_argument("--algo", help="with --engine rllib: sac (default) or ppo")
    p.add_argument("--seed")
    p.add_argument("--eval-every", help="env steps between evaluations")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--backend", help="local (actor processes, default), ray (Ray actors) or single (one loop)")
    p.add_argument("--actors", help="actor workers per learner rank: auto (default: sized to the machine) or N")
    p.add_argument("--envs-per-actor", help="envs each actor steps (default: env.envs_per_task per task it steps)")
    p.add_argument("--ray-address", help="join this Ray cluster (default: start a private local one)")
    p.add_argument("--sync", help="torchrun learner ranks: step (all-reduce gradients, default), local "
                                  "(average every --sync-period updates) or qsr (the Quadratic Synchronization Rule)")
    p.add_argument("--sync-period", help="--sync local: updates between parameter averages (H)")
    p.add_argument("--sync-period-min", help="--sync qsr: the smallest period H_min")
    p.add_argument("--qsr-alpha", help="--sync qsr: alpha in H = (alpha / learning rate)^2")
    p.add_argument("--dist-timeout", type=float, default=1800.0, metavar="SECONDS",
                   help="torchrun: a collective waiting longer than this for the other ranks fails (default 1800)")
    p.add_argument("--run-dir", help="where to write the run (default runs/<suite>-<tasks>-seed<seed>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file of config overrides")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set sac.actor_lr=1e-3 (repeatable)")
    return p.parse_args(argv)


def _flag_values(args) -> dict:
    """Named flags as config keys; values go through the same type checks as --set."""
    raw = {"env.tasks": args.tasks, "run.steps": args.steps, "run.seed": args.seed,
           "continual.sequence": args.sequence, "continual.steps_per_task": args.steps_per_task,
           "continual.method": args.method, "balance.method": args.balancer,
           "eval.every": args.eval_every, "run.device": args.device, "runtime.backend": args.backend,
           "runtime.actors": args.actors, "runtime.envs_per_actor": args.envs_per_actor,
           "runtime.ray_address": args.ray_address, "run.engine": args.engine, "rllib.algo": args.algo,
           "sync.mode": args.sync, "sync.period": args.sync_period, "sync.period_min": args.sync_period_min,
           "sync.qsr_alpha": args.qsr_alpha}
    as_text = {"env.tasks", "runtime.backend", "runtime.ray_address", "run.device", "continual.sequence",
               "continual.method", "balance.method", "run.engine", "rllib.algo", "sync.mode"}
    return {k: (yaml.safe_load(v) if k not in as_text and v is not None else v) for k, v in raw.items()}


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


def resolve(args) -> tuple[Config, object, Path, bool, bool]:
    """The config, a continual run's schedule (None for a multi-task run), the run directory,
    whether this is a resume, and whether the run dir's logs are to be discarded (an elastic
    restart before the first checkpoint); nothing is written yet."""
    if args.resume:
        run_dir = Path(args.resume)
        changed = [args.suite, args.tasks, args.seed, args.config, args.set, args.run_dir, args.eval_every,
                   args.sequence, args.steps_per_task, args.method, args.balancer, args.mode != "continual",
                   args.engine, args.algo, args.sync, args.sync_period, args.sync_period_min, args.qsr_alpha]
        if any(changed):
            raise UserError("--resume continues a run with its saved config; only --steps, --device and "
                            "the runtime flags (--backend, --actors, --envs-per-actor, --ray-address) may change")
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"cannot resume {run_dir}: no config.yaml (not a polytask run directory)")
        cfg = load_run_config(run_dir / "config.yaml")
        if args.steps is not None and cfg.continual.sequence:
            raise UserError("a continual run's length follows from its sequence; --steps cannot change it")
        for key, value in _flag_values(args).items():
            if value is not None:
                set_key(cfg, key, value)
        return cfg, plan_schedule(cfg), run_dir, True, False
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
    if cfg.run.engine == "rllib":
        from launch.rllib_engine import check_supported
        check_supported(cfg)
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
            return cfg, schedule, run_dir, resume, not resume
        raise UserError(f"run directory {run_dir} already exists; use --resume {run_dir} to continue it")
    return cfg, schedule, run_dir, False, False


def train_one(cfg: Config, schedule, run_dir: Path, resume: bool, dist, discard_logs: bool = False) -> None:
    """Build the suite and trainer for one run and train it. A run directory this call created is
    removed again if it fails before the run really started."""
    from envs import make_suite  # heavy imports after the cheap checks
    from launch.preemption import sigterm_requests_stop
    from launch.trainer import Trainer
    from metrics.runlog import write_config
    created, trainer = False, None
    stack = contextlib.ExitStack()
    try:
        try:
            suite = make_suite(cfg.env.suite, cfg.env.tasks, cfg.run.seed)
        except ValueError as e:
            raise UserError(str(e)) from None
        if cfg.eval.goals > suite.num_goals:
            raise UserError(f"eval.goals must be at most {suite.num_goals} for {suite.name}, got {cfg.eval.goals}")
        if not resume and dist.is_main:
            created = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
        log = print if dist.is_main else (lambda *a, **k: print(f"[rank {dist.rank}]", *a, **k))
        if cfg.run.engine == "rllib":
            from launch.rllib_engine import RLlibRun, check_supported
            check_supported(cfg, dist.world)
            trainer = RLlibRun(cfg, suite, schedule, run_dir, resume, log=log)
        else:
            stack.enter_context(sigterm_requests_stop())  # SIGTERM: checkpoint and stop (launch/preemption.py)
            trainer = Trainer(cfg, suite, run_dir, resume, dist, log=log, schedule=schedule,
                              discard_logs=discard_logs)
        if dist.is_main:
            launch = {"world_size": dist.world, "elastic_run_id": os.environ.get("TORCHELASTIC_RUN_ID")}
            write_config(run_dir, to_dict(cfg), schedule.records() if schedule else None, launch)
            created = False  # from here on the directory is a real run
            if resume:
                print(f"polytask: resuming {run_dir} from step {trainer.step:,}", flush=True)
            what = (f"sequence {cfg.continual.sequence} with method {cfg.continual.method}" if cfg.continual.sequence
                    else suite.name)
            where = (f"RLlib {cfg.rllib.algo.upper()}, {trainer.env_runners} env runners" if cfg.run.engine == "rllib"
                     else f"{trainer.device}, backend {cfg.runtime.backend} ({trainer.plan.note})")
            print(f"polytask: training {what} [{', '.join(suite.task_names)}] for {cfg.run.steps:,} "
                  f"env steps on {where}"
                  f"{f', {dist.world} learner ranks' if dist.world > 1 else ''}; run dir {run_dir}", flush=True)
        trainer.run()
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if trainer is not None:
            trainer.close()
        stack.close()


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
        resolved, error = None, None
        if dist.is_main:
            try:
                resolved = resolve(args)
            except UserError as e:
                error = str(e)
        resolved, error = dist.broadcast_object((resolved, error))
        if error:
            raise UserError(error)
        cfg, schedule, base_dir, resume, discard_logs = resolved
        if args.mode == "single-task":  # one reference run per task of the sequence
            jobs = [(task_cfg, None, base_dir / task) for task, task_cfg in single_task_configs(cfg, schedule)]
        else:
            jobs = [(cfg, schedule, base_dir)]
        for job_cfg, job_schedule, run_dir in jobs:
            train_one(job_cfg, job_schedule, run_dir, resume, dist, discard_logs)
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
