"""What a study costs over the same runs launched by hand, and a study on a 2-node Ray cluster.

    python benchmarks/study_overhead.py local [--repeats 3]   # by hand vs launch/study.py, side by side
    python benchmarks/study_overhead.py cluster               # 2 Ray nodes on loopback: trials on both

Both use the PM2 method grid of benchmarks/studies/pm2-minimal.yaml: fine-tuning and EWC x 2
seeds on pointmass PM2, 1,500 env steps per task, with the 4 single-task reference runs (8 runs,
each `--backend single`, 1 thread).

local: in each repeat, in this order,
  - by hand: each trial's launch/train.py command (study.yaml's, as launch/studies/trial.py runs
    it), one after another;
  - study, 1 at a time: launch/study.py with max_concurrent 1: the same sequence, plus Ray's start,
    Tune's scheduling and the trials' progress polling (the overhead itself);
  - study, 2 at a time: launch/study.py as it runs by default here (1 CPU per trial: 2 at once).
Wall time of each, the median over repeats, and each repeat's ratio to by hand (median). Every
study run's evaluation rows must equal the by-hand run's (the same code, the same numbers): the
benchmark stops if one differs.

cluster: `ray start --head` and a second `ray start` joining it, on this machine, 1 CPU each (two
raylets: two Ray nodes); the study with --ray-address; the nodes its trials ran on (trials.jsonl)
and its wall time. Ray's files go to a temp dir; `ray stop` at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import median, table  # noqa: E402

STUDY_FILE = ROOT / "benchmarks" / "studies" / "pm2-minimal.yaml"
TRAIN, STUDY = ROOT / "launch" / "train.py", ROOT / "launch" / "study.py"


def by_hand(out: Path) -> float:
    """Every trial's train.py command, one after another; returns the wall time."""
    from launch.studies import spec
    study = spec.load(STUDY_FILE)
    start = time.perf_counter()
    for trial in study.trials:
        run_dir = out / trial.run_dir
        argv = [*trial.argv, "--run-dir", str(run_dir)]
        if trial.reference:
            config = out / "references" / f"{trial.name}.yaml"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(yaml.safe_dump(trial.config, sort_keys=False))
            argv += ["--config", str(config)]
        subprocess.run([sys.executable, str(TRAIN), *argv], check=True, capture_output=True)
    return time.perf_counter() - start


def through_study(out: Path, max_concurrent: int | None, ray_address: str = "") -> float:
    tree = yaml.safe_load(STUDY_FILE.read_text())
    if max_concurrent:
        tree["max_concurrent"] = max_concurrent
    study_file = out.parent / f"{out.name}.yaml"
    study_file.write_text(yaml.safe_dump(tree, sort_keys=False))
    start = time.perf_counter()
    extra = ["--ray-address", ray_address] if ray_address else []
    subprocess.run([sys.executable, str(STUDY), str(study_file), "--out", str(out), *extra], check=True,
                   capture_output=True)
    return time.perf_counter() - start


def evaluations(study_dir: Path) -> dict:
    """{trial: its evaluation rows without their wall-clock times}."""
    out = {}
    for config in sorted(study_dir.rglob("config.yaml")):
        rows = [json.loads(line) for line in (config.parent / "evals.jsonl").read_text().splitlines()]
        out[str(config.parent.relative_to(study_dir))] = [{k: v for k, v in r.items() if k != "time"} for r in rows]
    return out


def local(repeats: int, scratch: Path) -> None:
    variants = {"by hand, one after another": lambda d: by_hand(d),
                "study, 1 at a time": lambda d: through_study(d, 1),
                "study, 2 at a time (default)": lambda d: through_study(d, None)}
    times = {name: [] for name in variants}
    for r in range(repeats):
        dirs = {}
        for i, (name, run) in enumerate(variants.items()):
            dirs[name] = scratch / f"r{r}-v{i}"
            times[name].append(run(dirs[name]))
            print(f"repeat {r}: {name}: {times[name][-1]:.1f} s", flush=True)
        reference = evaluations(dirs["by hand, one after another"])
        for name, d in dirs.items():
            if evaluations(d) != reference:
                raise SystemExit(f"{name}: evaluation rows differ from the runs by hand")
            shutil.rmtree(d)
    base = times["by hand, one after another"]
    rows = [[name, f"{median(t):.1f}", f"{median([a / b for a, b in zip(t, base)]):.2f}x",
             " ".join(f"{x:.0f}" for x in t)] for name, t in times.items()]
    print(f"PM2 method grid (benchmarks/studies/pm2-minimal.yaml: 8 runs), {os.cpu_count()} cores, "
          f"median of {repeats} repeats; every study's evaluation rows equal the runs by hand")
    print(table(["how", "wall s (median)", "vs by hand", "each repeat (s)"], rows))


def cluster(scratch: Path) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    ray = [str(Path(sys.executable).parent / "ray")]
    port = "6391"
    temp = scratch / "ray"
    try:
        subprocess.run([*ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                        "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats"],
                       check=True, capture_output=True, env=env)
        subprocess.run([*ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                        "--node-ip-address=127.0.0.1", "--disable-usage-stats"], check=True, capture_output=True,
                       env=env)
        out = scratch / "cluster"
        wall = through_study(out, None, f"127.0.0.1:{port}")
    finally:
        subprocess.run([*ray, "stop"], capture_output=True, env=env)
    placed = {}
    for line in (out / "trials.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["status"] == "placed":
            placed[row["trial"]] = row["node_id"][:8]
    nodes = sorted(set(placed.values()))
    print(f"2 Ray nodes on loopback (1 CPU each): {len(placed)} trials in {wall:.1f} s; "
          f"trials per node: {', '.join(f'{n}: {list(placed.values()).count(n)}' for n in nodes)}")
    for trial, node in placed.items():
        print(f"  {trial}: node {node}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["local", "cluster"])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pt-so-", dir="/tmp") as scratch:  # short: Ray's socket paths
        if args.mode == "local":
            local(args.repeats, Path(scratch))
        else:
            cluster(Path(scratch))


if __name__ == "__main__":
    main()
