"""The learned loss weightings (agents/balancers/weighting.py: uncertainty, GradNorm, FAMO) against
their update rules on hand-made sequences, their wiring through SACLearner.update, and every
balancer's state through a checkpoint. The gradient combiners: tests/test_balancers.py."""

import copy

import numpy as np
import pytest
import torch

from agents.balancers import TaskLosses
from agents.balancers.weighting import FAMO, GradNorm, UncertaintyWeighting
from tests.test_balancers import _batch, _tiny_learner


def test_gradnorm_moves_weights_toward_equal_training_rates():
    """Two tasks through one shared layer, task 0's loss 20x larger: GradNorm lowers its weight,
    raises the other's (summing to 2), and brings the weighted gradient norms together."""
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 4, bias=False)
    heads = torch.randn(2, 4)
    x, y = torch.randn(64, 4), torch.randn(2, 64)
    scale = torch.tensor([20.0, 1.0])
    balancer = GradNorm(num_tasks=2, layer=shared.weight, lr=0.01, gradnorm_alpha=1.5)
    optimizer = torch.optim.Adam(shared.parameters(), lr=1e-3)
    task = torch.arange(2).repeat_interleave(64)

    def norms():
        out = shared(x) @ heads.T  # [64, 2]
        per = [(scale[i] * (out[:, i] - y[i]) ** 2).mean() for i in range(2)]
        return torch.stack([torch.autograd.grad(loss, shared.weight, retain_graph=True)[0].norm() for loss in per])

    before = norms()
    for _ in range(300):
        out = shared(x) @ heads.T
        losses = TaskLosses([(scale[:, None] * (out.T - y) ** 2).flatten()], task)
        optimizer.zero_grad()
        balancer.backward(losses, list(shared.parameters()), "critic")
        optimizer.step()
        balancer.after_step("critic", losses)
    w = balancer.weights.detach()
    assert w[0] < 0.7 < 1.3 < w[1] and torch.isclose(w.sum(), torch.tensor(2.0))
    weighted = w * norms()
    assert abs(float((weighted[0] / weighted[1]).log())) < 0.5 * abs(float((before[0] / before[1]).log()))


# per step: each task's loss and the norm of its gradient at GradNorm's layer W
GRADNORM_LOSSES = [[2.0, 1.0, 4.0], [1.6, 0.95, 3.0], [1.0, 0.9, 2.6], [0.7, 0.8, 2.0], [0.5, 0.78, 1.5]]
GRADNORM_NORMS = [[1.0, 1.3, 0.8], [0.9, 1.2, 1.0], [1.1, 1.0, 0.9], [1.0, 1.1, 1.2], [0.8, 1.0, 1.1]]


def _gradnorm_by_hand(alpha: float, lr: float) -> np.ndarray:
    """Chen et al.'s rule: G_i = w_i n_i, r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0)) with L_i(0)
    the first loss, dL_grad/dw_i = sign(G_i - mean(G) r_i^alpha) n_i, an Adam step, w renormalised
    to sum to T."""
    w, m, v, initial = np.ones(3), np.zeros(3), np.zeros(3), np.array(GRADNORM_LOSSES[0])
    for step, (loss, norm) in enumerate(zip(GRADNORM_LOSSES, GRADNORM_NORMS), start=1):
        loss, norm = np.array(loss), np.array(norm)
        rate = (loss / initial) / (loss / initial).mean()
        g = np.sign(w * norm - (w * norm).mean() * rate ** alpha) * norm
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w = w - lr * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
        w = np.maximum(w, 1e-6) * 3 / np.maximum(w, 1e-6).sum()
    return w


def test_gradnorm_follows_its_rule_on_a_hand_made_sequence():
    """Losses and gradient norms set step by step: the weights follow the rule with alpha and the
    first losses L_i(0) (alpha 0, alpha 3 or L_i(0) reset every step give other weights), and the
    network's gradient is that of mean_i w_i L_i."""
    alpha, lr = 1.5, 0.1
    layer = torch.zeros(2, 2, requires_grad=True)
    balancer = GradNorm(num_tasks=3, layer=layer, lr=lr, gradnorm_alpha=alpha)
    task = torch.arange(3).repeat_interleave(2)
    directions = torch.nn.functional.normalize(torch.tensor([[1.0, 2, 0, 1], [0, 1, 1, -1], [3, 0, -1, 0]]), dim=1)
    for loss, norm in zip(GRADNORM_LOSSES, GRADNORM_NORMS):
        grads = (directions * torch.tensor(norm)[:, None]).view(3, 2, 2)  # dL_i/dW, of norm n_i
        per_row = torch.tensor(loss)[task] + (grads[task] * layer).sum((1, 2))  # L_i at W = 0
        losses = TaskLosses([per_row], task)
        w = balancer.weights.detach().clone()
        layer.grad = None
        balancer.backward(losses, [layer], "critic")
        assert torch.allclose(layer.grad, (w[:, None, None] * grads).mean(0), atol=1e-6)
        balancer.after_step("critic", losses)
    expected = _gradnorm_by_hand(alpha, lr)
    assert np.allclose(balancer.weights.detach().numpy(), expected, atol=1e-5)
    assert not np.allclose(expected, _gradnorm_by_hand(0.0, lr), atol=1e-2)  # the sequence tells alpha apart
    assert not np.allclose(expected, _gradnorm_by_hand(3.0, lr), atol=1e-2)


def test_uncertainty_weights_the_networks_gradient_by_exp_minus_s():
    """d/dtheta of mean_i 0.5 (exp(-s_i) L_i(theta) + s_i) = mean_i 0.5 exp(-s_i) dL_i/dtheta; and
    d/ds_i = 0.5 (1 - exp(-s_i) L_i) / T."""
    theta = torch.tensor([0.5, -1.0], requires_grad=True)
    task = torch.arange(2).repeat_interleave(3)
    coef = torch.tensor([[2.0, 1.0], [-1.0, 3.0]])  # L_i = (coef_i . theta)^2
    s = torch.tensor([0.7, -0.4])
    balancer = UncertaintyWeighting(num_tasks=2)
    with torch.no_grad():
        balancer.log_var.copy_(s)
    balancer.backward(TaskLosses([(coef[task] @ theta) ** 2], task), [theta], "critic")
    inner = coef @ theta.detach()
    expected = (0.5 * torch.exp(-s)[:, None] * 2 * inner[:, None] * coef).mean(0)
    assert torch.allclose(theta.grad, expected, atol=1e-6)
    assert not torch.allclose(expected, (inner[:, None] * coef).mean(0), atol=0.1)  # the weights matter here
    assert torch.allclose(balancer.log_var.grad, 0.5 * (1 - torch.exp(-s) * inner ** 2) / 2, atol=1e-6)


def test_uncertainty_weights_converge_to_the_log_loss():
    task = torch.arange(2).repeat_interleave(3)
    fixed = torch.tensor([4.0, 0.25]).repeat_interleave(3)
    theta = torch.zeros(1, requires_grad=True)  # the network: the losses do not depend on it
    balancer = UncertaintyWeighting(num_tasks=2, lr=0.05)
    for _ in range(1500):
        losses = TaskLosses([fixed + 0 * theta], task)
        balancer.backward(losses, [theta], "critic")
        balancer.after_step("critic", losses)
    assert torch.allclose(balancer.log_var.detach(), torch.tensor([4.0, 0.25]).log(), atol=0.02)


@pytest.mark.parametrize("make", [lambda: UncertaintyWeighting(num_tasks=3),
                                  lambda: FAMO(num_tasks=3),
                                  lambda: GradNorm(num_tasks=3, layer=torch.nn.Parameter(torch.ones(2, 2)))])
def test_weights_of_tasks_not_in_the_batch_stay_put(make):
    """A continual stage trains tasks {0, 1}; task 2's weight and its Adam moments must not drift
    (Adam momentum, FAMO's coupled decay, the moments' decay)."""
    balancer = make()
    learned = next(v for v in balancer.state_dict().values() if isinstance(v, torch.Tensor) and v.numel() == 3)
    with torch.no_grad():
        learned.copy_(torch.tensor([0.5, 1.0, 1.5]))
    layer = getattr(balancer, "layer", torch.nn.Parameter(torch.ones(2, 2)))
    for step in range(6):
        tasks = [0, 1, 2] if step == 0 else [0, 1]
        task = torch.tensor(tasks).repeat_interleave(2)
        per_row = (layer.sum() * torch.arange(1.0, len(task) + 1)) ** 2 / 10
        losses = TaskLosses([per_row], task, recompute=lambda n=len(tasks): torch.full((n,), 0.5))
        balancer.backward(losses, [layer], "critic")
        balancer.after_step("critic", losses)
        moments = balancer.optimizer.state[balancer.learned]
        if step == 0:
            third = float(learned[2])
            third_moments = [float(moments[key][2]) for key in ("exp_avg", "exp_avg_sq")]
            assert min(map(abs, third_moments)) > 0
    assert float(learned[2]) == third and not torch.allclose(learned[:2], torch.tensor([0.5, 1.0]))
    assert [float(moments[key][2]) for key in ("exp_avg", "exp_avg_sq")] == third_moments
    assert int(moments["step"]) == 6  # one step counter for every task: it counts every step


def test_gradnorm_balances_the_last_shared_weight_matrix():
    learner = _tiny_learner("gradnorm")
    layer = learner.balancers["critic"].layer
    assert layer is learner.critic.net.trunk.layers[-1].weight and layer.shape[-2:] == (16, 16)


def test_famo_weights_follow_its_update_rule_on_a_hand_made_sequence():
    befores = [[1.0, 2.0], [0.6, 1.7], [0.5, 1.3]]
    afters = [[0.5, 1.8], [0.55, 1.2], [0.45, 1.25]]
    lr, decay = 0.025, 0.01
    balancer = FAMO(num_tasks=2, lr=lr, famo_decay=decay)
    task = torch.tensor([0, 0, 1, 1])
    # by hand: z = softmax(xi); grad = (diag z - z z^T) delta, delta = log before - log after;
    # then Adam (beta 0.9, 0.999, eps 1e-8) with L2 weight decay added to the gradient
    xi, m, v = np.zeros(2), np.zeros(2), np.zeros(2)
    for step, (before, after) in enumerate(zip(befores, afters), start=1):
        theta = torch.tensor(before, requires_grad=True)
        losses = TaskLosses([theta.repeat_interleave(2)], task, recompute=lambda a=after: torch.tensor(a))
        balancer.backward(losses, [theta], "critic")
        z = np.exp(xi) / np.exp(xi).sum()
        c = (z / (np.array(before) + 1e-8)).sum()
        # the network's gradient: d/d L_i of sum_j z_j log L_j / c = z_i / (c L_i)
        assert np.allclose(theta.grad.numpy(), z / (c * np.array(before)), atol=1e-6)
        balancer.after_step("critic", losses)
        delta = np.log(before) - np.log(after)
        g = (np.diag(z) - np.outer(z, z)) @ delta + decay * xi
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        xi = xi - lr * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
        assert np.allclose(balancer.logits.detach().numpy(), xi, atol=1e-6), step
    assert xi[0] < xi[1]  # task 0 improved faster: FAMO moves weight to task 1


@pytest.mark.parametrize("method, tasks, balance", [
    ("pcgrad", 4, {}),  # 4 tasks: the order of projection matters, so its draws' state does
    ("famo", 2, {}),
    ("nashmtl", 2, {"nashmtl_update_every": 2}),  # restored: reuses its weights; a fresh solver would solve
    ("gradnorm", 2, {}), ("uncertainty", 2, {})])
def test_a_balancers_state_survives_a_checkpoint(method, tasks, balance, tmp_path):
    """A learner restored from its saved state (weights_only) continues exactly as the original;
    one that loses its balancer's state does not."""
    learners = [_tiny_learner(method, tasks=tasks, balance=balance) for _ in range(3)]  # default networks
    batch = _batch(tasks=tasks)
    torch.manual_seed(3)
    for _ in range(3):
        learners[0].update(batch)
    torch.save(learners[0].state_dict(), tmp_path / "state.pt")
    for learner in learners[1:]:
        learner.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    learners[2].balancers = _tiny_learner(method, tasks=tasks, balance=balance).balancers  # their state lost
    after = []
    for learner in learners:
        torch.manual_seed(4)
        for _ in range(2):
            learner.update(batch)
        after.append(torch.cat([p.detach().flatten() for p in (*learner.critic.parameters(),
                                                               *learner.actor.parameters(), learner.log_alpha)]))
    assert torch.equal(after[0], after[1])
    assert not torch.allclose(after[0], after[2], rtol=0, atol=1e-7)


@pytest.mark.parametrize("method", ["famo", "uncertainty", "gradnorm"])
def test_learned_weights_move_in_the_learner(method):
    """Through SACLearner.update (critic losses ~1 and ~74 on the toy batch): FAMO's first step
    lowers the logit of the task whose log-loss fell most over the critic step (on the same batch
    and target: it is read after the step; read before it, nothing falls and the logits stay 0);
    uncertainty's s_i rise toward log L_i, the larger loss's faster; GradNorm lowers the weight of
    the task with the larger gradient norm (equal training rates at the first update)."""
    learner = _tiny_learner(method)
    balancer, batch = learner.balancers["critic"], _batch()
    twin = copy.deepcopy(learner)
    torch.manual_seed(7)
    learner.update(batch)
    if method == "famo":
        torch.manual_seed(7)  # the update's critic loss, recomputed through the updated critic
        before, _, _ = twin.critic_loss(batch)
        twin.critic.load_state_dict(learner.critic.state_dict())
        with torch.no_grad():
            delta = before.per_task().log() - before.recompute().log()
        assert (delta > 0).all() and abs(float(delta[0] - delta[1])) > 1e-4
        # z = (0.5, 0.5): the gradient 0.25 (delta_i - delta_j), Adam's first step lr sign(.)
        expected = -0.025 * torch.sign(delta - delta.mean())
        assert torch.allclose(balancer.logits.detach(), expected, atol=1e-5)
        return
    for _ in range(5):
        learner.update(batch)
    learned = balancer.learned.detach()
    if method == "uncertainty":
        assert 0 < learned[0] < learned[1] < float(np.log(70))
    else:
        assert learned[0] > 1.05 and learned[1] < 0.95 and torch.isclose(learned.sum(), torch.tensor(2.0))
