"""Frames of an env for evaluation videos, and the OpenGL backend MuJoCo renders them with.

Every suite's env has `render_frame(width, height) -> uint8 [height, width, 3]` and
`metadata["render_fps"]` (its control rate). Pointmass draws its frames in numpy (no GL at all);
Meta-World renders through MuJoCo's offscreen renderer (`mujoco.Renderer`, envs/metaworld_suite.py).

MuJoCo picks its GL backend from MUJOCO_GL once, when it is first imported, so `gl_backend()`
chooses one before that: the user's MUJOCO_GL if set, else EGL (a GPU driver) then OSMesa
(software: Debian's libosmesa6), the first that renders a frame in a fresh process. Where none
works it raises RenderingUnavailable with what to install, never a traceback or an empty video.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys

import numpy as np

AUTO_BACKENDS = ("egl", "osmesa")
INSTALL = "install OSMesa (Debian/Ubuntu: apt-get install libosmesa6) or a GPU driver with EGL"
_PROBE = """
import mujoco
model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom type="sphere" size="1"/></worldbody></mujoco>')
renderer = mujoco.Renderer(model, 16, 16)
renderer.update_scene(mujoco.MjData(model))
assert renderer.render().shape == (16, 16, 3)
"""


class RenderingUnavailable(ValueError):
    """No offscreen OpenGL for MuJoCo on this machine (the message says what to install)."""


@functools.cache
def _probe(backend: str) -> str:
    """'' if MuJoCo renders with MUJOCO_GL=backend in a fresh process, else the error's last line."""
    env = {**os.environ, "MUJOCO_GL": backend}
    if backend == "osmesa":
        env.setdefault("PYOPENGL_PLATFORM", "osmesa")
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "timed out"
    if proc.returncode == 0:
        return ""
    raised = [line for line in proc.stderr.splitlines() if re.match(r"[\w.]+(Error|Exception): ", line)]
    return raised[0][:200] if raised else f"exit code {proc.returncode}"  # the first: __del__'s come later


GL_SUITES = ("metaworld",)  # suites whose frames MuJoCo renders


def prepare(suite: str) -> None:
    """Before a run that films `suite` builds it: its GL backend chosen (RenderingUnavailable if none)."""
    if suite in GL_SUITES:
        gl_backend()


def gl_backend() -> str:
    """The MUJOCO_GL this process (and the processes it starts) should render with; sets it."""
    given = os.environ.get("MUJOCO_GL", "")
    for backend in [given] if given else AUTO_BACKENDS:
        if not _probe(backend):
            _check_imported(backend)
            os.environ["MUJOCO_GL"] = backend
            if backend == "osmesa":
                os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
            return backend
    if given:
        raise RenderingUnavailable(f"eval.video: MuJoCo cannot render offscreen with MUJOCO_GL={given} here "
                                   f"({_probe(given)}); unset MUJOCO_GL to choose one automatically, or {INSTALL}")
    raise RenderingUnavailable(f"eval.video on Meta-World needs an offscreen OpenGL for MuJoCo and none works here "
                               f"(tried MUJOCO_GL={', '.join(AUTO_BACKENDS)}): {INSTALL}")


def _check_imported(backend: str) -> None:
    """MuJoCo imported before the choice keeps the backend it chose then: refused unless it is this one."""
    mujoco = sys.modules.get("mujoco")
    if mujoco is None:
        return
    used = getattr(getattr(mujoco, "GLContext", None), "__module__", "").rsplit(".", 1)[-1]
    if used != backend:
        raise RenderingUnavailable(f"eval.video: MuJoCo was imported with GL backend {used or 'none'} before "
                                   f"{backend} was chosen; start the process with MUJOCO_GL={backend}")


def pointmass_frame(position_trail: np.ndarray, target: np.ndarray, success_radius: float, width: int,
                    height: int) -> np.ndarray:
    """The square [-1, 1]^2 as an image (+y up): the success region around the target (light green),
    the target (green), the point's trail since its episode began (blue) and the point (red)."""
    frame = np.full((height, width, 3), 255, np.uint8)
    frame[[0, -1], :] = frame[:, [0, -1]] = 180  # the arena's edge
    scale = np.array([(width - 1) / 2, (height - 1) / 2])

    def disc(centre, radius_px: float, colour) -> None:  # only the pixels of its bounding box
        cx, cy = (np.asarray(centre, float) * [1, -1] + 1) * scale
        x0, x1 = max(0, int(cx - radius_px)), min(width, int(cx + radius_px) + 2)
        y0, y1 = max(0, int(cy - radius_px)), min(height, int(cy + radius_px) + 2)
        ys, xs = np.ogrid[y0:y1, x0:x1]
        frame[y0:y1, x0:x1][(xs - cx) ** 2 + (ys - cy) ** 2 <= radius_px ** 2] = colour

    unit = min(scale)  # pixels per world unit
    disc(target, success_radius * unit, (200, 240, 200))
    disc(target, max(1.5, 0.02 * unit), (30, 150, 30))
    trail = np.asarray(position_trail, float)
    for a, b in zip(trail[:-1], trail[1:]):  # each segment as dots about a pixel apart
        for point in np.linspace(a, b, max(2, int(np.linalg.norm(b - a) * unit) + 1)):
            disc(point, max(1.0, 0.006 * unit), (60, 90, 220))
    disc(trail[-1], max(2.0, 0.03 * unit), (220, 40, 40))
    return frame
