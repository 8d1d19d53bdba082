"""metaworld: Meta-World v3 MT1 / MT10 / MT25 / MT50 (or any list of v3 tasks).

We build each task's env ourselves instead of through `gymnasium.make_vec("Meta-World/MT10")`
so that every env is seeded (Meta-World ignores `reset(seed=)`), goals can be chosen per
episode (the evaluation protocol needs goal i, not a random one), and goal tables are cached.

Goal observability: the observation's last 3 numbers are the goal's position; with
`env.goal_observable=false` they are zeros, exactly as Meta-World's ML benchmarks hide it
(`partially_observable=True` in the task data: `SawyerXYZEnv._get_obs`); the previous frame stays.

Goals: a task's 50 fixed goals are exactly those of `metaworld.MT1(task, seed=seed)`. Making
them costs ~0.7 s per task (~36 s for MT50), so they are cached on disk per (Meta-World
version, task, seed) under $POLYTASK_CACHE_DIR (default ~/.cache/polytask).
"""

from __future__ import annotations

import os
import pickle
from importlib.metadata import version
from pathlib import Path

import gymnasium as gym
import numpy as np

from envs.base import Suite, TaskSpec, base_task_name, select_tasks

EPISODE_LENGTH = 500
NUM_GOALS = 50


def _env_dict():
    import metaworld.env_dict  # imported lazily: pointmass-only runs don't need MuJoCo

    return metaworld.env_dict


def presets() -> dict[str, list[str]]:
    env_dict = _env_dict()
    return {"MT10": list(env_dict.MT10_V3), "MT25": list(env_dict.MT25_V3),
            "MT50": list(env_dict.MT50_V3)}


# Continual World's sequence (Wołczyk et al. 2021) in Meta-World v3 names; CW20 is CW10 twice.
CW10 = ["hammer-v3", "push-wall-v3", "faucet-close-v3", "push-back-v3", "stick-pull-v3",
        "handle-press-side-v3", "push-v3", "shelf-place-v3", "window-close-v3", "peg-unplug-side-v3"]
SEQUENCES = {"CW10": CW10, "CW20": CW10 + CW10}


def cache_dir() -> Path:
    return Path(os.environ.get("POLYTASK_CACHE_DIR", Path.home() / ".cache" / "polytask"))


def goal_table(task_name: str, seed: int) -> np.ndarray:
    """The task's fixed goals (`rand_vec`s), [NUM_GOALS, d]: from the cache or generated once."""
    path = cache_dir() / f"metaworld-{version('metaworld')}" / f"{task_name}-seed{seed}.npy"
    if path.exists():
        try:
            return np.load(path)
        except (OSError, ValueError):
            pass  # a corrupt cache entry is regenerated below
    import metaworld

    tasks = metaworld.MT1(task_name, seed=seed).train_tasks
    goals = np.stack([pickle.loads(t.data)["rand_vec"] for t in tasks])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, goals)
    os.replace(tmp, path)  # atomic: concurrent builders never see a half-written file
    return goals


class MetaWorldTaskEnv(gym.Env):
    """One Meta-World v3 task with its fixed goal table; seeded; goal chosen at reset."""

    metadata = {"render_modes": []}
    CAMERA = "corner2"  # the whole table and the arm; MuJoCo renders Meta-World's corner cameras upside down
    SHADOWS = False     # off: 2.7x faster in software GL (BENCHMARKS.md, "Evaluation videos")

    def __init__(self, task_name: str, goals: np.ndarray, seed: int | None = None, goal_observable: bool = True):
        import metaworld

        self._task_cls = _env_dict().ALL_V3_ENVIRONMENTS[task_name]
        self._env = self._task_cls()
        self._task_name = task_name
        self._task_kwargs = {k: v for k, v in
                             _env_dict().ML1_ARGS_KWARGS[task_name]["kwargs"].items() if k != "task_id"}
        self._make_task = metaworld.Task
        self.goals, self.goal_observable = goals, goal_observable
        self._seed(seed)
        self._set_goal(0)
        # Meta-World's own observation_space has [0, 0] bounds on the goal dims; this one is right.
        space = self._env.sawyer_observation_space
        self.observation_space = gym.spaces.Box(space.low.astype(np.float32),
                                                space.high.astype(np.float32), dtype=np.float32)
        self.action_space = self._env.action_space
        self.metadata = {**self.metadata, "render_fps": round(1 / self._env.dt)}  # its control rate: 80 Hz
        self._renderers: dict = {}  # (width, height) -> mujoco.Renderer, made at the first frame

    def _seed(self, seed: int | None) -> None:
        if seed is not None:
            self._env.seed(seed)
        self.np_random = np.random.default_rng(seed)

    def _set_goal(self, goal: int) -> None:
        data = dict(self._task_kwargs, rand_vec=self.goals[goal], env_cls=self._task_cls,
                    partially_observable=not self.goal_observable)
        self._env.set_task(self._make_task(env_name=self._task_name, data=pickle.dumps(data)))

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._seed(seed)
        goal = (options or {}).get("goal")
        if goal is None:
            goal = int(self.np_random.integers(len(self.goals)))
        self._set_goal(goal)
        obs, _ = self._env.reset()
        return obs.astype(np.float32), {"goal": goal}

    def step(self, action):
        obs, reward, terminated, truncated, info = self._env.step(action)
        return obs.astype(np.float32), float(reward), bool(terminated), bool(truncated), info

    def render_frame(self, width: int, height: int) -> np.ndarray:
        """The scene now from CAMERA (without shadows), through MuJoCo's offscreen renderer (MUJOCO_GL:
        envs/rendering.py gl_backend chooses it before MuJoCo is imported). Reads the simulation,
        changes nothing."""
        import mujoco
        renderer = self._renderers.get((width, height))
        if renderer is None:
            visual = self._env.model.vis.global_  # the offscreen buffer must hold the frame
            visual.offwidth, visual.offheight = max(visual.offwidth, width), max(visual.offheight, height)
            renderer = self._renderers[(width, height)] = mujoco.Renderer(self._env.model, height, width)
        renderer.update_scene(self._env.data, camera=self.CAMERA)
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.SHADOWS
        return renderer.render()[::-1].copy()

    def close(self):
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self._env.close()


def build(tasks: str, seed: int, goal_observable: bool = True, target_visible: bool = False) -> Suite:
    all_names = list(_env_dict().ALL_V3_ENVIRONMENTS)
    names = select_tasks(tasks, presets(), all_names, default="MT10")
    goals = {base_task_name(name): goal_table(base_task_name(name), seed) for name in names}
    return Suite(
        name="metaworld",
        tasks=tuple(TaskSpec(i, n) for i, n in enumerate(names)),
        obs_dim=39,
        action_dim=4,
        episode_length=EPISODE_LENGTH,
        num_goals=NUM_GOALS,
        make_env=lambda task, env_seed: MetaWorldTaskEnv(task.env_name, goals[task.env_name], env_seed,
                                                         goal_observable),
    )
