"""Command-line entry points and the actor/learner runtime."""
