"""The single-process runtime: one loop steps every task's envs, stores experience in replay,
updates the learner, and evaluates, logs and checkpoints on step boundaries. It is the simplest
backend and the reference for the distributed ones.

Resume contract: a checkpoint at step S holds everything logged at steps <= S (evaluations and
TensorBoard scalars at S are written before it). On resume from S, evals.jsonl keeps rows with
step <= S and TensorBoard purges events after S, so neither has duplicate nor missing steps.
"""

from __future__ import annotations

import time
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from agents.replay import MultiTaskReplay
from agents.sac import SACLearner
from envs.base import Suite
from envs.pool import EnvPool
from launch import checkpoint
from launch.config import Config
from launch.errors import UserError
from launch.evaluate import evaluate
from launch.progress import Progress
from metrics import evallog


def seed_for(seed: int, *purpose: int) -> int:
    """Independent seeds for each consumer (torch, numpy, each env) from the run seed."""
    return int(np.random.SeedSequence([seed, *purpose]).generate_state(1)[0] & 0x7FFFFFFF)


def crossed(before: int, after: int, every: int) -> bool:
    """Did the step counter pass a multiple of `every` going from `before` to `after`?"""
    return every > 0 and after // every > before // every


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; valid: cpu, cuda, cuda:N, auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r}; valid: cpu, cuda, cuda:N, auto")
    return device


class Trainer:
    def __init__(self, cfg: Config, suite: Suite, run_dir: Path, resume: bool):
        self.cfg, self.suite, self.run_dir = cfg, suite, run_dir
        seed = cfg.run.seed
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.device = resolve_device(cfg.run.device)
        torch.manual_seed(seed_for(seed, 0))
        self.rng = np.random.default_rng(seed_for(seed, 1))  # warm-up actions, replay sampling
        num_tasks = len(suite.tasks)
        self.learner = SACLearner(cfg.sac, suite.obs_dim, suite.action_dim, num_tasks, self.device)
        self.replay = MultiTaskReplay(num_tasks, cfg.replay.capacity_per_task, suite.obs_dim,
                                      suite.action_dim)
        self.step = 0
        if resume:
            self._restore(checkpoint.load_latest(run_dir / "checkpoints"))
            evallog.truncate_after(run_dir / "evals.jsonl", self.step)
        # purge_step hides events a killed run wrote after its last checkpoint.
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=self.step + 1 if resume else None)
        train_tasks = [t for t in suite.tasks for _ in range(cfg.env.envs_per_task)]
        # Env seeds depend on the start step, so a resumed run does not replay the same episodes.
        self.pool = EnvPool([suite.make_env(t, seed_for(seed, 2, self.step, k))
                             for k, t in enumerate(train_tasks)], [t.index for t in train_tasks])
        self.eval_envs = [suite.make_env(t, seed_for(seed, 3, t.index)) for t in suite.tasks]

    def _restore(self, state: dict) -> None:
        try:
            self.learner.load_state_dict(state["learner"])
            if "replay" in state:
                self.replay.load_state_dict(state["replay"])
            torch.set_rng_state(state["rng"]["torch"])
            self.rng.bit_generator.state = state["rng"]["numpy"]
            self.step = int(state["step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"checkpoint does not match this run's config: {first}") from None

    def _save_checkpoint(self) -> None:
        self.writer.flush()  # everything logged up to this step is on disk before the checkpoint
        state = {"learner": self.learner.state_dict(),
                 "rng": {"torch": torch.get_rng_state(), "numpy": self.rng.bit_generator.state}}
        if self.cfg.replay.save_in_checkpoint:
            state["replay"] = self.replay.state_dict()
        checkpoint.save(self.run_dir / "checkpoints", self.step, state, self.cfg.run.keep_checkpoints)

    def act(self, obs: np.ndarray, task: np.ndarray, deterministic: bool) -> np.ndarray:
        action = self.learner.actor.act(torch.as_tensor(obs, device=self.device),
                                        torch.as_tensor(task, device=self.device), deterministic)
        return action.cpu().numpy()

    def _evaluate(self) -> float:
        results = evaluate(partial(self.act, deterministic=self.cfg.eval.deterministic), self.eval_envs,
                           [t.index for t in self.suite.tasks], self.cfg.eval.goals,
                           seed=seed_for(self.cfg.run.seed, 4))
        rows = [{"step": self.step, "task": self.suite.tasks[r["task_index"]].name, **r} for r in results]
        evallog.append(self.run_dir / "evals.jsonl", rows)
        for row in rows:
            self.writer.add_scalar(f"eval/success/{row['task']}", row["success"], self.step)
            self.writer.add_scalar(f"eval/return/{row['task']}", row["return"], self.step)
        mean_success = float(np.mean([r["success"] for r in rows]))
        self.writer.add_scalar("eval/success_mean", mean_success, self.step)
        return mean_success

    def run(self) -> float | None:
        """Train to cfg.run.steps; returns the final mean eval success. Sets
        `train_steps_per_s`: env steps per second of training, evaluation and checkpoints excluded."""
        cfg, suite, learner = self.cfg, self.suite, self.learner
        start_step, start_time, paused = self.step, time.perf_counter(), 0.0
        n_envs, total = len(self.pool.envs), cfg.run.steps
        warmup = cfg.sac.warmup_steps_per_task * len(suite.tasks)
        progress = Progress(total, self.step, learner.num_updates)
        episodes = defaultdict(list)  # task -> finished training episodes since the last log
        losses: dict = {}
        eval_success = None
        if self.step == 0:
            eval_success = self._evaluate()
            self._save_checkpoint()  # every run directory is resumable from its start
            paused = time.perf_counter() - start_time
        while self.step < total:
            if self.step < warmup:
                actions = self.rng.uniform(-1, 1, (n_envs, suite.action_dim)).astype(np.float32)
            else:
                actions = self.act(self.pool.obs, self.pool.task_ids, deterministic=False)
            result = self.pool.step(actions)
            self.replay.add(self.pool.task_ids, result.obs, actions, result.reward, result.next_obs,
                            result.terminated)
            for episode in result.finished:
                episodes[episode.task].append(episode)
            before, self.step = self.step, self.step + n_envs
            if self.step >= warmup and self.replay.min_size() >= cfg.sac.batch_size_per_task:
                for _ in range(cfg.sac.updates_per_round):
                    losses = learner.update(self.replay.sample(cfg.sac.batch_size_per_task, self.rng))

            last = self.step >= total
            if crossed(before, self.step, cfg.run.log_every) or last:
                steps_per_s, updates_per_s = progress.rates(self.step, learner.num_updates)
                train_success = self._log_training(episodes, losses, steps_per_s, updates_per_s)
                episodes.clear()
                progress.show(progress.line(self.step, steps_per_s, updates_per_s, train_success,
                                            eval_success))
            pause_start = time.perf_counter()
            if crossed(before, self.step, cfg.eval.every) or last:
                eval_success = self._evaluate()
            if crossed(before, self.step, cfg.run.checkpoint_every) or last:
                self._save_checkpoint()
            paused += time.perf_counter() - pause_start
        self.train_steps_per_s = (self.step - start_step) / max(time.perf_counter() - start_time - paused, 1e-9)
        final = "n/a" if eval_success is None else f"{eval_success:.3f}"
        progress.done(f"done: step {self.step:,} | eval success {final} | training "
                      f"{self.train_steps_per_s:,.0f} env-steps/s (evaluation excluded) | run dir {self.run_dir}")
        return eval_success

    def _log_training(self, episodes, losses, steps_per_s, updates_per_s) -> float | None:
        w, step = self.writer, self.step
        w.add_scalar("perf/env_steps_per_s", steps_per_s, step)
        w.add_scalar("perf/updates_per_s", updates_per_s, step)
        for name, value in losses.items():
            w.add_scalar(name, float(value), step)
        alphas = self.learner.log_alpha.detach().exp().cpu().numpy()
        successes = []
        for task in self.suite.tasks:
            w.add_scalar(f"alpha/{task.name}", float(alphas[task.index]), step)
            if episodes.get(task.index):
                success = float(np.mean([e.success for e in episodes[task.index]]))
                successes.append(success)
                w.add_scalar(f"train/success/{task.name}", success, step)
                w.add_scalar(f"train/return/{task.name}",
                             float(np.mean([e.ret for e in episodes[task.index]])), step)
        return float(np.mean(successes)) if successes else None

    def close(self) -> None:
        self.writer.close()
        self.pool.close()
        for env in self.eval_envs:
            env.close()
