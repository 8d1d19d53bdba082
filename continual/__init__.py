"""Continual learning: task schedules and the strategies that fight forgetting."""
