"""Releases: the promotion gate, the release ledger across environments, the canary
(routing, analysis, actions) and the A/B test on average order value."""
