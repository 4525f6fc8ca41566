"""Evaluation: the fixed offline protocol (temporal split, segments, bootstrap), the ranking
metrics, and the evaluation report. It comes before training in the flow because every model is
fitted against the split it defines."""
