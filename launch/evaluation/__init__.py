"""Evaluation beside training: the evaluator (evaluator.py: the protocol on a snapshot of the policy,
inline or in a process of its own) and the films it makes of its episodes (videos.py, eval.video)."""
