"""Command line: ``python -m recsys_assets demo`` runs the pipeline end to end on local files;
``simulate`` runs the closed loop on the synthetic shop, ``loop`` prints its decisions.

Runs go through a persistent Dagster instance (``DAGSTER_HOME``, default ``.dagster_home/``),
so everything the demo did is visible afterwards in the UI that ``make dev`` opens.
"""

from __future__ import annotations

import argparse

from recsys_assets.cli import loop, observability, pipeline, rehearsals, releases, serving

# Each module adds its sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = (pipeline, serving, releases, loop, rehearsals, observability)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(commands)
    args = parser.parse_args(argv)
    return args.handler(args)
