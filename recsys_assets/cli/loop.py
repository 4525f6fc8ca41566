"""What the loop did: ``loop`` prints its decisions and releases with MTTD / MTTR, ``timeline``
merges them with the access decisions and the Dagster runs. The loop log and the timeline read
with pandas, and the runs with Dagster: they load inside the commands, so that ``--help`` does
not pay for them."""

from __future__ import annotations

import argparse
import json

from recsys_assets.access.control import control_audit_path
from recsys_assets.access.policy import audit_log_path
from recsys_assets.config import get_settings
from recsys_assets.runs import prepare_dagster_home


def add_commands(commands: argparse._SubParsersAction) -> None:
    loop_parser = commands.add_parser(
        "loop", help="print the loop's decisions and releases, and MTTD / MTTR / velocity"
    )
    loop_parser.add_argument("--kind", action="append", help="only this event kind (repeatable)")
    loop_parser.add_argument("--last", type=int, help="only the last N events")
    loop_parser.set_defaults(handler=loop_log)
    timeline_parser = commands.add_parser(
        "timeline", help="loop events, access decisions and pipeline runs as one timeline"
    )
    timeline_parser.add_argument("--since", help="ISO time: drop what came before")
    timeline_parser.add_argument("--last", type=int, default=0, help="only the newest N")
    timeline_parser.add_argument("--json", action="store_true", help="JSON instead of lines")
    timeline_parser.set_defaults(handler=timeline)


def loop_log(args: argparse.Namespace) -> int:
    """Print the loop's event log (decisions with their reasons, releases) and its KPIs."""
    from recsys_assets.monitoring import loop

    settings = get_settings()
    events = loop.LoopLog(settings.loop_log).read(args.kind or None)
    print(f"loop log: {settings.loop_log} ({len(events)} events)")
    for event in events[-args.last :] if args.last else events:
        if event["kind"] == loop.DECISION:
            verdict = "FIRE" if event.get("fire") else "hold"
            detail = f"{verdict}: {event.get('reason')}"
        else:
            shown = ("model_version", "tag", "bento", "day", "reasons", "port")
            detail = ", ".join(f"{k} {event[k]}" for k in shown if k in event)
        print(f"  {event['ts'][:19]}  {event['kind']:<19}{detail}")
    figures = loop.kpis(loop.LoopLog(settings.loop_log).read())

    def seconds(block: dict) -> str:
        mean = block["mean_s"]
        return "-" if mean is None else f"{mean:.0f} s (mean of {block['count']})"

    print(
        f"incidents {figures['incidents']} (open {figures['open_incidents']}, refused by the gate "
        f"{figures['refused_by_gate']}); MTTD {seconds(figures['mttd'])}; "
        f"MTTR {seconds(figures['mttr'])}; deployment {seconds(figures['deployment'])}"
    )
    return 0


def timeline(args: argparse.Namespace) -> int:
    """Print one timeline of the environment: loop events, control-plane and service access
    decisions (the service's allows counted), and Dagster runs, oldest first."""
    import dagster as dg

    from recsys_assets.monitoring import loop
    from recsys_assets.monitoring import timeline as tl

    settings = get_settings()
    prepare_dagster_home()
    entries = tl.timeline(
        loop_events=loop.LoopLog(settings.loop_log).read(),
        control_audit=tl.read_jsonl(control_audit_path(settings.loop_log)),
        access_audit=tl.read_jsonl(
            audit_log_path(settings.feedback_log), tail_bytes=tl.ACCESS_TAIL_BYTES
        ),
        runs=tl.dagster_runs(dg.DagsterInstance.get()),
        since=args.since,
    )
    shown = entries[-args.last :] if args.last else entries
    if args.json:
        print(json.dumps([e.as_dict() for e in shown], indent=2))
        return 0
    print(f"timeline of {settings.environment.value}: {len(entries)} entries")
    for entry in shown:
        who = f" [{entry.subject}]" if entry.subject else ""
        print(f"  {entry.ts[:23]}  {entry.source:<8} {entry.kind:<24}{who} {entry.summary}")
    return 0
