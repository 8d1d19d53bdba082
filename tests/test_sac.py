"""Networks, replay and the SAC update, checked against plain references."""

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from agents.networks import EnsembleLinear, EnsembleMLP, SquashedGaussianActor, TwinCritic
from agents.replay import MultiTaskReplay
from agents.sac import SACConfig, SACLearner

MLP = dict(hidden_sizes=(16, 16), head="multi", task_input=True, layer_norm=False)


def test_ensemble_linear_equals_separate_linear_layers():
    layer = EnsembleLinear(3, 5, 7)
    x = torch.randn(3, 4, 5)
    out = layer(x)
    for k in range(3):
        expected = F.linear(x[k], layer.weight[k].T, layer.bias[k, 0])
        torch.testing.assert_close(out[k], expected)


def test_multi_head_uses_each_samples_own_task_head():
    torch.manual_seed(0)
    net = EnsembleMLP(2, 3, 4, num_tasks=5, **MLP)
    x, task = torch.randn(6, 3), torch.tensor([0, 4, 2, 2, 1, 3])
    out = net(x, task)
    for i in range(6):  # evaluating sample i alone with its task gives the same output
        torch.testing.assert_close(out[:, i], net(x[i:i + 1], task[i:i + 1])[:, 0])
    # The output of task 4's head does not depend on task 0's head weights.
    out[:, task == 4].sum().backward()
    head_grad = net.head.linear.weight.grad.view(2, 16, 5, 4)
    assert head_grad[:, :, 4].abs().sum() > 0 and head_grad[:, :, 0].abs().sum() == 0


def test_squashed_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    actor = SquashedGaussianActor(3, 2, num_tasks=2, **MLP)
    obs, task = torch.randn(64, 3), torch.randint(0, 2, (64,))
    torch.manual_seed(1)
    action, log_prob = actor.sample(obs, task)
    mean, log_std = actor(obs, task)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform(cache_size=1)])
    torch.manual_seed(1)
    expected_action = reference.rsample()
    torch.testing.assert_close(action, expected_action)
    torch.testing.assert_close(log_prob, reference.log_prob(expected_action.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1),
                               rtol=1e-4, atol=1e-3)
    assert action.abs().max() <= 1


def test_twin_critics_are_independent():
    torch.manual_seed(0)
    critic = TwinCritic(3, 2, num_tasks=2, **MLP)
    q = critic(torch.randn(8, 3), torch.rand(8, 2), torch.zeros(8, dtype=torch.long))
    assert q.shape == (2, 8) and not torch.allclose(q[0], q[1])
    q[0].sum().backward()
    first_layer_grad = critic.net.layers[0].weight.grad
    assert first_layer_grad[0].abs().sum() > 0 and first_layer_grad[1].abs().sum() == 0


def _filled_replay(num_tasks=3, capacity=10):
    replay = MultiTaskReplay(num_tasks, capacity, obs_dim=1, action_dim=1)
    for step in range(25):  # overfills every task's ring: only the last 10 remain
        task = np.arange(num_tasks)
        obs = (100 * task + step).astype(np.float32)[:, None]
        replay.add(task, obs, np.zeros((num_tasks, 1), np.float32), np.zeros(num_tasks, np.float32),
                   obs + 0.5, np.zeros(num_tasks, np.float32))
    return replay


def test_replay_is_task_balanced_and_keeps_the_newest():
    replay = _filled_replay()
    assert list(replay.size) == [10, 10, 10]
    batch = replay.sample(50, np.random.default_rng(0))
    assert np.bincount(batch.task.numpy()).tolist() == [50, 50, 50]
    obs = batch.obs[:, 0].numpy()
    task = batch.task.numpy()
    assert ((obs // 100) == task).all()                 # rows belong to their task
    assert ((obs % 100) >= 15).all()                    # only the newest 10 steps remain
    np.testing.assert_array_equal(batch.next_obs[:, 0].numpy(), obs + 0.5)  # fields stay aligned
    sub = replay.sample(4, np.random.default_rng(0), tasks=[2])
    assert set(sub.task.tolist()) == {2}


def test_replay_state_dict_round_trip():
    replay = _filled_replay()
    copy = MultiTaskReplay(3, 10, 1, 1)
    copy.load_state_dict(replay.state_dict())
    for field in MultiTaskReplay.FIELDS + ("size", "cursor"):
        np.testing.assert_array_equal(getattr(copy, field), getattr(replay, field))


def _learner(num_tasks=2, **overrides):
    torch.manual_seed(0)
    cfg = SACConfig(hidden_sizes=(16, 16), batch_size_per_task=8, **overrides)
    return SACLearner(cfg, obs_dim=3, action_dim=2, num_tasks=num_tasks, device=torch.device("cpu"))


def test_update_touches_only_the_tasks_in_the_batch():
    learner = _learner()
    replay = MultiTaskReplay(2, 100, 3, 2)
    n = 50
    replay.add(np.zeros(n, int), np.random.randn(n, 3).astype(np.float32), np.random.rand(n, 2).astype(np.float32),
               np.random.rand(n).astype(np.float32), np.random.randn(n, 3).astype(np.float32), np.zeros(n, np.float32))
    head_before = learner.actor.net.head.linear.weight.detach().clone().view(1, 16, 2, 4)
    log_alpha_before = learner.log_alpha.detach().clone()
    learner.update(replay.sample(8, np.random.default_rng(0), tasks=[0]))
    head_after = learner.actor.net.head.linear.weight.detach().view(1, 16, 2, 4)
    assert not torch.equal(head_after[:, :, 0], head_before[:, :, 0])
    torch.testing.assert_close(head_after[:, :, 1], head_before[:, :, 1])  # task 1's head untouched
    assert learner.log_alpha[0] != log_alpha_before[0] and learner.log_alpha[1] == log_alpha_before[1]


def test_target_critics_follow_by_polyak_averaging():
    learner = _learner(tau=0.5)
    replay = MultiTaskReplay(2, 100, 3, 2)
    n = 40
    replay.add(np.repeat([0, 1], n // 2), np.random.randn(n, 3).astype(np.float32), np.random.rand(n, 2).astype(np.float32),
               np.random.rand(n).astype(np.float32), np.random.randn(n, 3).astype(np.float32), np.zeros(n, np.float32))
    target_before = [p.clone() for p in learner.critic_target.parameters()]
    learner.update(replay.sample(8, np.random.default_rng(0)))
    for before, target, online in zip(target_before, learner.critic_target.parameters(), learner.critic.parameters()):
        torch.testing.assert_close(target, 0.5 * before + 0.5 * online)


def test_learner_state_dict_round_trip_is_exact():
    learner, copy = _learner(), _learner(init_alpha=0.3)
    copy.load_state_dict(learner.state_dict())
    for a, b in zip(learner.state_dict()["actor"].values(), copy.state_dict()["actor"].values()):
        assert torch.equal(a, b)
    assert torch.equal(learner.log_alpha, copy.log_alpha)
