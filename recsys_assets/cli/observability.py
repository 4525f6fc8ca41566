"""The pipeline's own observability, read from the Dagster instance: ``metrics`` serves (or
prints) its Prometheus metrics, ``traces`` prints a run's OpenTelemetry spans. Dagster,
prometheus_client and the OpenTelemetry SDK load inside the commands, so that ``--help`` does
not pay for them."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

from recsys_assets.observability.telemetry import console_exporter
from recsys_assets.runs import prepare_dagster_home


def add_commands(commands: argparse._SubParsersAction) -> None:
    metrics_parser = commands.add_parser(
        "metrics", help="serve the pipeline's Prometheus metrics (runs, assets, checks, drift)"
    )
    metrics_parser.add_argument("--host", default="127.0.0.1")
    metrics_parser.add_argument("--port", type=int, default=9464)
    metrics_parser.add_argument("--once", action="store_true", help="print them once and exit")
    metrics_parser.set_defaults(handler=metrics)
    traces_parser = commands.add_parser(
        "traces", help="print a run's OpenTelemetry spans as JSON (trace id = run id)"
    )
    traces_parser.add_argument("run_id", help="the Dagster run id (or a unique prefix)")
    traces_parser.set_defaults(handler=traces)


def metrics(args: argparse.Namespace) -> int:
    """Serve the pipeline's Prometheus metrics, read from the Dagster instance at each scrape
    (``--once``: print them and exit)."""
    import dagster as dg

    from recsys_assets.defs.observability import pipeline_metrics

    prepare_dagster_home()
    instance = dg.DagsterInstance.get()
    if args.once:
        sys.stdout.write(pipeline_metrics.render(instance).decode())
        return 0
    home = os.environ["DAGSTER_HOME"]
    print(f"pipeline metrics of {home} on http://{args.host}:{args.port}/metrics", flush=True)
    # Ctrl-C stops it, even when a shell that started it in the background ignored SIGINT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        pipeline_metrics.serve(args.port, args.host, instance=instance)
    return 0


def traces(args: argparse.Namespace) -> int:
    """Print a run's trace (one JSON span per line) to stdout, whatever RECSYS_TRACING says."""
    import dagster as dg

    from recsys_assets.defs.observability.pipeline_traces import (
        find_run_id,
        run_spans,
        trace_id_for_run,
    )

    prepare_dagster_home()
    instance = dg.DagsterInstance.get()
    run_id = find_run_id(instance, args.run_id)
    if run_id is None:
        print(f"error: no single run matches {args.run_id!r}", file=sys.stderr)
        return 2
    spans = run_spans(instance, run_id)  # the run's root span first, then its steps in order
    console_exporter().export(spans)
    print(f"run {run_id}: {len(spans)} spans, trace id {trace_id_for_run(run_id)}", file=sys.stderr)
    return 0
