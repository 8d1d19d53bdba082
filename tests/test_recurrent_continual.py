"""Continual strategies that read stored data, on recurrent SAC (sac.memory): EWC's and MAS's
importances over windows of steps are means of per-step terms over the real steps, and A-GEM keeps
windows and projects against their loss."""

import numpy as np
import pytest
import torch

from agents.sac import SACConfig, make_learner
from agents.sequence_replay import SequenceBatch, SequenceReplay
from continual.strategies import importance
from continual.strategies.agem import AGEM
from continual.strategies.base import TaskContext, importance_states
from launch.config import ContinualConfig

CPU = torch.device("cpu")


def _learner(cell="gru"):
    cfg = SACConfig(hidden_sizes=(16, 16), memory=cell, memory_hidden=8, batch_size_per_task=4,
                    task_input=False, head="single")
    return make_learner(cfg, 3, 2, 2, CPU)


def _windows():
    """3 windows of 4 steps; the second has 2 real steps, the third 1; padding holds large values
    (they would move every estimate if read)."""
    g = torch.Generator().manual_seed(0)
    obs, action = torch.randn(3, 4, 3, generator=g), torch.rand(3, 4, 2, generator=g) * 2 - 1
    prev_action, prev_reward = torch.rand(3, 4, 2, generator=g) * 2 - 1, torch.randn(3, 4, generator=g)
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    obs = torch.where(mask[..., None] > 0, obs, torch.full_like(obs, 50.0))
    return obs, prev_action, prev_reward, action, torch.tensor([0, 1, 1]), mask


def _per_step(outputs, module):
    """Hand loop: for every real step, the gradients of that step's outputs (callables of the
    window's network outputs) by autograd, one output at a time."""
    obs, prev_action, prev_reward, action, task, mask = _windows()
    params = dict(module.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(obs)):
        for t in range(int(mask[i].sum())):
            for value, scale in outputs(i, t):
                grads = torch.autograd.grad(value, list(params.values()), retain_graph=True, allow_unused=True)
                for n, g in zip(params, grads):
                    if g is not None:
                        total[n] += scale(g)
    return {n: v / mask.sum() for n, v in total.items()}


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_actor_fisher_over_windows_is_the_mean_of_per_step_fishers_over_real_steps(cell):
    actor = _learner(cell).actor
    obs, prev_action, prev_reward, action, task, mask = _windows()
    fisher = importance.actor_fisher(actor, importance.States((obs, prev_action, prev_reward, task), (), mask))

    def outputs(i, t):
        mean, log_std = actor(obs[i:i + 1], prev_action[i:i + 1], prev_reward[i:i + 1], task[i:i + 1])
        std = log_std[0, t].exp()
        for d in range(2):
            inv = 1.0 / (std[d].detach() ** 2 + 1e-6)
            yield mean[0, t, d], lambda g, inv=inv: g.pow(2) * inv
            yield std[d], lambda g, inv=inv: 2 * g.pow(2) * inv
    hand = _per_step(outputs, actor)
    assert "memory.rnn.weight_hh_l0" in fisher
    for name in fisher:
        torch.testing.assert_close(fisher[name], hand[name].clamp_min(importance.FISHER_FLOOR), rtol=1e-4, atol=1e-7)


def test_the_critic_fisher_and_mas_over_windows_are_means_of_per_step_terms():
    learner = _learner()
    critic, actor = learner.critic, learner.actor
    obs, prev_action, prev_reward, action, task, mask = _windows()
    states = importance.States((obs, prev_action, prev_reward, task),
                               (obs, prev_action, prev_reward, action, task), mask)
    fisher, mas = importance.critic_fisher(critic, states), importance.actor_mas(actor, states)

    def q_outputs(i, t):
        q = critic(obs[i:i + 1], prev_action[i:i + 1], prev_reward[i:i + 1], action[i:i + 1], task[i:i + 1])
        for j in range(2):
            yield q[j, 0, t], lambda g: g.pow(2)

    def norm_outputs(i, t):
        mean, log_std = actor(obs[i:i + 1], prev_action[i:i + 1], prev_reward[i:i + 1], task[i:i + 1])
        yield mean[0, t].pow(2).sum() + log_std[0, t].pow(2).sum(), lambda g: g.abs()
    hand_fisher, hand_mas = _per_step(q_outputs, critic), _per_step(norm_outputs, actor)
    for name in fisher:
        torch.testing.assert_close(fisher[name], hand_fisher[name], rtol=1e-4, atol=1e-7)
    for name in mas:
        torch.testing.assert_close(mas[name], hand_mas[name], rtol=1e-4, atol=1e-7)
    assert float(fisher["memory.rnn.weight_ih_l0"].abs().sum()) > 0  # the memory is protected too


def _replay(tasks=2, episodes=6, steps=10, length=8):
    rng = np.random.default_rng(0)
    replay = SequenceReplay(tasks, 500, 3, 2, length)
    for task in range(tasks):
        for e in range(episodes):
            n = steps
            replay.add(np.full(n, task), rng.normal(size=(n, 3)).astype(np.float32),
                       rng.uniform(-1, 1, (n, 2)).astype(np.float32), rng.normal(size=n).astype(np.float32),
                       rng.normal(size=(n, 3)).astype(np.float32), np.zeros(n, np.float32),
                       stream=np.full(n, task * 100 + e), first=np.arange(n) == 0)
    return replay


def test_importance_states_of_a_memory_are_windows_of_the_stages_tasks():
    replay = _replay()
    states = importance_states(replay, (1,), 20, np.random.default_rng(0), CPU)
    obs, prev_action, prev_reward, task = states.actor
    assert obs.shape == (3, 8, 3) and states.mask.shape == (3, 8)  # ceil(20 / 8) windows of 8 steps
    assert (task == 1).all()
    # the previous action and reward are the window's own, shifted by one step, 0 at its start
    torch.testing.assert_close(prev_action[:, 1:], states.critic[3][:, :-1])
    assert (prev_action[:, 0] == 0).all() and (prev_reward[:, 0] == 0).all()


def test_agem_keeps_windows_and_projects_a_conflicting_gradient_onto_their_loss():
    learner = _learner()
    replay = _replay()
    agem = AGEM(ContinualConfig(method="agem", memory_per_task=24, agem_batch_size=16), learner, [0, 1], seed=0)
    agem.end_task(TaskContext(0, 2, (0,), (), 100, replay, np.random.default_rng(0)))
    assert agem.memory["obs"].shape == (3, 8, 3) and (agem.memory["task"] == 0).all()  # 24 steps: 3 windows of 8
    batch = agem._memory_batch()
    assert isinstance(batch, SequenceBatch) and len(batch.task) == 2  # 16 steps: 2 windows
    # a gradient that opposes the reference one is projected to be orthogonal to it
    params = learner.params["actor"]
    agem.rng = np.random.default_rng(5)
    torch.manual_seed(5)  # the policy's action noise too
    reference = agem._reference(["actor"])[0]
    for p, r in zip(params, reference):
        p.grad = -r.clone() + 0.01 * torch.randn_like(r)
    agem.rng = np.random.default_rng(5)  # the same reference batch and noise again
    torch.manual_seed(5)
    agem.before_step(("actor",))
    dot = sum((p.grad * r).sum() for p, r in zip(params, reference))
    assert abs(float(dot)) < 1e-4 * float(sum(r.pow(2).sum() for r in reference))
    assert float(sum(p.grad.abs().sum() for p in params)) > 0
