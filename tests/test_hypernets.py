"""Hypernetworks (agents/hypernets.py: mlp, Ehret et al.'s structured chunks, Chandra et al.'s RNN)
and the memory they generate (agents/hyper_memory.py): target shapes, torch's recurrent equations,
the chunks' structure and dependencies, the output regulariser on recurrent policies, growth."""

import numpy as np
import pytest
import torch
from torch import nn

from agents.hyper_memory import HyperMemory
from agents.hypernets import KINDS, Hypernetwork
from agents.sac import SACConfig, make_learner
from continual.strategies import make_strategy
from continual.strategies.base import TaskContext
from launch.config import ContinualConfig
from tests.test_recurrent_continual import _replay

SIZES = [(3, 32), (2, 16), (1, 16), (64, 48), (16, 48), (3, 32)]  # a GRU memory's layers, hidden 16


def _options(kind, **kw):
    return dict(embedding_dim=4, hyper_hidden=16, kind=kind, chunk_size=100, chunk_embedding_dim=4, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_generated_weights_have_the_target_shapes_and_differ_per_task(kind):
    torch.manual_seed(0)
    hyper = Hypernetwork(2, [(5, 7), (7, 3)], 3, **_options(kind))
    layers = hyper.generate()
    assert [(w.shape, b.shape) for w, b in layers] == [((3, 2, 5, 7), (3, 2, 7)), ((3, 2, 7, 3), (3, 2, 3))]
    assert not torch.equal(layers[0][0][0], layers[0][0][1])  # task 0's and task 1's weights
    some = hyper.generate([2, 0])
    torch.testing.assert_close(some[1][0], torch.stack([layers[1][0][2], layers[1][0][0]]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_generated_memory_computes_torchs_recurrent_layer_with_its_tasks_weights(kind, cell):
    """The generated input and hidden maps, loaded into nn.GRU / nn.LSTM, give the same h as the
    generated memory for each window's task."""
    torch.manual_seed(0)
    gates = 3 if cell == "gru" else 4
    memory = HyperMemory(3, 2, cell, 16, 2, (3, 32), _options(kind), chunk_units=8)
    obs, prev_action, prev_reward = torch.randn(3, 5, 3), torch.randn(3, 5, 2), torch.randn(3, 5)
    task = torch.tensor([1, 0, 1])  # two tasks' windows interleaved: each runs with its own task's weights
    h, final = memory(obs, prev_action, prev_reward, task)
    present, index, generated = memory.layers(task)
    assert present.tolist() == [0, 1] and index.tolist() == [1, 0, 1]
    assert generated["input_map"][0].shape == (2, 64, gates * 16)
    assert generated["hidden_map"][0].shape == (2, 16, gates * 16)
    torch.testing.assert_close((final[0] if cell == "lstm" else final)[0], h[:, -1])
    for window in range(3):
        layers = {name: (w[index[window]], b[index[window]]) for name, (w, b) in generated.items()}
        rnn = getattr(nn, cell.upper())(64, 16, batch_first=True)
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(layers["input_map"][0].T)
            rnn.bias_ih_l0.copy_(layers["input_map"][1])
            rnn.weight_hh_l0.copy_(layers["hidden_map"][0].T)
            rnn.bias_hh_l0.copy_(layers["hidden_map"][1])

            def embed(x, name, layers=layers):
                return torch.relu(x @ layers[name][0] + layers[name][1])
            x = torch.cat([embed(prev_action[window], "action_embed"),
                           embed(prev_reward[window, :, None], "reward_embed"), embed(obs[window], "obs_embed")],
                          dim=-1)
            torch.testing.assert_close(h[window], rnn(x[None])[0][0], rtol=1e-5, atol=1e-6)


def test_a_structured_chunk_holds_the_same_units_of_every_map_of_its_layer_inside_one_gate():
    """Ehret et al.'s chunking: chunk j of the recurrent layer is output units [8 j, 8 j + 8) of
    both the input and the hidden map (hidden 16: gates hold units [0, 16), [16, 32), [32, 48))."""
    torch.manual_seed(0)
    memory = HyperMemory(3, 2, "gru", 16, 2, (3, 32), _options("chunked"), chunk_units=8)
    chunks = memory.generator.hypernet.chunk_embeddings[3]
    assert chunks.shape[0] == 48 // 8
    before = memory.generator.generate()
    with torch.no_grad():
        chunks[2] += 1.0  # chunk 2: units 16..23, the first half of the second gate
    after = memory.generator.generate()
    for index in (3, 4):
        changed = (after[index][0] != before[index][0]).any(dim=(0, 1, 2))
        assert changed[16:24].all() and not changed[:16].any() and not changed[24:].any()
    assert all(torch.equal(after[i][0], before[i][0]) for i in (0, 1, 2, 5))


def test_the_rnn_hypernetworks_chunks_depend_on_the_chunks_before_them():
    """Chandra et al.: the LSTM's state carries from chunk to chunk, so moving chunk j's embedding
    changes chunk j and every later one, never an earlier one."""
    torch.manual_seed(0)
    hyper = Hypernetwork(1, SIZES, 2, **_options("rnn"))
    rnn = hyper.hypernet
    n = rnn.chunk_embeddings.shape[0]
    assert n == -(-sum(i * o + o for i, o in SIZES) // 100)  # 100 weights a chunk, the last cut
    features = torch.cat([hyper.embedding.cos(), hyper.embedding.sin()], dim=-1)
    with torch.no_grad():
        before = rnn(features, torch.arange(2))
        rnn.chunk_embeddings[3] += 1.0
        after = rnn(features, torch.arange(2))
    changed = torch.nn.functional.pad((after != before).any(dim=0), (0, n * 100 - before.shape[1]))
    per_chunk = changed.view(n, 100).any(dim=1)
    assert not per_chunk[:3].any() and per_chunk[3:].all()


def _recurrent_learner(kind, **kw):
    torch.manual_seed(0)
    cfg = SACConfig(hidden_sizes=(16, 16), memory="gru", memory_hidden=16, batch_size_per_task=4, task_input=False,
                    trunk="hyper", head="hyper", hypernet=kind, hyper_embedding_dim=4, hyper_hidden=16,
                    hyper_chunk_size=200, hyper_chunk_embedding_dim=4, **kw)
    return make_learner(cfg, 3, 2, 2, torch.device("cpu"))


def _task0_generated(strategy):
    with torch.no_grad():
        return strategy.generated("actor", [0]).clone()


@pytest.mark.parametrize("kind", KINDS)
def test_the_output_regulariser_keeps_a_recurrent_policys_earlier_generated_weights(kind):
    """--method hnet on a generated memory, trunk and head: after task 0, training task 1 moves
    task 0's generated weights far less with beta than with beta = 0."""
    drift = {}
    for coef in (0.0, 1000.0):
        learner, replay = _recurrent_learner(kind), _replay()
        strategy = make_strategy(ContinualConfig(sequence="x", method="hnet", coef=coef), learner, [0, 1])
        assert len(strategy.generators("actor")) == 3  # memory, trunk, head
        rng = np.random.default_rng(0)
        for _ in range(5):
            learner.update(replay.sample(4, rng, [0]), [strategy])
        strategy.end_task(TaskContext(0, 2, (0,), (), 100, replay, rng))
        before = _task0_generated(strategy)
        learner.reset_optimizers()
        for _ in range(20):
            learner.update(replay.sample(4, rng, [1]), [strategy])
        drift[coef] = float((_task0_generated(strategy) - before).abs().max())
    assert drift[0.0] > 3 * drift[1000.0], drift


def test_growth_adds_capacity_for_a_new_task_without_changing_earlier_tasks_weights():
    learner, replay = _recurrent_learner("rnn", hyper_growth=True), _replay()
    strategy = make_strategy(ContinualConfig(sequence="x", method="hnet", coef=0.0), learner, [0, 1])
    rng = np.random.default_rng(0)
    strategy.start_task(TaskContext(0, 2, (0,), (), 100, replay, rng))
    for _ in range(3):
        learner.update(replay.sample(4, rng, [0]), [strategy])
    strategy.end_task(TaskContext(0, 2, (0,), (), 100, replay, rng))
    rnns = [h.hypernet for h in strategy.generators("actor")]
    before = _task0_generated(strategy)
    strategy.start_task(TaskContext(1, 2, (1,), (0,), 100, replay, rng))
    assert torch.equal(_task0_generated(strategy), before)  # growing changes no earlier task's weights
    for rnn in rnns:  # task 1's input map starts as task 0's, the only one trained from now on
        assert torch.equal(rnn.input_maps[1], rnn.input_maps[0])
        assert rnn.input_maps[1].requires_grad and not rnn.input_maps[0].requires_grad
        assert not rnn.hidden_map.requires_grad
    for module in (learner.critic, learner.critic_target):  # the critic grows too (hnet regularizes the actor)
        for hyper in (m for m in module.modules() if isinstance(m, Hypernetwork)):
            assert torch.equal(hyper.hypernet.input_maps[1], hyper.hypernet.input_maps[0])
            assert not hyper.hypernet.input_maps[0].requires_grad and not hyper.hypernet.hidden_map.requires_grad
    frozen = [(rnn.input_maps[0].clone(), rnn.hidden_map.clone()) for rnn in rnns]
    learner.reset_optimizers()
    for _ in range(3):
        learner.update(replay.sample(4, rng, [1]), [strategy])
    for rnn, (input_map, hidden_map) in zip(rnns, frozen):
        assert torch.equal(rnn.input_maps[0], input_map) and torch.equal(rnn.hidden_map, hidden_map)
        assert not torch.equal(rnn.input_maps[1], input_map)  # the new capacity trained


def test_the_fisher_of_generated_weights_matches_the_hand_derivation_on_a_generated_head():
    """continual.hnet_fisher: the Fisher with respect to task 0's generated output layer is the
    Gaussian policy's Fisher of an ordinary output layer holding those weights:
    F(W[j, d]) = E[h_j^2 / (sigma_d^2 + 1e-6)] for the mean's columns."""
    from continual.strategies.importance import FISHER_FLOOR, States
    from tests.test_continual import _features, _learner

    learner = _learner(head="hyper")
    strategy = make_strategy(ContinualConfig(sequence="x", method="hnet", hnet_fisher=True), learner, [0, 1])
    obs, task = torch.randn(20, 3), torch.zeros(20, dtype=torch.int64)
    fisher = strategy.generated_fisher("actor", 0, States((obs, task), (), torch.ones(20, 1)))
    head = learner.actor.net.head.generator
    with torch.no_grad():
        ((weight, bias),) = head.generate([0])
        h = _features(learner.actor.net, obs, task)[0]  # [B, H]
        _, log_std = learner.actor(obs, task)
        scale = 1 / (log_std.exp() ** 2 + 1e-6)
        hand = torch.einsum("bj,bd->jd", h ** 2, scale) / len(obs)
    assert fisher.shape == (weight.numel() + bias.numel(),)
    width, a = weight.shape[2], 2
    torch.testing.assert_close(fisher[:weight.numel()].view(width, 2 * a)[:, :a], hand.clamp_min(FISHER_FLOOR))
    # the regulariser now weighs each generated weight's drift by its Fisher
    strategy.targets["actor"][0] = strategy.generated("actor", [0])[0].detach() + 0.1
    strategy.fisher["actor"][0] = fisher
    torch.testing.assert_close(strategy.penalty("actor"), strategy.coef(0.01) * (0.01 * fisher).sum(), rtol=1e-4,
                               atol=1e-8)


def test_a_finished_tasks_embedding_stays_fixed_under_momentum_and_weight_decay():
    learner, replay = _recurrent_learner("mlp", actor_weight_decay=0.1), _replay()
    strategy = make_strategy(ContinualConfig(sequence="x", method="hnet", reset_optimizer=False), learner, [0, 1])
    rng = np.random.default_rng(0)
    for _ in range(3):
        learner.update(replay.sample(4, rng, [0]), [strategy])
    strategy.end_task(TaskContext(0, 2, (0,), (), 100, replay, rng))
    hypers = [m for m in learner.actor.modules() if isinstance(m, Hypernetwork)]
    before = [h.embedding.detach().clone() for h in hypers]
    for _ in range(3):  # Adam's momentum and its L2 term would move task 0's row; the strategy keeps it
        learner.update(replay.sample(4, rng, [1]), [strategy])
    for hyper, old in zip(hypers, before):
        assert torch.equal(hyper.embedding[0], old[0]) and not torch.equal(hyper.embedding[1], old[1])
