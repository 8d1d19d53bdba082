"""Evaluation videos (eval.video, launch/evaluation/videos.py): what is filmed and when, that filming leaves the
evaluation's numbers alone, Meta-World through MuJoCo's offscreen renderer, and the one-line error
where no GL backend renders."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.pointmass import EPISODE_LENGTH
from launch.evaluation.videos import films, read_frames
from tests.conftest import TRAIN, run_train, train_in_process

POINTMASS = ["--suite", "pointmass", "--sequence", "PM2", "--steps-per-task", 300, "--eval-every", 100,
             "--backend", "single", "--set", "eval.goals=3", "--set", "run.threads=1", "--set",
             "sac.warmup_steps_per_task=50"]
FILMING = ["--set", "eval.video=2", "--set", "eval.video_every=2", "--set", "eval.video_size=48x32",
           "--set", "eval.video_frame_skip=3"]


def eval_rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (run_dir / "evals.jsonl").read_text().splitlines()]


def tensorboard_clips(tb_dir: Path) -> dict[str, list[tuple[int, int, int]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tb_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: [(i.step, i.width, i.height) for i in events.Images(tag)] for tag in events.Tags()["images"]}


def test_which_evaluations_film():
    from launch.config import build_config
    cfg = build_config("pointmass", overrides=["eval.every=100", "eval.video=1", "eval.video_every=3"])
    filmed = [s for s in range(0, 1000, 100) if films(cfg, s, stage_end=False, last=False)]
    assert filmed == [0, 300, 600, 900]  # every third evaluation, from the first
    assert films(cfg, 400, stage_end=True, last=False) and films(cfg, 500, stage_end=False, last=True)
    off = build_config("pointmass", overrides=["eval.every=100", "eval.video_every=3"])
    assert not films(off, 0, stage_end=True, last=True)  # eval.video=0: never


@pytest.mark.multiproc  # ffmpeg
def test_filming_an_evaluation_leaves_its_rows_alone(tmp_path):
    """The same weights evaluated with and without the recorder: equal rows; the films are the
    first eval.video goals of each task, every frame_skip-th step, at the size set."""
    from agents.sac.config import SACConfig
    from launch.evaluation.evaluator import Evaluation
    from launch.evaluation.videos import EvalVideos
    sac = SACConfig(hidden_sizes=[32, 32])
    args = ("pointmass", "reach-e,reach-w", 0, sac, 3, "sample")
    plain, filming = Evaluation(*args), Evaluation(*args, videos=EvalVideos(tmp_path, 2, "64x48", 4))
    torch.manual_seed(1)
    weights = torch.nn.utils.parameters_to_vector(plain.policy.parameters()) + 0.3 * torch.randn(
        sum(p.numel() for p in plain.policy.parameters()))
    assert plain(7, 1, weights) == filming(7, 1, weights, video=True) == plain(7, 1, weights)
    made = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.mp4"))
    assert made == [f"videos/step-7/{t}-goal{g}.mp4" for t in ("reach-e", "reach-w") for g in (0, 1)]
    frames = read_frames(tmp_path / "videos/step-7/reach-w-goal1.mp4")
    assert frames.shape == (EPISODE_LENGTH // 4, 48, 64, 3)  # after steps 4, 8, ..., 28
    # the point moves: the first and last frames differ, and the target's green is drawn
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).sum() > 0
    assert (frames[0][..., 1] > frames[0][..., 0] + 60).any()
    assert filming(8, 1, weights, video=False) == plain(8, 1, weights)
    assert not (tmp_path / "videos/step-8").exists()


@pytest.mark.multiproc
def test_a_film_that_fails_keeps_the_evaluation(tmp_path, capsys):
    """A film that cannot be written (here: its folder is a file) stops filming with one line on
    stderr; the evaluation's rows come back as without filming, and no temp file is left."""
    from agents.sac.config import SACConfig
    from launch.evaluation.evaluator import Evaluation
    from launch.evaluation.videos import EvalVideos
    args = ("pointmass", "reach-e", 0, SACConfig(hidden_sizes=[16]), 2, "mean")
    (tmp_path / "videos").write_text("not a folder")
    plain, filming = Evaluation(*args), Evaluation(*args, videos=EvalVideos(tmp_path, 1, "32x32", 1))
    weights = torch.nn.utils.parameters_to_vector(plain.policy.parameters())
    assert filming(5, 0, weights, video=True) == plain(5, 0, weights)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "filming the evaluation at env step 5 failed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]


@pytest.mark.integration
def test_a_pointmass_run_films_its_evaluations_and_its_numbers_do_not_change(tmp_path):
    filmed, plain = tmp_path / "filmed", tmp_path / "plain"
    assert (proc := train_in_process(*POINTMASS, *FILMING, "--run-dir", filmed)).returncode == 0, proc.stderr
    assert (proc := train_in_process(*POINTMASS, "--run-dir", plain)).returncode == 0, proc.stderr
    assert eval_rows(filmed) == eval_rows(plain)
    # evaluations at 0, 100, ..., 600: every second films, and the stage's end (300) and the run's (600) always
    steps = sorted(int(p.name.removeprefix("step-")) for p in (filmed / "videos").iterdir())
    assert steps == [0, 200, 300, 400, 600]
    for step in steps:
        clips = sorted((filmed / "videos" / f"step-{step}").iterdir())
        assert [c.name for c in clips] == [f"{t}-goal{g}.mp4" for t in ("reach-e", "reach-w") for g in (0, 1)]
        for clip in clips:
            assert read_frames(clip).shape == (EPISODE_LENGTH // 3, 32, 48, 3)
    clips = tensorboard_clips(filmed / "tb" / "videos")
    assert sorted(clips) == [f"video/{t}/goal{g}" for t in ("reach-e", "reach-w") for g in (0, 1)]
    assert clips["video/reach-w/goal1"] == [(s, 48, 32) for s in steps]
    assert not (plain / "videos").exists() and not (plain / "tb" / "videos").exists()


@pytest.mark.multiproc
@pytest.mark.integration
def test_the_evaluator_process_films(tmp_path):
    """With actor processes the evaluator is a process of its own, and the films are its work: its
    TensorBoard file carries its pid, not the trainer's."""
    run = tmp_path / "run"
    proc = run_train("--suite", "pointmass", "--tasks", "reach-e", "--steps", 400, "--eval-every", 200,
                     "--backend", "local", "--actors", 1, "--set", "eval.goals=2", "--set", "eval.video=1",
                     "--set", "eval.video_size=32x32", "--run-dir", run)
    assert proc.returncode == 0, proc.stderr
    steps = sorted(int(p.name.removeprefix("step-")) for p in (run / "videos").iterdir())
    assert len(steps) == 3 and steps[0] == 0 and steps[-1] == 400  # actors' chunks: the middle one past 200
    pid = lambda f: int(re.search(r"\.(\d+)\.\d+(\.videos)?$", f.name).group(1))  # noqa: E731
    (videos,) = (run / "tb" / "videos").glob("*.videos")
    trainer = [f for f in (run / "tb").iterdir() if f.is_file()]
    assert trainer and all(pid(f) != pid(videos) for f in trainer)


def _gl_backend_or_none():
    from envs.rendering import AUTO_BACKENDS, _probe
    return next((b for b in AUTO_BACKENDS if not _probe(b)), None)


@pytest.mark.multiproc
@pytest.mark.integration
def test_metaworld_films_through_mujoco_and_its_numbers_do_not_change(tmp_path):
    if os.environ.get("MUJOCO_GL") is None and _gl_backend_or_none() is None:
        pytest.skip("no offscreen OpenGL for MuJoCo here (install libosmesa6, or a GPU driver with EGL)")
    common = ["--suite", "metaworld", "--tasks", "reach-v3", "--steps", 100, "--eval-every", 0, "--backend",
              "single", "--set", "eval.goals=2", "--set", "sac.warmup_steps_per_task=50", "--set", "run.threads=1"]
    filmed, plain = tmp_path / "filmed", tmp_path / "plain"
    proc = run_train(*common, "--set", "eval.video=1", "--set", "eval.video_size=64x48", "--set",
                     "eval.video_frame_skip=25", "--run-dir", filmed)
    assert proc.returncode == 0, proc.stderr
    assert run_train(*common, "--run-dir", plain).returncode == 0
    assert eval_rows(filmed) == eval_rows(plain)
    frames = read_frames(filmed / "videos" / "step-100" / "reach-v3-goal0.mp4")
    assert frames.shape == (500 // 25, 48, 64, 3)
    assert frames.std() > 10  # a scene, not a blank frame
    assert sorted(p.name for p in (filmed / "videos").iterdir()) == ["step-0", "step-100"]


@pytest.mark.multiproc
def test_without_a_gl_backend_the_run_stops_with_one_line(tmp_path):
    """MUJOCO_GL=glfw with no display: no GL context to render with."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, str(TRAIN), "--suite", "metaworld", "--tasks", "reach-v3", "--steps", "100",
                           "--set", "eval.video=1", "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, env={**env, "MUJOCO_GL": "glfw"})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "MUJOCO_GL=glfw" in proc.stderr and "libosmesa6" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, message", [
    ("eval.video_size=255x256", "even numbers"), ("eval.video_size=big", "WIDTHxHEIGHT"),
    ("eval.video=4", "first N of each task's 3 evaluation episodes"),
    ("eval.video_frame_skip=31", "at most pointmass's episode length, 30 steps")])
def test_bad_video_settings_are_refused(tmp_path, setting, message):
    proc = train_in_process("--suite", "pointmass", "--steps", 100, "--set", "eval.goals=3", "--set", "eval.video=1",
                            "--set", setting, "--run-dir", tmp_path / "run")
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()
