"""bf16 mixed precision (`sac.precision`, agents/sac/precision.py) against fp32, side by side.

    python benchmarks/learner_path.py precision     # learner updates/s, fp32 vs bf16, our presets' learners
    python launch/study.py benchmarks/studies/precision-parity.yaml   # final success, fp32 vs bf16: a study
    python benchmarks/precision.py actors           # an actor's inference calls/s, fp32 vs bf16

updates/s: learner updates/s in fp32 and in bf16 for the learners our presets build.
Each (variant, precision) is timed in a fresh process (its own memory, its own oneDNN kernels),
interleaved over --repeats rounds, --threads intra-op threads (default: every usable core); the
rows give the medians and the median of each round's bf16/fp32 ratio. The header names the CPU
model and its bf16 units (AMX, AVX512-BF16, none): on a CPU without them the bf16 rows run
emulated kernels, and the last line says that no bf16 hardware was measured instead of giving a
ratio. Replay holds random transitions; the batch is task-balanced as in training.

Learning parity (every setting trained in both precisions on the same seeds and budgets) is a
grid of runs, so it is a study: benchmarks/studies/precision-parity.yaml.
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

# name: (suite preset, a continual sequence or "", --set overrides, tasks in the network, tasks per batch,
#        obs dim, action dim, timed updates)
VARIANTS = {
    "MT10 default (3x400, 10 x 128)": ("metaworld", "", [], 10, 10, 39, 4, 24),
    "Continual World (4x256, 1 x 128)": ("metaworld", "CW10", [], 10, 1, 39, 4, 150),
    "pointmass (64x64, 4 x 64)": ("pointmass", "", [], 4, 4, 2, 2, 300),
    "wide critic (BroNet 3x400, critic 3x800)": ("metaworld", "", ["sac.trunk=bronet", "sac.task_input=false",
                                                 "sac.task_embedding_dim=32", "sac.critic_hidden_sizes=[800,800,800]"],
                                                 10, 10, 39, 4, 8),
    "MOORE (4 experts, 3x400)": ("metaworld", "", ["sac.trunk=moore", "sac.task_input=false"], 10, 10, 39, 4, 8),
    "MT50 batch (3x400, 50 x 128)": ("metaworld", "", [], 50, 50, 39, 4, 5),
}
HEADLINE = "MT10 default (3x400, 10 x 128)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def one(spec: list) -> dict:
    """In this (fresh) process: updates/s of one variant's learner in one precision."""
    import numpy as np
    import torch

    from agents.replay import MultiTaskReplay
    from agents.sac import SACLearner
    from launch.config import build_config

    name, precision, warmup = spec
    suite, sequence, sets, tasks, batch_tasks, obs, act, updates = VARIANTS[name]
    flags = {"continual.sequence": sequence} if sequence else {}
    cfg = build_config(suite, flags=flags, overrides=[*sets, f"sac.precision={precision}"])
    learner = SACLearner(cfg.sac, obs, act, tasks, torch.device("cpu"))
    rows, rng = 1000, np.random.default_rng(0)
    replay = MultiTaskReplay(tasks, rows, obs, act)
    n = rows * tasks
    replay.add(np.repeat(np.arange(tasks), rows), rng.standard_normal((n, obs), np.float32),
               rng.uniform(-1, 1, (n, act)).astype(np.float32), rng.random(n, np.float32),
               rng.standard_normal((n, obs), np.float32), np.zeros(n, np.float32))
    sampled, size = list(range(batch_tasks)), cfg.sac.batch_size_per_task
    for _ in range(warmup):
        learner.update(replay.sample(size, rng, sampled))
    start = time.perf_counter()
    for _ in range(updates):
        learner.update(replay.sample(size, rng, sampled))
    return {"updates_per_s": updates / (time.perf_counter() - start), "precision": learner.precision}


def precision(args) -> None:
    import torch

    from agents.sac.precision import bf16_units

    units = bf16_units(torch.device("cpu"))
    print(f"CPU: {cpu_model()}; bf16 matrix units: {units or 'none'}; {args.threads} thread(s); "
          f"median of {args.repeats} fresh processes per row, interleaved", flush=True)
    rows, ratios = [], {}
    for name in VARIANTS:
        rates = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for p in ("fp32", "bf16"):
                proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "learner_path.py"), "_precision",
                                       json.dumps([name, p, args.warmup])], capture_output=True, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
                if proc.returncode:
                    raise SystemExit(proc.stderr[-3000:])
                rates[p].append(json.loads(proc.stdout.splitlines()[-1])["updates_per_s"])
        ratio = median([b / f for f, b in zip(rates["fp32"], rates["bf16"], strict=True)])
        ratios[name] = ratio
        rows.append([name, f"{median(rates['fp32']):.2f}", f"{median(rates['bf16']):.2f}", f"{ratio:.2f}x"])
        print(table(["learner", "fp32 updates/s", "bf16 updates/s", "bf16 / fp32"], rows[-1:]).splitlines()[-1],
              flush=True)
    print(table(["learner", "fp32 updates/s", "bf16 updates/s", "bf16 / fp32"], rows))
    if units is None:
        print("bf16 vs fp32 learner updates/s, MT10 default networks: not measured (this CPU has no bf16 matrix "
              "units: its bf16 rows ran emulated kernels)")
    else:
        print(f"bf16 vs fp32 learner updates/s, MT10 default networks: {ratios[HEADLINE]:.2f}x")


# -- learning parity: the same runs in fp32 and in bf16, over seeds ---------------------------------------------------

# name: train.py arguments (every run also gets --seed, --run-dir and sac.precision); budgets equal across precisions
def actors(args) -> None:
    """An actor's inference, fp32 vs bf16 autocast: the MT10 default policy (3x400, multi-head) acting
    on 10, 20 and 40 envs' observations at once (what one actor round asks), 1 thread, as
    launch/actors/actor.py calls it (a sampled action under no_grad, the policy's parameters frozen)."""
    import torch

    from agents.networks import build_policy
    from agents.sac.config import SACConfig
    from agents.sac.precision import bf16_units

    torch.set_num_threads(1)
    policy = build_policy(SACConfig(), 39, 4, 10).requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for envs in (10, 20, 40):
        obs, task = torch.randn(envs, 39), torch.arange(envs) % 10
        rates = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for p in ("fp32", "bf16"):
                context = torch.autocast("cpu", torch.bfloat16, enabled=p == "bf16")
                with torch.no_grad(), context:
                    for _ in range(50):
                        policy.act(obs, task, deterministic=False, generator=generator)
                    start = time.perf_counter()
                    for _ in range(args.calls):
                        policy.act(obs, task, deterministic=False, generator=generator)
                rates[p].append(args.calls / (time.perf_counter() - start))
        ratio = median([b / f for f, b in zip(rates["fp32"], rates["bf16"], strict=True)])
        rows.append([f"{envs} envs", f"{median(rates['fp32']):,.0f}", f"{median(rates['bf16']):,.0f}", f"{ratio:.2f}x"])
    print(f"one actor's inference, MT10 default policy, 1 thread, {args.calls} calls x {args.repeats} rounds "
          f"(medians); CPU: {cpu_model()}; bf16 matrix units: {bf16_units(torch.device('cpu')) or 'none'}")
    print(table(["batch", "fp32 calls/s", "bf16 calls/s", "bf16 / fp32"], rows))


def main() -> None:
    import argparse
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["actors"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args()
    actors(args)


if __name__ == "__main__":
    main()
