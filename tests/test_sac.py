"""Networks, replay and the SAC update, checked against plain references."""

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from agents.layers import EnsembleLinear
from agents.networks import LOG_STD_MAX, LOG_STD_MIN, SquashedGaussianActor, TaskNetwork, TwinCritic
from agents.replay import Batch, MultiTaskReplay
from agents.sac import SACConfig, SACLearner

MLP = dict(hidden_sizes=(16, 16), head="multi", task_input=True)


def test_ensemble_linear_equals_separate_linear_layers():
    layer = EnsembleLinear(3, 5, 7)
    x = torch.randn(3, 4, 5)
    out = layer(x)
    for k in range(3):
        expected = F.linear(x[k], layer.weight[k].T, layer.bias[k, 0])
        torch.testing.assert_close(out[k], expected)


def test_multi_head_uses_each_samples_own_task_head():
    torch.manual_seed(0)
    net = TaskNetwork(2, 3, 4, num_tasks=5, **MLP)
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
    first_layer_grad = critic.net.trunk.layers[0].weight.grad
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


def test_replay_state_dict_round_trip_keeps_filled_rows_only():
    replay = _filled_replay()
    replay.clear([1])
    state = replay.state_dict()
    assert [t["size"] for t in state["tasks"]] == [10, 0, 10]
    assert "obs" not in state["tasks"][1] and len(state["tasks"][0]["obs"]) == 10  # filled rows, no padding
    copy = MultiTaskReplay(3, 10, 1, 1)
    copy.load_state_dict(state)
    np.testing.assert_array_equal(copy.size, replay.size)
    np.testing.assert_array_equal(copy.cursor, replay.cursor)
    for t in (0, 2):
        for field in MultiTaskReplay.FIELDS:
            np.testing.assert_array_equal(copy.buffers[t][field][:10], replay.buffers[t][field][:10])
    # The ring continues where it was: the next row overwrites the oldest one.
    for buffer in (replay, copy):
        one = np.zeros((1, 1), np.float32)
        buffer.add(np.array([0]), one + 999, one, np.zeros(1, np.float32), one, np.zeros(1, np.float32))
    np.testing.assert_array_equal(copy.buffers[0]["obs"], replay.buffers[0]["obs"])


def test_replay_memory_is_taken_as_used_and_given_back():
    """A CW20-sized replay (20 tasks x 1M rows, 336 MB per full task) costs nothing up front."""
    replay = MultiTaskReplay(20, 1_000_000, obs_dim=39, action_dim=4)
    assert replay.nbytes() == 0
    rows = 5000
    replay.add(np.zeros(rows, int), np.zeros((rows, 39), np.float32), np.zeros((rows, 4), np.float32),
               np.zeros(rows, np.float32), np.zeros((rows, 39), np.float32), np.zeros(rows, np.float32))
    assert 5000 <= replay.allocated_rows(0) <= 2 * 5000 and replay.allocated_rows(1) == 0
    assert replay.nbytes() == replay.allocated_rows(0) * (39 + 39 + 4 + 1 + 1) * 4
    replay.clear([0])
    assert replay.nbytes() == 0 and replay.size[0] == 0


def test_replay_grows_past_its_first_allocation_and_wraps_at_capacity():
    replay = MultiTaskReplay(1, 10_000, obs_dim=1, action_dim=1)
    for start in range(0, 12_000, 1000):  # 12 chunks of 1000 rows: grows 4096 -> 8192 -> 10000, then wraps
        obs = np.arange(start, start + 1000, dtype=np.float32)[:, None]
        replay.add(np.zeros(1000, int), obs, obs, obs[:, 0], obs, np.zeros(1000, np.float32))
    assert replay.size[0] == 10_000 and replay.allocated_rows(0) == 10_000 and replay.cursor[0] == 2000
    assert sorted(replay.buffers[0]["obs"][:, 0]) == list(range(2000, 12_000))  # the newest 10,000 rows


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
    replay.add(np.repeat([0, 1], n // 2), np.random.randn(n, 3).astype(np.float32),
               np.random.rand(n, 2).astype(np.float32), np.random.rand(n).astype(np.float32),
               np.random.randn(n, 3).astype(np.float32), np.zeros(n, np.float32))
    target_before = [p.clone() for p in learner.critic_target.parameters()]
    learner.update(replay.sample(8, np.random.default_rng(0)))
    for before, target, online in zip(target_before, learner.critic_target.parameters(), learner.critic.parameters()):
        torch.testing.assert_close(target, 0.5 * before + 0.5 * online)


def test_the_configured_activation_reaches_every_network():
    """sac.activation=leaky_relu builds the actor, both critics and their targets with leaky units (slope
    0.2): a negative pre-activation passes, scaled, where ReLU would zero it (TF-MAS relies on it)."""
    x = torch.tensor([-1.0, 2.0])
    for activation, expected in (("leaky_relu", [-0.2, 2.0]), ("relu", [0.0, 2.0])):
        learner = _learner(activation=activation)
        for network in (learner.actor.net, learner.critic.net, learner.critic_target.net):
            torch.testing.assert_close(network.trunk.activation(x), torch.tensor(expected))


def test_learner_state_dict_round_trip_is_exact():
    learner, copy = _learner(), _learner(init_alpha=0.3)
    copy.load_state_dict(learner.state_dict())
    for a, b in zip(learner.state_dict()["actor"].values(), copy.state_dict()["actor"].values()):
        assert torch.equal(a, b)
    assert torch.equal(learner.log_alpha, copy.log_alpha)


# -- the SAC losses against a plain implementation ------------------------------------------------

def _plain_forward(net, k, x, task):
    """Member k of a multi-head, one-hot-input ReLU TaskNetwork, written out layer by layer."""
    h = torch.cat([x, F.one_hot(task, net.num_tasks).to(x.dtype)], -1)
    for layer in net.trunk.layers:
        h = torch.relu(h @ layer.weight[k] + layer.bias[k, 0])
    heads = (h @ net.head.linear.weight[k] + net.head.linear.bias[k, 0]).view(len(x), net.num_tasks, -1)
    return heads[torch.arange(len(x)), task]


def _plain_sample(actor, obs, task, seed):
    """a = tanh(u), u ~ N(mu, sigma) drawn from torch's stream at `seed`, and log pi(a|s) from
    torch.distributions plus the tanh correction log(1 - tanh(u)^2)."""
    out = _plain_forward(actor.net, 0, obs, task)
    mu, z = out.chunk(2, -1)
    log_sigma = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(z) + 1)
    torch.manual_seed(seed)
    u = mu + log_sigma.exp() * torch.randn_like(mu)
    log_pi = Normal(mu, log_sigma.exp()).log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2 + 1e-12).sum(-1)
    return torch.tanh(u), log_pi


def _sac_batch(n=24, num_tasks=2):
    g = torch.Generator().manual_seed(5)
    return Batch(torch.randn(n, 3, generator=g), torch.rand(n, 2, generator=g) * 2 - 1,
                 torch.randn(n, generator=g), torch.randn(n, 3, generator=g),
                 (torch.arange(n) % 3 == 0).float(),  # every third transition ends its episode
                 torch.arange(n) % num_tasks)


def _learner_with_distinct_targets():
    learner = _learner(init_alpha=0.7, gamma=0.9)
    with torch.no_grad():  # target critics != critics, and the twins differ: min vs max matters
        for p in learner.critic_target.parameters():
            p.add_(0.3 * torch.randn_like(p))
        learner.log_alpha.copy_(torch.tensor([0.3, -0.8]))
    return learner


def test_critic_loss_matches_a_plain_soft_bellman_target():
    learner, batch = _learner_with_distinct_targets(), _sac_batch()
    torch.manual_seed(11)
    loss = learner.critic_loss(batch)[0].mean()
    with torch.no_grad():
        next_a, next_log_pi = _plain_sample(learner.actor, batch.next_obs, batch.task, seed=11)
        x_next = torch.cat([batch.next_obs, next_a], -1)
        q1_t, q2_t = (_plain_forward(learner.critic_target.net, k, x_next, batch.task)[:, 0] for k in (0, 1))
        alpha = learner.log_alpha.exp()[batch.task]
    x = torch.cat([batch.obs, batch.action], -1)
    q1, q2 = (_plain_forward(learner.critic.net, k, x, batch.task)[:, 0] for k in (0, 1))
    r, d, gamma = batch.reward, batch.terminated, 0.9

    def plain(soft_value, mask=1 - d, discount=gamma):
        y = r + discount * mask * soft_value
        return ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()

    expected = plain(torch.minimum(q1_t, q2_t) - alpha * next_log_pi)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    # Each of these mistakes changes the loss well beyond that tolerance:
    for wrong in (plain(torch.maximum(q1_t, q2_t) - alpha * next_log_pi),   # max for min
                  plain(torch.minimum(q1_t, q2_t) + alpha * next_log_pi),   # entropy sign
                  plain(torch.minimum(q1_t, q2_t) - alpha * next_log_pi, discount=1.0),  # no gamma
                  # bootstraps terminals:
                  plain(torch.minimum(q1_t, q2_t) - alpha * next_log_pi, mask=torch.ones_like(d))):
        assert abs(float(wrong.detach() - loss.detach())) > 1e-2


def test_actor_and_temperature_losses_match_plain_sac():
    learner, batch = _learner_with_distinct_targets(), _sac_batch()
    torch.manual_seed(12)
    losses, _, log_pi = learner.actor_loss(batch)
    loss = losses.mean()
    a, plain_log_pi = _plain_sample(learner.actor, batch.obs, batch.task, seed=12)
    x = torch.cat([batch.obs, a], -1)
    q1, q2 = (_plain_forward(learner.critic.net, k, x, batch.task)[:, 0] for k in (0, 1))
    alpha = learner.log_alpha.detach().exp()[batch.task]
    torch.testing.assert_close(log_pi, plain_log_pi, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss, (alpha * plain_log_pi - torch.minimum(q1, q2)).mean(), rtol=1e-5, atol=1e-5)
    assert abs(float(((alpha * plain_log_pi - torch.maximum(q1, q2)).mean() - loss).detach())) > 1e-2
    # Temperature: E[-log alpha_task * (log pi + target entropy)], target entropy -|A| = -2
    expected = (-learner.log_alpha[batch.task] * (plain_log_pi.detach() - 2.0)).mean()
    torch.testing.assert_close(learner.temperature_loss(log_pi, batch.task).mean(), expected, rtol=1e-4, atol=1e-5)


def test_terminal_transitions_do_not_bootstrap():
    """With gamma = 0.99 and target critics pushed to huge values, only the terminal rows' target
    stays at the reward: their share of the loss is (Q - r)^2 exactly."""
    learner, batch = _learner(gamma=0.99), _sac_batch()
    with torch.no_grad():
        for p in learner.critic_target.net.head.parameters():
            p.fill_(1e3)
    terminal = batch.terminated.bool()
    only_terminal = Batch(*(x[terminal] for x in batch))
    loss = learner.critic_loss(only_terminal)[0].mean()
    q = learner.critic(only_terminal.obs, only_terminal.action, only_terminal.task)
    torch.testing.assert_close(loss, ((q - only_terminal.reward) ** 2).mean(dim=1).sum())
    loss_all = learner.critic_loss(batch)[0].mean()
    assert float(loss_all.detach()) > 1e4  # the non-terminal rows do bootstrap from the (huge) targets


def test_simultaneous_order_takes_every_gradient_before_any_step():
    """sequential: the actor's gradient sees the updated critic; simultaneous: the critic from
    before the update (Spinning Up / Continual World), so the actor's gradients differ."""
    grads = {}
    for order in ("sequential", "simultaneous"):
        learner = _learner(update_order=order, critic_lr=0.05)  # a critic step big enough to matter
        torch.manual_seed(0)
        learner.update(_sac_batch())
        grads[order] = torch.cat([p.grad.flatten() for p in learner.actor.parameters()])
    reference = _learner()  # the actor's gradient against the untouched critic, same draws
    torch.manual_seed(0)
    reference.critic_loss(_sac_batch())
    loss = reference.actor_loss(_sac_batch())[0].mean()
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(loss, reference.params["actor"])])
    torch.testing.assert_close(grads["simultaneous"], expected)
    assert (grads["sequential"] - expected).abs().max() > 0.01


def test_a_non_finite_loss_is_flagged():
    learner, batch = _learner(), _sac_batch()
    learner.update(batch)
    assert learner.nonfinite() is None
    poisoned = batch._replace(reward=batch.reward.clone().index_fill_(0, torch.tensor([0]), float("nan")))
    learner.update(poisoned)
    assert learner.nonfinite() == "a non-finite loss"
