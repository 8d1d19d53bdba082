"""Agents: networks, learners (SAC), replay."""
