"""Evaluation logs and (lifelong-learning) metrics over them."""
