"""Benchmark: ingest + validate the full UCI Online Retail dataset (541,909 rows).

Prints wall time, rows/s and peak memory for
- baseline: reading the parquet file into pandas, nothing else (the floor);
- ingest + validate: source mapping and typing, quarantine rules, pandera contracts and data
  versions for the whole file, as the assets do it (pure functions, no Dagster);
- dagster: the ingestion job over all 13 monthly partitions into a scratch DuckDB file,
  through a real (temporary) Dagster instance.

Each in-process figure is the median of --repeats runs. Peak memory is the process's peak
resident set size after the stage (it only grows, so stages run in the order above).

    python benchmarks/bench_ingest.py [--repeats 3] [--skip-dagster]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from common import CONFIG, peak_rss_mib  # puts the project on the path

from recsys_assets.config import variables


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-dagster", action="store_true")
    args = parser.parse_args()

    import pandas as pd

    from recsys_assets.core.versioning import data_version
    from recsys_assets.ingestion import sources
    from recsys_assets.ingestion.validation import (
        QuarantinedEventSchema,
        RawEventSchema,
        ValidatedEventSchema,
        contract_violations,
        split_valid_and_quarantined,
    )

    spec = sources.load_source_spec(CONFIG)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}")
    print(f"source:  {spec.path}\n")
    rows_out = []

    base_time, frame = timed(lambda: pd.read_parquet(spec.path), args.repeats)
    n = len(frame)
    rows_out.append(("baseline: read parquet", base_time, peak_rss_mib()))

    def ingest_and_validate():
        sources._EVENTS_CACHE.clear()  # measure a cold read every time
        events = sources.load_events(spec)
        result = split_valid_and_quarantined(events, spec)
        for schema, table in (
            (RawEventSchema, events),
            (ValidatedEventSchema, result.valid),
            (QuarantinedEventSchema, result.quarantined),
        ):
            assert contract_violations(schema, table).empty
            data_version(table)
        return result

    full_time, result = timed(ingest_and_validate, args.repeats)
    rows_out.append(("ingest + validate", full_time, peak_rss_mib()))
    assert len(result.valid) + len(result.quarantined) == n

    if not args.skip_dagster:
        with tempfile.TemporaryDirectory() as scratch:
            os.environ["DAGSTER_HOME"] = scratch
            os.environ[variables.WAREHOUSE.name] = str(Path(scratch) / "bench.duckdb")
            from recsys_assets.runs import prepare_dagster_home, run_ingestion

            prepare_dagster_home()
            started = time.perf_counter()
            runs = run_ingestion()
            dagster_time = time.perf_counter() - started
            assert all(run["ok"] for run in runs), runs
            assert sum(int(run["raw"]) for run in runs) == n
            rows_out.append((f"dagster: {len(runs)} partition runs", dagster_time, peak_rss_mib()))

    print(f"rows: {n:,} (validated {len(result.valid):,}, quarantined {len(result.quarantined):,})")
    print(f"{'stage':<28}{'wall s':>9}{'rows/s':>12}{'peak RSS MiB':>14}")
    for name, seconds, rss in rows_out:
        print(f"{name:<28}{seconds:>9.2f}{n / seconds:>12,.0f}{rss:>14.0f}")
    print(f"\ningest + validate costs {full_time / base_time:.1f}x the bare parquet read")


if __name__ == "__main__":
    main()
