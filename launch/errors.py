"""User errors: bad flags, names, files. The CLI prints them as one line and exits with code 2.
A run whose learner diverges (a non-finite loss or weights) stops with TrainingDiverged: one line,
exit code 3, and no checkpoint written after the divergence."""


class UserError(Exception):
    pass


class TrainingDiverged(Exception):
    pass


class Preempted(Exception):
    """SIGTERM (a cluster's preemption): the run stopped after its current update round with a
    checkpoint at the current step. The CLI prints one line and exits with code 143."""
