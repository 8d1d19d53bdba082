"""The fast learner path and the machine-sized runtime (issue 16), each measured side by side.

    python benchmarks/learner_path.py updates      # learner updates/s: eager vs compiled, host vs device replay
    python benchmarks/learner_path.py collection   # an actor's share of time in Meta-World's own step
    python benchmarks/learner_path.py contention   # a run alone and beside a busy process: old vs auto sizing
    python benchmarks/learner_path.py run          # a real MT10 run with the defaults: rates, bound, projection
                                                   # (--precision bf16: the same run in bf16)
    python benchmarks/learner_path.py precision    # learner updates/s, fp32 vs bf16 (benchmarks/precision.py)

updates: the MT10 (10 x 128) and MT50 (50 x 128) default learners (3x400, multi-head), each
variant in a fresh process (its own compile, its own memory), interleaved over --repeats rounds;
the timed updates come after --warmup updates (compilation included there, and reported).
On a machine with CUDA the GPU rows are added (eager, and reduce-overhead: CUDA graphs).

collection: one actor stepping MT10 with the MT10 default policy, in-process, chunks pickled and
unpickled as the pipe does; the ratio is the time inside Meta-World's own `step` (the simulator:
the same states and actions, so a like-for-like ceiling) over the actor's whole time.

contention: `launch/train.py` runs alone and beside one busy process (a Python spin loop), with
the old defaults (2 actors, torch's default threads: every core) and with the auto sizing.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import median, table  # noqa: E402


def one_update_rate(tasks: int, compile_mode: str, device: str, replay_on_device: bool, updates: int,
                    warmup: int) -> dict:
    """In this (fresh) process: updates/s of the default learner for `tasks` tasks."""
    import resource

    import numpy as np
    import torch

    from agents.replay import DeviceReplay, MultiTaskReplay
    from agents.sac import SACLearner
    from launch.config import build_config

    cfg = build_config("metaworld", overrides=[f"sac.compile={compile_mode}"])
    dev = torch.device(device)
    learner = SACLearner(cfg.sac, 39, 4, tasks, dev)
    rows = 2000
    replay = DeviceReplay(tasks, rows, 39, 4, dev) if replay_on_device else MultiTaskReplay(tasks, rows, 39, 4)
    rng = np.random.default_rng(0)
    n = rows * tasks
    replay.add(np.repeat(np.arange(tasks), rows), rng.standard_normal((n, 39), np.float32),
               rng.uniform(-1, 1, (n, 4)).astype(np.float32), rng.random(n, np.float32),
               rng.standard_normal((n, 39), np.float32), np.zeros(n, np.float32))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(warmup):
        learner.update(replay.sample(128, rng))
    sync()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(updates):
        learner.update(replay.sample(128, rng))
    sync()
    rate = updates / (time.perf_counter() - start)
    memory = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"updates_per_s": rate, "warmup_s": warm, "memory_mb": memory}


def updates(args) -> None:
    import torch
    variants = [("cpu", "none", False), ("cpu", "default", False)]
    if torch.cuda.is_available():
        variants += [("cuda", "none", False), ("cuda", "none", True), ("cuda", "reduce-overhead", True)]
    for tasks, count in zip(args.tasks, args.updates, strict=True):
        results = {v: [] for v in variants}
        for _ in range(args.repeats):
            for v in variants:
                proc = subprocess.run([sys.executable, __file__, "_one", json.dumps([tasks, v[1], v[0], v[2], count,
                                                                                     args.warmup])],
                                      capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS":
                                                                           str(args.threads)})
                if proc.returncode:
                    raise SystemExit(proc.stderr[-3000:])
                results[v].append(json.loads(proc.stdout.splitlines()[-1]))
        base = median([r["updates_per_s"] for r in results[variants[0]]])
        rows = []
        for (device, mode, on_device), runs in results.items():
            rate = median([r["updates_per_s"] for r in runs])
            warm, memory = median([r["warmup_s"] for r in runs]), median([r["memory_mb"] for r in runs])
            rows.append([device, mode, "device" if on_device else "host", f"{rate:.2f}", f"{rate / base:.2f}x",
                         f"{warm:.1f}", f"{memory:,.0f}"])
        print(f"{tasks} tasks (batch {tasks} x 128), 3x400 multi-head, {args.threads} CPU thread(s), {count} updates "
              f"after {args.warmup}, median of {args.repeats} fresh processes", flush=True)
        print(table(["device", "sac.compile", "replay", "updates/s", "vs CPU eager", f"first {args.warmup} updates s",
                     "peak memory MB"], rows), flush=True)


def collection(args) -> None:
    """Share of an actor's time inside Meta-World's step, by envs per actor (1 actor, MT10)."""
    import torch

    from agents.sac.config import SACConfig
    from launch.actors.actor import Actor, ActorSpec

    torch.set_num_threads(1)
    rows = []
    for envs, tasks in ((10, 10), (20, 10), (40, 10), (32, 1)):
        rates, shares = [], []
        for r in range(args.repeats):
            actor = Actor(ActorSpec(0, "metaworld", "MT10", r, tuple(range(tasks)), envs, SACConfig(), 10))
            actor.set_weights(torch.nn.utils.parameters_to_vector(actor.policy.parameters()).detach(), 1)
            inside = [0.0]
            for env in actor.pool.envs:  # time Meta-World's own step, beneath our env wrapper
                def timed(action, step=env._env.step, inside=inside):
                    start = time.perf_counter()
                    out = step(action)
                    inside[0] += time.perf_counter() - start
                    return out
                env._env.step = timed
            actor.collect(2 * envs)
            inside[0], steps, start = 0.0, 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                steps += len(pickle.loads(pickle.dumps(actor.collect(64))))  # what the pipe does to a chunk
            elapsed = time.perf_counter() - start
            rates.append(steps / elapsed)
            shares.append(inside[0] / elapsed)
            actor.close()
        rows.append([f"{envs} envs, {tasks} task(s)", f"{median(rates):,.0f}", f"{median(shares):.3f}"])
    print(f"one actor, MT10 default policy (3x400, multi-head), 1 thread, {args.seconds:.0f} s x {args.repeats}, "
          f"medians")
    print(table(["actor", "env-steps/s", "share of time in Meta-World's step"], rows))


CONTENTION_JOBS = {
    # 3,000 steps per stage: the preset's stage length when the table was measured (now 6,000)
    "PM2 continual (64x64)": ["--suite", "pointmass", "--sequence", "PM2", "--steps-per-task", "3000",
                              "--backend", "local"],
    "MT10 defaults (3x400), 3,000 learning steps": ["--suite", "metaworld", "--steps", "4000", "--eval-every", "0",
                                                    "--set", "eval.goals=1", "--set", "sac.warmup_steps_per_task=100"],
}


def contention(args) -> None:
    import multiprocessing

    cores = len(os.sched_getaffinity(0))
    settings = {"old defaults (2 actors, every core as a thread)": ["--actors", "2", "--set", f"run.threads={cores}"],
                "auto (this change)": []}
    rows = []
    for job, flags in CONTENTION_JOBS.items():
        for label, extra in settings.items():
            times = {}
            for busy in (False, True):
                spinner = multiprocessing.Process(target=_spin, daemon=True) if busy else None
                if spinner:
                    spinner.start()
                    time.sleep(2)
                seconds = []
                for _ in range(args.repeats):
                    with tempfile.TemporaryDirectory() as tmp:
                        start = time.perf_counter()
                        proc = subprocess.run([sys.executable, str(ROOT / "launch" / "train.py"), *flags, *extra,
                                               "--run-dir", f"{tmp}/run"], capture_output=True, text=True)
                        seconds.append(time.perf_counter() - start)
                        if proc.returncode:
                            raise SystemExit(proc.stderr[-2000:])
                        sizing = json.loads(Path(f"{tmp}/run/learners.json").read_text()).get("workers", "")
                times[busy] = (median(seconds), sizing)
                if spinner:
                    spinner.kill()
                    time.sleep(2)
            rows.append([job, label, f"{times[False][0]:.1f}", f"{times[True][0]:.1f}",
                         f"{times[True][0] / times[False][0]:.2f}x", times[False][1], times[True][1]])
    print(f"{cores} cores; wall seconds of the whole command, median of {args.repeats}")
    print(table(["run", "sizing", "alone s", "beside a busy process s", "slowdown", "plan alone", "plan beside it"],
                rows))


def _spin() -> None:
    while True:
        pass


def run(args) -> None:
    """A real MT10 run with the defaults for --seconds: env-steps/s and updates/s after the
    warm-up, what bound it, and the full 20M-step run projected from those rates."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "launch" / "train.py"), "--suite", "metaworld", "--eval-every", "0",
               "--run-dir", f"{tmp}/run", "--set", "run.log_every=20000", "--set", f"sac.precision={args.precision}",
               *args.set]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines, start = [], time.perf_counter()
        for line in proc.stdout:
            lines.append(line.rstrip())
            print(line.rstrip(), flush=True)
            if time.perf_counter() - start > args.seconds:
                break
        elapsed = time.perf_counter() - start
        proc.terminate()
        proc.wait()
    steps = [line for line in lines if line.startswith("step ")]
    print("\n".join(line for line in lines if line.startswith("polytask:")))
    if steps and "ETA" in steps[-1] and "estimating" not in steps[-1]:
        eta = steps[-1].rsplit("ETA ", 1)[1]
        left = (int(eta.split("h")[0]) * 3600 + int(eta.split("h")[1].rstrip("m")) * 60 if "h" in eta
                 else int(eta.split("m")[0]) * 60 + int(eta.split("m")[1].rstrip("s")))
        print(f"after {elapsed:.0f} s: {steps[-1]}\nprojected whole run: {(elapsed + left) / 3600:.1f} h "
              f"(elapsed + the progress line's ETA: remaining warm-up and learning steps at their measured rates)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["updates", "collection", "contention", "run", "precision", "_one", "_precision"])
    p.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tasks", type=int, nargs="+", default=[10, 50])
    p.add_argument("--updates", type=int, nargs="+", default=[20, 5])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--set", action="append", default=[], help="run: extra train.py arguments")
    p.add_argument("--precision", default="fp32", help="run: sac.precision (fp32, bf16, auto)")
    args = p.parse_args()
    from benchmarks import precision
    if args.mode == "_one":
        print(json.dumps(one_update_rate(*json.loads(args.spec))))
        return
    if args.mode == "_precision":
        print(json.dumps(precision.one(json.loads(args.spec))))
        return
    {"updates": updates, "collection": collection, "contention": contention, "run": run,
     "precision": precision.precision}[args.mode](args)


if __name__ == "__main__":
    main()
