"""Continual learning: task schedules and forgetting-aware regularizers (see the continual issue)."""
