"""What every worker process of a run shares: started with the run's signals ignored (actor
processes, launch/actors/local.py; the evaluator process, launch/evaluation/evaluator.py)."""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def signals_ignored_by_children():
    """Processes started inside ignore SIGINT and SIGTERM from birth (an ignored signal stays
    ignored across exec, and Python then installs no KeyboardInterrupt handler): Ctrl-C and a
    cluster's preemption are the learner's to handle (it stops its workers with SIGKILL), and a
    worker still importing when one arrives prints no traceback."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
