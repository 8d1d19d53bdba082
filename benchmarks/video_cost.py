"""What filming an evaluation costs (eval.video, launch/evaluation/videos.py), beside the same
evaluation unfilmed.

    python benchmarks/video_cost.py [--repeats 3] [--task reach-v3]

One Meta-World task, one evaluation episode (eval.goals=1, 500 steps) filmed as one video, through
MuJoCo's offscreen renderer with the GL backend envs/rendering.py chooses (OSMesa on a machine
without a GPU), at 128x128 and 256x256 pixels, keeping every frame (frame skip 1) or every 4th;
at 256x256 every 4th frame with MuJoCo's shadows on (our renderer turns them off), and pointmass (30
steps, drawn in numpy) at 256x256. The policy: the Meta-World preset's network at
its initial weights, the mean action, one torch thread. Each variant's evaluation is timed end to
end (rendering, H.264 encoding, the TensorBoard GIF) in a fresh process after a warm-up one,
variants interleaved within each repeat; medians over repeats. MUJOCO_GL=osmesa or egl measures that
backend. Columns: seconds per evaluation, the extra seconds per video (filmed minus
unfilmed), and per kept frame.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import table  # noqa: E402

VARIANTS = [("metaworld", None, 1), ("metaworld", 128, 1), ("metaworld", 128, 4), ("metaworld", 256, 1),
            ("metaworld", 256, 4), ("metaworld-shadows", 256, 4), ("pointmass", None, 1),
            ("pointmass", 256, 1)]  # (suite, pixels, frame skip); metaworld-shadows: with MuJoCo's shadows on


def one(suite: str, pixels: int | None, skip: int, repeats: int, task: str) -> list[float]:
    """In this (fresh) process: the seconds of `repeats` evaluations of one variant, after a warm one."""
    import torch

    from launch.config import build_config
    from launch.evaluation.evaluator import Evaluation
    from launch.evaluation.videos import EvalVideos
    torch.set_num_threads(1)
    if suite == "metaworld-shadows":
        from envs.metaworld_suite import MetaWorldTaskEnv
        MetaWorldTaskEnv.SHADOWS, suite = True, "metaworld"
    with tempfile.TemporaryDirectory() as tmp:
        videos = EvalVideos(Path(tmp), 1, f"{pixels}x{pixels}", skip) if pixels else None
        evaluation = Evaluation(suite, task, 0, build_config(suite).sac, 1, "mean", videos=videos)
        weights = torch.nn.utils.parameters_to_vector(evaluation.policy.parameters())
        evaluation(0, 0, weights, video=True)  # warm: goal tables, the GL context, ffmpeg
        seconds = []
        for repeat in range(repeats):
            start = time.perf_counter()
            evaluation(repeat + 1, 0, weights, video=pixels is not None)
            seconds.append(time.perf_counter() - start)
        evaluation.close()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--task", default="reach-v3", help="the Meta-World task filmed")
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # suite pixels skip: one variant, in a fresh process
    args = p.parse_args()
    if args.one:
        suite, pixels, skip = args.one[0], int(args.one[1]) or None, int(args.one[2])
        print(json.dumps(one(suite, pixels, skip, 1, "reach-e" if suite == "pointmass" else args.task)))
        return

    from envs.rendering import gl_backend
    backend = gl_backend()  # the fresh processes inherit it
    seconds = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):  # variants interleaved, each evaluation in a process of its own
        for suite, pixels, skip in VARIANTS:
            proc = subprocess.run([sys.executable, __file__, "--task", args.task, "--one", suite, str(pixels or 0),
                                   str(skip)], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            seconds[(suite, pixels, skip)] += json.loads(proc.stdout.splitlines()[-1])
    rows = []
    for suite, pixels, skip in VARIANTS:
        base = statistics.median(seconds[("pointmass" if suite == "pointmass" else "metaworld", None, 1)])
        median = statistics.median(seconds[(suite, pixels, skip)])
        frames = (30 if suite == "pointmass" else 500) // skip  # a frame after every skip-th step
        extra = median - base
        filmed = [f"{pixels}x{pixels}", skip, frames, f"{median:.2f}", f"{extra:.2f}", f"{extra / frames * 1e3:.1f}"] \
            if pixels else ["no video", "-", 0, f"{median:.2f}", "-", "-"]
        rows.append([suite, *filmed, f"{median / base:.1f}x"])
    print(f"one evaluation episode, filmed as one video (MUJOCO_GL={backend}), one torch thread; "
          f"median of {args.repeats} interleaved repeats, each in a fresh process")
    print(table(["suite", "video", "frame skip", "frames", "s per evaluation", "extra s per video",
                 "extra ms per frame", "x unfilmed"], rows))


if __name__ == "__main__":
    main()
