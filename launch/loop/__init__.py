"""The training loop: the trainer (trainer.py: actors, evaluation, logging, checkpoints on step
boundaries) and the learner's side of it (learning.py: the learner, its hooks, replay, stages)."""
