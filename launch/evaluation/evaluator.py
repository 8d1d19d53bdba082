"""Evaluators: run the evaluation protocol on a snapshot of the policy.

`Evaluation` is the protocol on a flat weight vector (the RLlib engine's SAC evaluations too) and
`labelled` the evals.jsonl rows it makes of envs/evaluation.py's results (PPO's as well).
`InlineEvaluator` evaluates on the spot (single-process backend). `EvaluatorWorker` runs in its
own process beside the learner, so evaluation does not stall training; results come back
tagged with the learner step and weight version they were asked for. Both have one interface:
submit(step, version, flat_weights, video=False), results() (what is done, non-blocking), wait() (all),
unfinished() (the requests not yet answered: a preempted run checkpoints them and submits them
again when it resumes, instead of waiting out an evaluation in its grace period). With video=True
an evaluation also films its first eval.video episodes per task (launch/evaluation/videos.py), in the
evaluator: in its own process, or inline with the single-process backend.
"""

from __future__ import annotations

import os
from collections import deque

import numpy as np
import torch
import torch.multiprocessing as mp

from agents import seeding
from agents.context import env_memories
from agents.models import build_policy, network_task
from agents.sac.config import SACConfig
from envs.evaluation import evaluate
from launch.actors.processes import signals_ignored_by_children


def labelled(results: list[dict], step: int, version: int, names: list[str], env_names: list[str],
             policy: str) -> list[dict]:
    """evals.jsonl rows: envs/evaluation.py's results, each with the learner step and weight version
    it was asked for, its task's name and env, and the policy mode (eval.policy)."""
    return [{"step": step, "task": names[r["task_index"]], "env": env_names[r["task_index"]], **r,
             "policy": policy, "policy_version": version} for r in results]


class RememberingPolicy:
    """A policy with memory as envs/evaluation.py calls one: its mean action (tanh(mu)), or a sample
    drawn with `noise` (a generator), each env's memory (agents/recurrent.py's state or
    agents/context.py's window) reset at its episode's start."""

    def __init__(self, memories, num_tasks: int, noise: torch.Generator | None = None):
        self.memories, self.num_tasks = memories, num_tasks  # agents/context.py: env_memories; the policy's tasks
        self.noise = noise

    def start(self, envs) -> None:
        self.memories.start(torch.as_tensor(envs))

    def __call__(self, obs: np.ndarray, task: np.ndarray, envs: np.ndarray) -> np.ndarray:
        return self.memories.act(torch.from_numpy(obs), torch.from_numpy(network_task(task, self.num_tasks)),
                                 torch.from_numpy(envs), deterministic=self.noise is None,
                                 generator=self.noise).numpy()

    def rewarded(self, envs: np.ndarray, rewards: np.ndarray) -> None:
        self.memories.rewarded(torch.from_numpy(envs), torch.from_numpy(rewards))


class Evaluation:
    """Eval envs for every task plus a policy copy; built once, reused for every evaluation.
    policy="sample" draws each task's action noise from a generator of its own, reseeded at every
    evaluation, so a task's result does not depend on which other tasks it is evaluated with (a policy
    with memory then takes one task at a time: its memories draw a batch's noise from one generator).
    network_tasks: the policy's tasks, 0: the suite's (1 with hidden boundaries: every task is
    evaluated as the network's task 0, agents/models.py network_task)."""

    def __init__(self, suite_name: str, tasks: str, seed: int, sac: SACConfig, goals: int, policy: str,
                 goal_observable: bool = True, target_visible: bool = False, network_tasks: int = 0,
                 videos=None):
        """videos: a launch/evaluation/videos.py EvalVideos (where and how to film), or None: no evaluation films."""
        from envs import make_suite

        suite = make_suite(suite_name, tasks, seed, goal_observable, target_visible)
        self.names, self.env_names = suite.task_names, [t.env_name for t in suite.tasks]
        self.episode_length = suite.episode_length
        self.envs = [suite.make_env(t, seeding.seed_for(seed, "eval-envs", t.index)) for t in suite.tasks]
        self.num_tasks = network_tasks or len(suite.tasks)
        self.policy = build_policy(sac, suite.obs_dim, suite.action_dim, self.num_tasks).requires_grad_(False)
        self.goals, self.mode, self.seed = goals, policy, seed
        self.obs_dim, self.action_dim = suite.obs_dim, suite.action_dim
        self.noise: dict[int, torch.Generator] = {}
        self.videos = videos

    def act(self, obs: np.ndarray, task: np.ndarray) -> np.ndarray:
        obs_t, task_t = torch.from_numpy(obs), torch.from_numpy(network_task(task, self.num_tasks))
        if self.mode == "mean":
            return self.policy.act(obs_t, task_t, deterministic=True).numpy()
        with torch.no_grad():
            mean, log_std = self.policy(obs_t, task_t)
        noise = torch.stack([torch.randn(mean.shape[1:], generator=self.noise[int(t)]) for t in task])
        return torch.tanh(mean + log_std.exp() * noise).numpy()

    def _policies(self, group: list[int]):
        """(tasks, policy) pairs evaluating `group`: one for a memoryless policy or the mean action;
        a sampling policy with memory takes one task at a time, its noise that task's generator."""
        if env_memories(self.policy, 1, self.obs_dim, self.action_dim) is None:
            return [(group, self.act)]
        if self.mode == "mean":
            return [(group, RememberingPolicy(env_memories(self.policy, len(group), self.obs_dim, self.action_dim),
                                              self.num_tasks))]
        return [([t], RememberingPolicy(env_memories(self.policy, 1, self.obs_dim, self.action_dim), self.num_tasks,
                                        self.noise[t])) for t in group]

    def __call__(self, step: int, version: int, flat: torch.Tensor, video: bool = False) -> list[dict]:
        """flat: the policy weights [P], or per task [T, P] (task t evaluated with row t: PackNet).
        video: film this evaluation (videos/step-<step>/, TensorBoard); its rows are the same either way."""
        tasks = list(range(len(self.envs)))
        groups = [(flat, tasks)] if flat.dim() == 1 else [(flat[t], [t]) for t in tasks]
        self.noise = {t: torch.Generator().manual_seed(seeding.seed_for(self.seed, "eval", 1, t)) for t in tasks}
        results = []
        recorder = self.videos.recorder(step, self.names, self.episode_length) if video and self.videos else None
        for weights, group in groups:
            torch.nn.utils.vector_to_parameters(weights, self.policy.parameters())
            for subset, act in self._policies(group):
                results += evaluate(act, [self.envs[t] for t in subset], subset, self.goals,
                                    seed=seeding.seed_for(self.seed, "eval"), recorder=recorder)
        if recorder is not None:
            recorder.finish()
        return labelled(results, step, version, self.names, self.env_names, self.mode)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        if self.videos is not None:
            self.videos.close()


class InlineEvaluator:
    def __init__(self, *args):
        """args: Evaluation's."""
        self.evaluation = Evaluation(*args)
        self.done = []

    def submit(self, step: int, version: int, flat: torch.Tensor, video: bool = False) -> None:
        self.done.append(self.evaluation(step, version, flat, video))

    def results(self) -> list[list[dict]]:
        done, self.done = self.done, []
        return done

    wait = results

    def unfinished(self) -> list[tuple]:
        return []

    def close(self) -> None:
        self.evaluation.close()


def _evaluator_main(args: tuple, requests, replies) -> None:
    torch.set_num_threads(1)
    os.nice(10)  # its results may come late; a CPU learner's threads should not wait for its core
    evaluation = Evaluation(*args)
    try:
        while (request := requests.recv()) is not None:
            replies.send(evaluation(*request))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        evaluation.close()


class EvaluatorWorker:
    def __init__(self, *args):
        """args: Evaluation's, for the worker process to build it."""
        ctx = mp.get_context("spawn")
        self.requests, child_requests = ctx.Pipe()
        self.replies, child_replies = ctx.Pipe()
        self.process = ctx.Process(target=_evaluator_main, daemon=True, name="polytask-evaluator",
                                   args=(args, child_requests, child_replies))
        with signals_ignored_by_children():
            self.process.start()
        child_requests.close()
        child_replies.close()
        self.pending: deque = deque()

    def submit(self, step: int, version: int, flat: torch.Tensor, video: bool = False) -> None:
        request = (step, version, flat.clone(), video)
        self.requests.send(request)
        self.pending.append(request)

    def _collect(self, block: bool) -> list[list[dict]]:
        done = []
        while self.pending and (block or self.replies.poll()):
            try:
                done.append(self.replies.recv())
            except EOFError:
                raise RuntimeError(f"the evaluator process died (exit code {self.process.exitcode})") from None
            self.pending.popleft()
        return done

    def results(self) -> list[list[dict]]:
        return self._collect(block=False)

    def wait(self) -> list[list[dict]]:
        return self._collect(block=True)

    def unfinished(self) -> list[tuple]:
        """(step, version, weights, video) of every request not answered yet (answer or not, the
        worker is closed next)."""
        return list(self.pending)

    def close(self) -> None:
        try:
            self.requests.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def make_evaluator(cfg, network_tasks: int = 0, run_dir=None):
    """Inline for `single` (no process of its own), else an evaluator process beside the learner.
    network_tasks: the policy's tasks (0: the suite's). run_dir: where eval.video's films go."""
    from launch.evaluation.videos import EvalVideos
    videos = EvalVideos(run_dir, cfg.eval.video, cfg.eval.video_size, cfg.eval.video_frame_skip) \
        if cfg.eval.video and run_dir is not None else None
    args = (cfg.env.suite, cfg.env.tasks, cfg.run.seed, cfg.sac, cfg.eval.goals, cfg.eval.policy,
            cfg.env.goal_observable, cfg.env.target_visible, network_tasks, videos)
    return InlineEvaluator(*args) if cfg.runtime.backend == "single" else EvaluatorWorker(*args)
