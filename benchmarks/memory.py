"""Recurrent SAC (`sac.memory`, agents/recurrent.py, agents/context.py) against the MLP: the tables of
the memory studies, and what each variant costs.

    python launch/study.py benchmarks/studies/memory-pm4.yaml        # final success on task-hidden PM4
    python launch/study.py benchmarks/studies/memory-continual.yaml  # task-hidden pointmass PM3, GRU policies:
                                                                     # fine-tuning, EWC, hnet (mlp / chunked / rnn)
    python launch/study.py benchmarks/studies/memory-metaworld.yaml  # goal-hidden Meta-World at a CPU budget
    python benchmarks/memory.py table STUDY_DIR
    python benchmarks/memory.py cost [--repeats 3]
                                    # learner updates/s, batch sampling time, replay bytes per transition

The studies' files say what each trains. table: a study without a task sequence (pm4, metaworld):
final success of every task (the last evaluation), mean over seeds x tasks [95% stratified bootstrap
CI], and the median training rate; a continual study: Continual World's average performance,
forgetting and forward transfer (against the single-task runs of each row's own configuration), mean
over seeds [90% bootstrap CI], success read as the mean of the last --last-k evaluations of a window.

cost: for each variant at the pointmass preset's width (64x64 networks; memory 128, 4 tasks x 16
windows; context GRU 30, 4 x 64 transitions; the MLP 4 x 64 transitions): learner updates/s (fresh
process, median of --repeats), the time to sample one batch as a fraction of an update, replay bytes
per stored transition against flat replay, and the process's peak resident memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import median, table  # noqa: E402

HIDDEN = ["--set", "sac.task_input=false", "--set", "sac.head=single"]
VARIANTS = {  # name: --set overrides on top of the task-hidden pointmass run
    "mlp": [],
    "gru": ["--set", "sac.memory=gru", "--set", "sac.batch_size_per_task=16"],
    "lstm": ["--set", "sac.memory=lstm", "--set", "sac.batch_size_per_task=16"],
    "context": ["--set", "sac.memory=gru", "--set", "sac.memory_context=15", "--set", "sac.memory_hidden=30"],
}


def multitask_table(study_dir: Path, groups: dict, reps: int) -> None:
    from metrics import multitask
    from metrics.runs import read_run
    rows = []
    for label, dirs in groups.items():
        if not dirs:
            continue
        scores = multitask.score_matrix([read_run(d) for d in dirs], "success", last_k=1)
        low, high = multitask.stratified_bootstrap_ci(scores, multitask.mean, reps=reps)
        rates = [json.loads((d / "learners.json").read_text())["train_env_steps_per_s"] for d in dirs]
        rows.append([label, len(dirs), f"{multitask.mean(scores):.2f} [{low:.2f}, {high:.2f}]", f"{median(rates):.0f}"])
    print(f"{study_dir.name}: final success (the last evaluation), mean over seeds x tasks [95% stratified "
          "bootstrap CI]")
    print(table(["variant", "seeds", "final success", "env-steps/s (median)"], rows))


def continual_table(study_dir: Path, groups: dict, last_k: int) -> None:
    from launch.studies.results import reference_runs
    from metrics import continual
    from metrics.runs import read_run

    def cell(entry):
        return "n/a" if entry is None or entry["mean"] is None else \
            f"{entry['mean']:.2f} [{entry['lower']:.2f}, {entry['upper']:.2f}]"
    references, rows = reference_runs(study_dir), []
    for label, dirs in groups.items():
        if dirs:
            refs = [read_run(d) for d in references.get(label, [])]
            summary = continual.summarize([read_run(d) for d in dirs], refs or None, last_k=last_k)
            rows.append([label, len(dirs), cell(summary["performance"]), cell(summary["forgetting"]),
                         cell(summary.get("forward_transfer"))])
    print(f"{study_dir.name}: mean over seeds [90% bootstrap CI]; forward transfer against each row's own "
          f"single-task runs (n/a: none finished); success read as the mean of the last {last_k} evaluations "
          "of a window")
    print(table(["variant", "seeds", "average performance", "forgetting", "forward transfer"], rows))


def study_table(args) -> None:
    import yaml

    from launch.studies.results import grid_runs
    study_dir = Path(args.study_dir)
    if not (study_dir / "study.yaml").is_file():
        raise SystemExit(f"memory.py: {study_dir} is not a study directory (launch/study.py "
                         "benchmarks/studies/memory-*.yaml)")
    groups = grid_runs(study_dir)
    if yaml.safe_load((study_dir / "study.yaml").read_text())["base"].get("sequence"):
        continual_table(study_dir, groups, args.last_k)
    else:
        multitask_table(study_dir, groups, args.reps)


# cost only: the generated memories (sac.trunk=hyper, sac.head=hyper) of each hypernetwork kind
COST = {**VARIANTS, **{f"gru-hyper-{kind}": [*VARIANTS["gru"], "--set", "sac.trunk=hyper", "--set", "sac.head=hyper",
                                              "--set", f"sac.hypernet={kind}"] for kind in ("mlp", "chunked", "rnn")}}


def one(variant: str) -> dict:
    """In this (fresh) process: one variant's updates/s, sampling time and replay bytes per row."""
    import numpy as np
    import torch

    from agents.models import make_replay
    from agents.replay import MultiTaskReplay
    from agents.sac import make_learner
    from launch.config import build_config

    torch.set_num_threads(1)
    sets = [s for s in HIDDEN + COST[variant] if s != "--set"]
    cfg = build_config("pointmass", overrides=sets)
    learner = make_learner(cfg.sac, 2, 2, 4, torch.device("cpu"))
    replay = make_replay(cfg.replay, cfg.sac, 4, 2, 2, torch.device("cpu"))
    rng, episodes = np.random.default_rng(0), 200  # 200 episodes of 30 steps per task
    n = 4 * episodes * 30
    task, step = np.repeat(np.arange(4), n // 4), np.tile(np.arange(30), n // 30)
    columns = (task, rng.uniform(-1, 1, (n, 2)).astype(np.float32), rng.uniform(-1, 1, (n, 2)).astype(np.float32),
               -rng.random(n, np.float32), rng.uniform(-1, 1, (n, 2)).astype(np.float32), np.zeros(n, np.float32))
    replay.add(*columns, stream=task, first=step == 0)
    flat = MultiTaskReplay(4, cfg.replay.capacity_per_task, 2, 2)
    flat.add(*columns)
    size = cfg.sac.batch_size_per_task
    for _ in range(5):
        learner.update(replay.sample(size, rng))
    start, updates = time.perf_counter(), 30
    for _ in range(updates):
        learner.update(replay.sample(size, rng))
    update_s = (time.perf_counter() - start) / updates
    start = time.perf_counter()
    for _ in range(50):
        replay.sample(size, rng)
    sample_s = (time.perf_counter() - start) / 50
    import resource
    return {"updates_per_s": 1 / update_s, "sample_fraction": sample_s / update_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "bytes_per_row": replay.nbytes() / replay.allocated_rows(0) / 4,
            "flat_bytes_per_row": flat.nbytes() / flat.allocated_rows(0) / 4}


def cost(args) -> None:
    rows = []
    for variant in COST:
        results = []
        for _ in range(args.repeats):
            proc = subprocess.run([sys.executable, __file__, "_one", variant], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            results.append(json.loads(proc.stdout.splitlines()[-1]))
        r = results[0]
        rows.append([variant, f"{median([x['updates_per_s'] for x in results]):.1f}",
                     f"{median([x['sample_fraction'] for x in results]):.1%}",
                     f"{r['bytes_per_row']:.0f} ({r['bytes_per_row'] / r['flat_bytes_per_row']:.2f}x)",
                     f"{median([x['peak_rss_mb'] for x in results]):.0f}"])
    print(f"pointmass preset widths (64x64; memory 128, context GRU 30; gru-hyper-*: memory, trunk and head "
          f"generated by each hypernetwork kind), 4 tasks, 1 thread, median of {args.repeats} "
          "fresh processes")
    print(table(["variant", "updates/s", "sampling / update", "replay bytes per transition (vs flat)",
                 "peak RSS MB"], rows))


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["table", "cost", "_one"])
    p.add_argument("target", nargs="?", help="table: a memory study's directory; _one: a variant")
    p.add_argument("--reps", type=int, default=10_000, help="table: bootstrap resamples")
    p.add_argument("--last-k", type=int, default=1, help="table, continual: evaluations averaged at a window's "
                   "end (CW: 5; a 1,500-step stage evaluated every 300 steps has 5 in all)")
    p.add_argument("--repeats", type=int, default=3, help="cost: fresh processes per variant")
    args = p.parse_args()
    if args.mode == "_one":
        print(json.dumps(one(args.target)))
    elif args.mode == "table":
        args.study_dir = args.target
        study_table(args)
    else:
        cost(args)


if __name__ == "__main__":
    main()
