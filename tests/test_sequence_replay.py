"""Sequence replay (agents/sequence_replay.py) on hand-built episodes: every row's observation is
(episode id, step within the episode), so a window's real steps can be checked to be consecutive
steps of one episode."""

import numpy as np
import pytest
import torch

from agents.replay import MultiTaskReplay
from agents.sequence_replay import SequenceReplay

LENGTH = 16


def _stream_rows(replay, rng, episodes_per_stream: int, tasks=(0, 1), streams_per_task=3, chunk=7):
    """Interleave several envs per task (as lockstep actors do), in chunks; episode lengths vary.
    Returns {episode id: length}."""
    ids, lengths, plans = iter(range(10**6)), {}, []
    for task in tasks:
        for s in range(streams_per_task):
            for _ in range(episodes_per_stream):
                episode, length = next(ids), int(rng.integers(1, 40))
                lengths[episode] = length
                plans.append((task, task * 100 + s, episode, length))
    # each stream emits its episodes in order; streams interleave round by round
    queues = {}
    for task, stream, episode, length in plans:
        queues.setdefault(stream, []).extend((task, stream, episode, t, t == 0) for t in range(length))
    rows = []
    while any(queues.values()):
        for stream in sorted(queues):
            if queues[stream]:
                rows.append(queues[stream].pop(0))
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        task = np.array([r[0] for r in part])
        obs = np.array([[r[2], r[3]] for r in part], np.float32)
        next_obs = obs + np.array([0, 1], np.float32)
        replay.add(task, obs, np.zeros((len(part), 1), np.float32), obs[:, 1].copy(), next_obs,
                   np.zeros(len(part), np.float32), stream=np.array([r[1] for r in part]),
                   first=np.array([r[4] for r in part]))
    return lengths


def _check_windows(batch, lengths, length):
    obs, mask = batch.obs.numpy(), batch.mask.numpy()
    for w in range(len(obs)):
        real = int(mask[w].sum())
        assert mask[w, :real].all() and not mask[w, real:].any()  # ones, then padding
        episode, start = obs[w, 0]
        assert (obs[w, :real, 0] == episode).all()  # one episode
        np.testing.assert_array_equal(obs[w, :real, 1], start + np.arange(real))  # consecutive steps
        # a window ends early only at its episode's end
        assert real == length or start + real == lengths[int(episode)]
        assert bool(batch.first[w]) == (start == 0)


def test_windows_are_consecutive_steps_of_one_episode_masked_after_its_end():
    rng = np.random.default_rng(0)
    replay = SequenceReplay(2, 10_000, 2, 1, LENGTH)
    lengths = _stream_rows(replay, rng, episodes_per_stream=20)
    batch = replay.sample(64, np.random.default_rng(1))
    assert batch.obs.shape == (128, LENGTH, 2) and batch.mask.shape == (128, LENGTH)
    assert batch.action.shape == (128, LENGTH, 1)
    assert (batch.task[:64] == 0).all() and (batch.task[64:] == 1).all()  # task-balanced, contiguous
    _check_windows(batch, lengths, LENGTH)
    assert 0 < float(batch.mask.mean()) < 1  # some windows were cut at an episode's end
    # the fields travel together: reward was stored as the step index, next_obs as obs + (0, 1)
    real = batch.mask.bool()
    assert torch.equal(batch.reward[real], batch.obs[..., 1][real])
    assert torch.equal(batch.next_obs[real], (batch.obs + torch.tensor([0.0, 1.0]))[real])


def test_windows_are_cut_to_the_longest_real_one():
    """Episodes of 5 steps and 64-step windows: the batch is 5 steps long, nothing real is lost."""
    replay = SequenceReplay(1, 1000, 2, 1, 64)
    obs = np.array([[e, t] for e in range(20) for t in range(5)], np.float32)
    replay.add(np.zeros(100, int), obs, np.zeros((100, 1), np.float32), np.zeros(100, np.float32), obs,
               np.zeros(100, np.float32), stream=np.zeros(100, int), first=obs[:, 1] == 0)
    batch = replay.sample(50, np.random.default_rng(0))
    assert batch.obs.shape[1] == 5
    _check_windows(batch, dict.fromkeys(range(20), 5), 64)


def test_an_episode_still_running_is_sampled_up_to_its_newest_row():
    replay = SequenceReplay(1, 100, 2, 1, 8)
    obs = np.array([[7, t] for t in range(5)], np.float32)
    replay.add(np.zeros(5, int), obs, np.zeros((5, 1), np.float32), np.zeros(5, np.float32), obs,
               np.zeros(5, np.float32), stream=np.full(5, 3), first=np.arange(5) == 0)
    batch = replay.sample(200, np.random.default_rng(0))
    _check_windows(batch, {7: 5}, 8)
    # the next chunk continues the episode: windows now run through both chunks' rows
    more = np.array([[7, t] for t in range(5, 12)], np.float32)
    replay.add(np.zeros(7, int), more, np.zeros((7, 1), np.float32), np.zeros(7, np.float32), more,
               np.zeros(7, np.float32), stream=np.full(7, 3), first=np.zeros(7, bool))
    batch = replay.sample(200, np.random.default_rng(0))
    _check_windows(batch, {7: 12}, 8)
    assert int(batch.mask.sum(1).max()) == 8


def test_a_wrapped_ring_keeps_windows_within_live_episodes():
    """Capacity 50 rows per task, 10x that written: windows never reach an overwritten row, and a
    window whose episode's beginning was overwritten does not claim to start the episode."""
    rng = np.random.default_rng(2)
    replay = SequenceReplay(2, 50, 2, 1, 12)
    lengths = _stream_rows(replay, rng, episodes_per_stream=30, streams_per_task=2)
    assert replay.size.tolist() == [50, 50] and replay.allocated_rows(0) == 50
    for seed in range(5):
        _check_windows(replay.sample(32, np.random.default_rng(seed)), lengths, 12)


@pytest.mark.parametrize("obs_dim,action_dim,bound", [(39, 4, 1.02), (2, 2, 1.2)])
def test_memory_is_taken_as_used_and_costs_little_more_per_row_than_flat_replay(obs_dim, action_dim, bound):
    """Meta-World's rows: 340 bytes against 336; pointmass's: 36 against 32 (the issue's bound ~1.2x)."""
    flat = MultiTaskReplay(1, 1_000_000, obs_dim, action_dim)
    sequences = SequenceReplay(1, 1_000_000, obs_dim, action_dim, 64)
    rows = 3000
    for replay in (flat, sequences):
        for _ in range(2):
            replay.add(np.zeros(rows, int), np.zeros((rows, obs_dim), np.float32),
                       np.zeros((rows, action_dim), np.float32), np.zeros(rows, np.float32),
                       np.zeros((rows, obs_dim), np.float32), np.zeros(rows, np.float32),
                       **({"stream": np.zeros(rows, int), "first": np.zeros(rows, bool)}
                          if replay is sequences else {}))
    assert sequences.allocated_rows(0) == flat.allocated_rows(0) == 8192  # grown as used (4,096, then doubled)
    assert sequences.nbytes() / flat.nbytes() <= bound


def test_a_step_too_far_from_the_one_before_it_to_link_ends_the_window_and_is_not_an_episode_start():
    """Gaps are 2 bytes: an env whose next step arrives 65,535 or more rows later is not linked."""
    replay = SequenceReplay(1, 70_000, 1, 1, 4)
    far = SequenceReplay.UNKNOWN + 10

    def add(stream, first, n=1):
        replay.add(np.zeros(n, int), np.zeros((n, 1), np.float32), np.zeros((n, 1), np.float32),
                   np.zeros(n, np.float32), np.zeros((n, 1), np.float32), np.zeros(n, np.float32),
                   stream=np.full(n, stream), first=np.full(n, first))
    add(0, True)                   # stream 0's episode starts at row 0
    add(1, True, far - 1)          # another env's rows, one long episode
    add(0, False)                  # stream 0's next step, `far` rows after its first
    add(0, False)                  # and the one after it, linked again
    links = replay.links[0]
    assert links["next_gap"][0] == 0 and links["prev_gap"][far] == SequenceReplay.UNKNOWN
    assert links["prev_gap"][far + 1] == 1 and links["next_gap"][far] == 1
    slots, mask = replay._windows(0, np.array([0, far]), 4)
    assert mask.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0]]


def test_a_context_window_reads_zeros_before_a_step_too_far_to_link():
    from agents.context import ContextReplay

    replay = ContextReplay(1, 70_000, 1, 1, 2)
    far = ContextReplay.UNKNOWN + 10
    for stream, first, n in ((0, True, 1), (1, True, far - 1), (0, False, 1), (0, False, 1)):
        replay.add(np.zeros(n, int), np.ones((n, 1), np.float32), np.ones((n, 1), np.float32),
                   np.ones(n, np.float32), np.ones((n, 1), np.float32), np.zeros(n, np.float32),
                   stream=np.full(n, stream), first=np.full(n, first))
    _, valid = replay._history(0, np.array([far + 1]))
    assert valid.tolist() == [[False, True, True]]  # the row `far` back is not followed


def test_state_round_trips_and_the_same_generator_draws_the_same_windows():
    rng = np.random.default_rng(3)
    replay = SequenceReplay(2, 10_000, 2, 1, LENGTH)
    _stream_rows(replay, rng, episodes_per_stream=5)
    copy = SequenceReplay(2, 10_000, 2, 1, LENGTH)
    copy.load_state_dict(replay.state_dict())
    a, b = (r.sample(16, np.random.default_rng(4)) for r in (replay, copy))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_rows_without_streams_are_refused():
    replay = SequenceReplay(1, 100, 2, 1, 8)
    with pytest.raises(ValueError, match="stream"):
        replay.add(np.zeros(1, int), np.zeros((1, 2), np.float32), np.zeros((1, 1), np.float32),
                   np.zeros(1, np.float32), np.zeros((1, 2), np.float32), np.zeros(1, np.float32))


def test_context_windows_hold_the_steps_before_each_transition_and_zeros_before_its_episode():
    """3RL's context (agents/context.py: ContextReplay): for a sampled transition at step t, rows
    t-K .. t of its own episode as (a, r, s), zeros where the episode had not begun; the
    interleaved streams never mix."""
    from agents.context import ContextReplay

    for capacity in (10_000, 40):  # 40: the ring wraps; rows before the oldest stored one read as zeros
        replay = ContextReplay(2, capacity, 2, 1, 4)
        _stream_rows(replay, np.random.default_rng(5), episodes_per_stream=10)
        batch = replay.sample(100, np.random.default_rng(0))
        history = batch.history.numpy()  # [B, 5, a + r + s] = [B, 5, 1 + 1 + 2]
        assert history.shape == (200, 5, 4)
        for b in range(200):
            episode, t = batch.obs[b].tolist()
            assert history[b, -1, 2:].tolist() == [episode, t]  # the transition itself last
            for j in range(5):
                step = t - (4 - j)
                if step >= 0 and (capacity > 40 or history[b, j].any()):  # (a, r, s) of that step
                    assert history[b, j].tolist() == [0.0, step, episode, step]
                elif step < 0:
                    assert not history[b, j].any()
