"""The canary: sticky routing and its state file (``routing``), the analysis of the two
variants' figures into wait / roll back / widen / promote (``analysis``), and applying that decision
through the policy (``actions``)."""
