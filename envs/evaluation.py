"""Meta-World's evaluation protocol, for every suite: per task, one episode on each of the first
`goals` fixed goals; an episode is a success if info["success"] was ever true. All tasks' envs
run in lockstep so policy inference is batched. Any training loop (ours, RLlib's) evaluates
with this function, so their results compare like for like."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (obs[N, d], task[N]) -> action[N, a]
# A policy with memory (agents/recurrent.py, agents/context.py) also has start(envs) (episodes begin in
# these envs) and rewarded(envs, rewards) (what the envs it last acted for earned), and is called as
# policy(obs, task, envs) with the envs' indices.
# A recorder (launch/evaluation/videos.py Recorder) films the first `recorder.episodes` goals of each task:
# its frame(task, goal, env) is called after every `recorder.frame_skip`-th step of those episodes
# (an episode's last state included: its outcome). Filming only reads the envs: the same results.


def evaluate(policy: Policy, envs: list[gym.Env], task_ids: list[int], goals: int,
             seed: int, recorder=None) -> list[dict]:
    """Envs are reseeded from `seed` (env of task i: seed + i), so an evaluation does not depend on
    earlier ones, nor on which other tasks it runs with. Returns, per env (one per task):
    {"task_index", "success", "return", "episodes"}."""
    n = len(envs)
    task_ids = np.asarray(task_ids, np.int64)
    next_goal = np.zeros(n, np.int64)
    returns = [[] for _ in range(n)]
    successes = [[] for _ in range(n)]
    active = np.ones(n, bool)
    obs = np.stack([env.reset(seed=seed + int(task_ids[i]), options={"goal": 0})[0] for i, env in enumerate(envs)])
    ep_return, ep_success, ep_steps = np.zeros(n), np.zeros(n, bool), np.zeros(n, np.int64)
    memory = hasattr(policy, "start")
    if memory:
        policy.start(np.arange(n))
    while active.any():
        idx = np.flatnonzero(active)
        actions = policy(obs[idx], task_ids[idx], idx) if memory else policy(obs[idx], task_ids[idx])
        rewards, starts = np.zeros(len(idx), np.float32), []
        for j, i in enumerate(idx):
            obs[i], r, term, trunc, info = envs[i].step(actions[j])
            rewards[j] = r
            ep_return[i] += r
            ep_success[i] |= bool(info["success"])
            ep_steps[i] += 1
            if recorder is not None and next_goal[i] < recorder.episodes and ep_steps[i] % recorder.frame_skip == 0:
                recorder.frame(int(task_ids[i]), int(next_goal[i]), envs[i])
            if term or trunc:
                returns[i].append(ep_return[i])
                successes[i].append(ep_success[i])
                ep_return[i], ep_success[i], ep_steps[i] = 0.0, False, 0
                next_goal[i] += 1
                if next_goal[i] < goals:
                    obs[i] = envs[i].reset(options={"goal": int(next_goal[i])})[0]
                    starts.append(i)
                else:
                    active[i] = False
        if memory:  # the step's rewards first, then forget where a new episode began
            policy.rewarded(idx, rewards)
            if starts:
                policy.start(np.array(starts))
    return [{"task_index": int(task_ids[i]), "success": float(np.mean(successes[i])),
             "return": float(np.mean(returns[i])), "episodes": goals} for i in range(n)]
