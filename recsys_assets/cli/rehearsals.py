"""Rehearsals on the synthetic shop: ``simulate`` runs the closed loop (drift, retraining,
recovery), ``drill`` stages a faulty challenger in a canary and watches it rolled back. Both live
in :mod:`recsys_assets.simulation` (numpy and pandas), loaded inside the commands so that
``--help`` does not pay for them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    simulate_parser = commands.add_parser(
        "simulate", help="run the synthetic shop against the service: drift, retraining, recovery"
    )
    simulate_parser.add_argument("--small", action="store_true", help="the test's small plan")
    simulate_parser.add_argument("--workdir", help="workspace (default data/simulation/)")
    simulate_parser.add_argument("--days", type=int, help="simulated days after the history")
    simulate_parser.add_argument("--drift-day", type=int, help="day the drift starts (0-based)")
    simulate_parser.add_argument("--shoppers-per-day", type=int, help="lists served per day")
    simulate_parser.add_argument("--port", type=int, help="the service's first port")
    simulate_parser.set_defaults(handler=simulate)
    drill_parser = commands.add_parser(
        "drill", help="stage a faulty challenger in a canary: detection and automatic rollback"
    )
    drill_parser.add_argument(
        "--fault", choices=("slow", "bad-model"), default="slow",
        help="slow: the champion made slower by the drill knob; bad-model: the champion with "
        "candidates misjoined across customers (caught on click-through and conversion)",
    )  # fmt: skip
    drill_parser.add_argument(
        "--delay-ms", type=float, help="the slow challenger's delay (default 60)"
    )
    drill_parser.add_argument("--share", type=float, default=0.5, help="challenger's share")
    drill_parser.add_argument("--interval", type=float, default=5.0, help="analysis cadence (s)")
    drill_parser.add_argument("--port", type=int, default=3071)
    drill_parser.add_argument("--workdir", help="scratch folder (default data/drill)")
    drill_parser.set_defaults(handler=drill)


def simulate(args: argparse.Namespace) -> int:
    """Run the closed-loop simulation (recsys_assets/simulation/closed_loop.py) and print its
    results."""
    from recsys_assets.simulation.closed_loop import (
        DEFAULT_WORKDIR,
        Simulation,
        SimulationPlan,
        Workspace,
        print_summary,
    )

    plan = SimulationPlan.small() if args.small else SimulationPlan()
    overrides = {k: v for k, v in vars(args).items() if k in plan.__dataclass_fields__}
    plan = SimulationPlan(
        **{**plan.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    )
    workspace = Workspace(Path(args.workdir or DEFAULT_WORKDIR).resolve())
    workspace.create(plan)
    print(f"simulation: {plan}")
    print(f"workspace:  {workspace.root}")
    summary = Simulation(plan, workspace).run()
    print_summary(summary)
    return 0


def drill(args: argparse.Namespace) -> int:
    """Stage a faulty challenger (slow, or a bad model) in a canary and watch the system roll
    it back on its own."""
    from recsys_assets.simulation.drill import (
        DEFAULT_WORKDIR,
        SLOW,
        Drill,
        DrillPlan,
        print_summary,
        write_summary,
    )

    if args.fault == SLOW:
        delay_ms = DrillPlan.delay_ms if args.delay_ms is None else args.delay_ms
    elif args.delay_ms is None:
        delay_ms = 0.0  # the bad model answers at the champion's speed
    else:
        print(f"drill failed: --delay-ms is for --fault {SLOW} only", file=sys.stderr)
        return 2
    plan = DrillPlan(
        fault=args.fault, delay_ms=delay_ms, share=args.share, interval_s=args.interval,
        port=args.port,
    )  # fmt: skip
    workdir = Path(args.workdir) if args.workdir else DEFAULT_WORKDIR
    try:
        summary = Drill(plan, workdir).run()
    except RuntimeError as error:
        print(f"drill failed: {error}", file=sys.stderr)
        return 1
    print_summary(summary)
    print(f"report: {write_summary(summary, workdir)}")
    return 0 if summary["rolled_back"] else 1
