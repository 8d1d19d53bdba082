"""SIGTERM as a request to stop: clusters preempt jobs with SIGTERM and a grace period (torchrun's
agent forwards it to every rank and waits 30 s before SIGKILL). While a trainer runs, SIGTERM
only sets a flag; the training loop reads it once per iteration, every rank learns of any
rank's request in the same all-gather (launch/distributed/ranks.py: sync_counts), and all ranks then
finish the iteration's update round, average (local SGD), write a checkpoint at the current
step and stop (launch/loop/trainer.py). Actor and evaluator processes ignore SIGTERM from birth
(launch/actors/local.py): the learner shuts them down."""

from __future__ import annotations

import contextlib
import signal

_requested = False


def requested() -> bool:
    return _requested


def _request(signum, frame) -> None:
    global _requested
    _requested = True


@contextlib.contextmanager
def sigterm_requests_stop():
    """Within this block SIGTERM sets the flag instead of killing the process."""
    global _requested
    _requested = False
    previous = signal.signal(signal.SIGTERM, _request)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
