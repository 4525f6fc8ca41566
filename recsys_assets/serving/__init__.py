"""Serving: the model the service runs (precomputed candidates, online features, ranking),
the BentoML model store as registry, and the served-recommendations log."""
