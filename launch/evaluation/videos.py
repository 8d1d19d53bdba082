"""Evaluation videos (eval.video): the first N evaluation episodes of every task, filmed.

The evaluator (launch/evaluation/evaluator.py) films its own evaluation episodes: envs/evaluation.py
hands a `Recorder` the env after every eval.video_frame_skip-th step of the first eval.video goals
(the episode's last state included), and each film is encoded as it is made (no frames held):

    videos/step-<S>/<task>-goal<g>.mp4   H.264 through imageio's ffmpeg plugin (imageio-ffmpeg ships
                                         its binary), at the env's control rate over the frame skip,
                                         written to a temp name and renamed: never a half-written file
    tb/videos/ (TensorBoard)             the same films as animated images (at most GIF_FRAMES frames
                                         each), tag video/<task>/goal<g>

A film that fails (a full disk, a GL error) stops that evaluation's filming with one line on
stderr; the evaluation's rows still come back.

Filming only reads the envs (pointmass draws in numpy, Meta-World renders through MuJoCo's offscreen
renderer: envs/rendering.py), so an evaluation's numbers are the same with and without it.
Which evaluations film (`films`): every eval.video_every-th, and always a continual stage's last and
the run's last, decided from the env step alone, so a resumed run films the same ones.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

GIF_FRAMES = 100  # at most this many frames of a film go to TensorBoard (every k-th): its event files stay small
MAX_GIF_FPS = 50  # a GIF's frame delay is in 1/100 s, and browsers slow anything under 2 to 10


def films(cfg, step: int, stage_end: bool, last: bool) -> bool:
    """Does the evaluation at env step `step` film? The k-th evaluation is the one at step // eval.every."""
    video = cfg.eval
    if not video.video:
        return False
    if stage_end or last:
        return True
    return (step // video.every if video.every else 0) % video.video_every == 0


def video_size(text: str) -> tuple[int, int]:
    """'256x128' -> (256, 128): width, height (launch/config/validate.py checked the form)."""
    width, height = str(text).strip().split("x")
    return int(width), int(height)


class Clip:
    """One film in the making: its mp4 written frame by frame under a temp name (renamed when
    finished: never a half-written file), and every `gif_stride`-th frame kept for TensorBoard."""

    def __init__(self, path: Path, fps: float, gif_stride: int):
        import imageio.v2 as iio
        self.path, self.fps, self.gif_stride, self.count, self.gif = path, fps, gif_stride, 0, []
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.mp4")
        self.writer = iio.get_writer(self.tmp, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                                     macro_block_size=2, ffmpeg_log_level="error")

    def add(self, frame: np.ndarray) -> None:
        self.writer.append_data(frame)
        if self.count % self.gif_stride == 0:
            self.gif.append(frame)
        self.count += 1

    def finish(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class Recorder:
    """envs/evaluation.py's recorder for one evaluation at env step `step`: a Clip per (task, goal)."""

    def __init__(self, videos: EvalVideos, step: int, names: list[str], episode_length: int):
        self.videos, self.step, self.names = videos, step, names
        self.episodes, self.frame_skip = videos.episodes, videos.frame_skip
        self.expected = max(1, episode_length // videos.frame_skip)  # frames per film
        self.clips: dict[tuple[int, int], Clip] = {}
        self.failed = ""  # why filming stopped: the evaluation goes on without it

    def frame(self, task: int, goal: int, env) -> None:
        if self.failed:
            return
        try:
            clip = self.clips.get((task, goal))
            if clip is None:
                fps = env.metadata.get("render_fps", 30) / self.frame_skip
                path = self.videos.run_dir / "videos" / f"step-{self.step}" / f"{self.names[task]}-goal{goal}.mp4"
                clip = self.clips[(task, goal)] = Clip(path, fps, -(-self.expected // GIF_FRAMES))
            clip.add(env.render_frame(self.videos.width, self.videos.height))
        except Exception as e:  # a full disk, a GL error: the evaluation's numbers must still come back
            self._fail(f"{type(e).__name__}: {e}")

    def _fail(self, why: str) -> None:
        self.failed = why.strip().splitlines()[0][:300] if why.strip() else "unknown error"
        for clip in self.clips.values():
            clip.abandon()
        self.clips.clear()
        print(f"evaluator: filming the evaluation at env step {self.step:,} failed ({self.failed}); "
              "its evaluation rows are kept", file=sys.stderr, flush=True)

    def finish(self) -> None:
        """Every clip closed and renamed into place, and added to TensorBoard."""
        try:
            for (task, goal), clip in sorted(self.clips.items()):
                clip.finish()
                self.videos.tensorboard(f"video/{self.names[task]}/goal{goal}", clip, self.step)
        except Exception as e:
            self._fail(f"{type(e).__name__}: {e}")


class EvalVideos:
    """Where and how an evaluator's films are written (one per evaluator)."""

    def __init__(self, run_dir: Path, episodes: int, size: str, frame_skip: int):
        self.run_dir, self.episodes, self.frame_skip = Path(run_dir), episodes, frame_skip
        self.width, self.height = video_size(size)
        self.writer = None  # TensorBoard's, opened at the first clip
        for stale in self.run_dir.glob("videos/step-*/.*.tmp*.mp4"):  # an evaluator killed mid-film
            stale.unlink(missing_ok=True)

    def recorder(self, step: int, names: list[str], episode_length: int) -> Recorder:
        return Recorder(self, step, names, episode_length)

    def tensorboard(self, tag: str, clip: Clip, step: int) -> None:
        """An animated GIF as an image summary (what torch's add_video writes, without moviepy), in
        tb/videos/: a TensorBoard run of its own beside the trainer's scalars."""
        import imageio.v3 as iio
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter
        if self.writer is None:
            self.writer = SummaryWriter(str(self.run_dir / "tb" / "videos"), filename_suffix=".videos")
        fps = min(MAX_GIF_FPS, clip.fps / clip.gif_stride)
        gif = iio.imwrite("<bytes>", np.stack(clip.gif), extension=".gif", duration=1000 / fps, loop=0)
        height, width = clip.gif[0].shape[:2]
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_frames(path: Path) -> np.ndarray:
    """A video's frames [N, H, W, 3] (tests, benchmarks)."""
    import imageio.v2 as iio
    with iio.get_reader(path, format="FFMPEG") as reader:
        return np.stack(list(reader.iter_data()))
