"""Serving benchmark: real HTTP against `bentoml serve` on loopback, baseline in the same run.

Run after `make demo` (it needs a promoted model, its bento and the Feast online store):

    .venv/bin/python benchmarks/bench_serving.py                 # the latest bento
    .venv/bin/python benchmarks/bench_serving.py --bento recommender:<version>

For each server, one after the other (the load generator shares the machine's cores): closed
loops at concurrency 1, 8 and 32, then an open loop at a fixed rate (200 requests/s for 60 s by
default; latency counted from each request's scheduled start). The baseline is a bare BentoML
service (benchmarks/bare_service) that returns a fixed list: the HTTP stack's own cost. The
recommender gets a different known customer per request, rotating over the customers of the
online store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import loadgen

from recsys_assets.config import get_settings, variables
from recsys_assets.config.settings import PROJECT_ROOT
from recsys_assets.core import constants as c

BENTOML = str(Path(sys.executable).parent / "bentoml")


def latest_bento(home: Path) -> str:
    """The newest bento of the recommender in the store."""
    versions = sorted(
        (home / "bentos" / c.BENTO_NAME).glob("*/bento.yaml"), key=lambda p: p.stat().st_mtime
    )
    if not versions:
        raise SystemExit(f"no {c.BENTO_NAME} bento under {home}: run make demo first")
    return f"{c.BENTO_NAME}:{versions[-1].parent.name}"


def workloads(url: str, payload, args: argparse.Namespace, label: str) -> list[loadgen.Result]:
    results = []
    for concurrency in args.concurrency:
        result = asyncio.run(
            loadgen.run_closed(
                url, payload, concurrency=concurrency, duration_s=args.duration,
                warmup_s=2.0, label=label,
            )
        )  # fmt: skip
        print(loadgen.format_row(result), flush=True)
        results.append(result)
    if args.rate > 0:
        result = asyncio.run(
            loadgen.run_open(
                url, payload, rate=args.rate, duration_s=args.rate_duration, warmup_s=2.0,
                label=label,
            )
        )  # fmt: skip
        print(loadgen.format_row(result), flush=True)
        results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bento", help="bento tag (default: the newest recommender bento)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per closed loop")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s")
    parser.add_argument("--rate-duration", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2, help="service worker processes")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    args.concurrency = [int(x) for x in args.concurrency.split(",")]

    settings = get_settings()
    home = Path(os.environ.get(variables.BENTOML_HOME.name, settings.bentoml_home))
    # A bento runs from its own folder: give it absolute paths to this environment's stores.
    env = {
        variables.BENTOML_HOME.name: str(home.resolve()),
        "BENTOML_DO_NOT_TRACK": "true",
        variables.FEATURE_REPO.name: str(settings.feature_repo),
        variables.FEEDBACK_LOG.name: str(settings.feedback_log),
        variables.SERVICE_WORKERS.name: str(args.workers),
    }
    bento = args.bento or latest_bento(home)
    profile = settings.feature_repo / "data" / "customer_profile.parquet"
    customers = sorted(
        pd.read_parquet(profile, columns=[c.USER_ID])[c.USER_ID].astype(str).unique()
    )
    print(f"# bench_serving: {pd.Timestamp.now(tz='UTC').isoformat(timespec='seconds')}")
    print(loadgen.facts())
    print(
        f"event loop: {loadgen.install_uvloop()}; bento {bento}; {len(customers):,} customers; "
        f"recommender workers {args.workers} (the bare service has 1)"
    )
    print(f"workload: closed loops c={args.concurrency} x {args.duration:g} s, open loop "
          f"{args.rate:g}/s x {args.rate_duration:g} s; 2 s warm-up each")  # fmt: skip

    results: list[loadgen.Result] = []
    servers = [] if args.skip_baseline else [("bare", "benchmarks.bare_service.service:Bare")]
    servers.append(("recommender", bento))
    for label, target in servers:
        port = loadgen.free_port()
        command = [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)]
        url = f"http://127.0.0.1:{port}/recommend"

        def payload(i: int) -> dict:
            return {"customer_id": customers[(i * 7919) % len(customers)], "k": c.DEFAULT_K}

        print(f"\n## {label}: {' '.join(command[1:])}", flush=True)
        with loadgen.serve(command, port, env=env, cwd=PROJECT_ROOT, timeout_s=180):
            results += workloads(url, payload, args, label)
    print()
    loadgen.print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
