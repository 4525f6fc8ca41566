"""Rehearsals on real parts: the closed-loop simulation of a drifting synthetic shop
(``shoppers``, ``closed_loop``) and the incident drills (``drill``). They run Dagster jobs and the
service, so they sit above the domains and the definitions."""
