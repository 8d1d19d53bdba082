"""RLlib PPO's policy under our evaluation protocol (envs/evaluation.py), for the RLlib engine's
evaluations (SAC's go through launch/evaluation/evaluator.py on the actor's weights): the mean of PPO's
Gaussian (eval.policy=mean) or a sample of it (sample: noise from a generator reseeded at every
evaluation), clipped to the action box as RLlib does; one eval env per task, seeded as our
evaluator seeds its own."""

from __future__ import annotations

import numpy as np
import torch

from agents import seeding
from envs.evaluation import evaluate


class PPOEvaluation:
    def __init__(self, suite, seed: int, goals: int, mode: str):
        self.num_tasks, self.seed, self.goals, self.mode = len(suite.tasks), seed, goals, mode
        self.envs = [suite.make_env(t, seeding.seed_for(seed, "eval-envs", t.index)) for t in suite.tasks]

    def __call__(self, module) -> list[dict]:
        """One evaluation of PPO's RLModule `module` (task-conditioned: [obs, one_hot(task)] in):
        envs/evaluation.py's rows, every task."""
        T, eye = self.num_tasks, np.eye(self.num_tasks, dtype=np.float32)
        noise = torch.Generator().manual_seed(seeding.seed_for(self.seed, "eval", 1))

        def act(obs, task):
            flat = np.concatenate([obs, eye[task]], axis=1)
            with torch.no_grad():
                out = module.forward_inference({"obs": torch.from_numpy(flat)})["action_dist_inputs"]
            mean, log_std = out.chunk(2, dim=-1)
            if self.mode == "sample":
                mean = mean + log_std.exp() * torch.randn(mean.shape, generator=noise)
            return mean.clamp(-1, 1).numpy()

        return evaluate(act, self.envs, list(range(T)), self.goals, seed=seeding.seed_for(self.seed, "eval"))
