"""Benchmark: Evidently data drift with and without sampling, and the monitoring window features.

1. ``data_drift`` (:mod:`recsys_assets.monitoring.monitors`, Evidently's DataDriftPreset) on two
   synthetic frames of ``--rows`` rows x ``--features`` columns (all but ``--categorical``
   numeric; seeded; the current frame has a few numeric columns shifted and one categorical
   column re-weighted, so the verdicts can be compared): the default sampling (``max_rows``
   20,000 per side) against the baseline without sampling (``max_rows=None``), in the same run.
   Wall seconds are the median of ``--repeats`` runs after one warm-up (Evidently's import and
   first call are timed apart); peak memory is the tracemalloc peak of one more, untimed run
   (Python and numpy allocations), and the process's peak RSS is printed at the end.
2. ``window_features`` on a 30-day window of the synthetic shop
   (:func:`recsys_assets.ingestion.synthetic.generate_events`), and ``data_drift`` /
   ``data_quality`` on the windows it gives (February as reference, March as current).
3. What drifts with no drift injected: ``data_drift`` between October and November of a
   365-day synthetic shop (features that grow with the shop's age drift anyway).

    python benchmarks/bench_drift.py [--rows 100000] [--features 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from common import machine, peak_rss_mib

from recsys_assets.ingestion.synthetic import SyntheticConfig, generate_events
from recsys_assets.monitoring.monitors import (
    MISSING_BY_DESIGN,
    data_drift,
    data_quality,
    window_features,
)

SHIFTED = 3  # numeric columns whose mean moves by 0.3 sd in the current frame


def synthetic_frame(rows: int, features: int, categorical: int, seed: int, drift: bool):
    """``rows`` x ``features`` columns: numeric ones of assorted shapes, then ``categorical``
    columns of 5-20 levels; with ``drift``, the first SHIFTED numeric columns move by 0.3 sd
    and the first categorical column's level weights change."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for j in range(features - categorical):
        kind = j % 3
        shift = 0.3 if drift and j < SHIFTED else 0.0
        if kind == 0:
            values = rng.normal(shift, 1.0, rows)
        elif kind == 1:
            values = rng.lognormal(shift, 0.8, rows)
        else:
            values = rng.poisson(3.0 + 3.0 * shift, rows).astype(np.float64)
        values[rng.random(rows) < 0.02] = np.nan  # a little missingness, as real features
        out[f"num_{j:02d}"] = values
    for j in range(categorical):
        levels = [f"L{v}" for v in range(5 + 5 * j)]
        weights = np.linspace(1.0, 2.0, len(levels))
        if drift and j == 0:
            weights = weights[::-1] ** 2
        out[f"cat_{j}"] = rng.choice(levels, rows, p=weights / weights.sum())
    return pd.DataFrame(out)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median wall seconds of ``repeats`` calls, all the times, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def traced_peak_mib(fn: Callable[[], Any]) -> float:
    """Peak traced allocation (MiB) during one call."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per side")
    parser.add_argument("--features", type=int, default=30, help="columns per frame")
    parser.add_argument("--categorical", type=int, default=4, help="of them categorical")
    parser.add_argument("--max-rows", type=int, default=20_000, help="default sampling")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shop-users", type=int, default=1_500, help="synthetic shop size")
    parser.add_argument("--shop-items", type=int, default=1_000)
    args = parser.parse_args()

    print(f"# bench_drift: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    import evidently

    print(f"evidently {evidently.__version__}, pandas {pd.__version__}, numpy {np.__version__}")

    # --- 1. data_drift: sampling vs none --------------------------------------------------------
    ref = synthetic_frame(args.rows, args.features, args.categorical, seed=1, drift=False)
    cur = synthetic_frame(args.rows, args.features, args.categorical, seed=2, drift=True)
    print(
        f"\nframes: {len(ref):,} + {len(cur):,} rows x {ref.shape[1]} columns "
        f"({args.features - args.categorical} numeric, {args.categorical} categorical); "
        f"drift injected in num_00..num_{SHIFTED - 1:02d} and cat_0"
    )
    started = time.perf_counter()
    data_drift(ref.head(500), cur.head(500))  # Evidently's import + first call
    print(
        f"warm-up (Evidently import + first call, 500 rows): {time.perf_counter() - started:.2f} s"
    )

    runs = {"default (max_rows 20,000)": args.max_rows, "baseline (no sampling)": None}
    medians = {}
    print(f"\n{'data_drift':<28}{'median s':>10}  {'runs s':<22}{'peak MiB':>9}  rows used")
    for label, max_rows in runs.items():
        med, times, result = timed(
            lambda m=max_rows: data_drift(ref, cur, max_rows=m), args.repeats
        )
        peak = traced_peak_mib(lambda m=max_rows: data_drift(ref, cur, max_rows=m))
        medians[label] = med
        runs_s = ", ".join(f"{t:.2f}" for t in times)
        used = f"{result.n_reference:,} + {result.n_current:,}"
        print(f"{label:<28}{med:>10.2f}  {runs_s:<22}{peak:>9.0f}  {used}")
        print(
            f"    drifted share {result.drifted_share:.3f}, dataset drift {result.dataset_drift},"
            f" drifted: {', '.join(result.drifted_columns) or '-'}"
        )
        methods = sorted({v["method"] for v in result.columns.values()})
        print(f"    methods: {'; '.join(methods)}")
    default, baseline = medians.values()
    print(
        f"speed-up of sampling: {baseline / default:.1f}x; target default < 10 s: "
        f"{'met' if default < 10 else 'NOT met'} ({default:.2f} s)"
    )

    # --- 2. window features of the synthetic shop ---------------------------------------------
    config = SyntheticConfig(n_users=args.shop_users, n_items=args.shop_items, days=90)
    started = time.perf_counter()
    events = generate_events(config)
    print(
        f"\nsynthetic shop: {args.shop_users:,} users, {args.shop_items:,} items, 90 days from "
        f"{config.start}: {len(events):,} events generated in {time.perf_counter() - started:.2f} s"
    )
    med, times, march = timed(
        lambda: window_features(events, "2024-03-01", "2024-03-31"), args.repeats
    )
    runs_s = ", ".join(f"{t:.3f}" for t in times)
    print(
        f"window_features 2024-03-01..03-31: {len(march):,} purchase lines x "
        f"{march.shape[1]} columns, median {med:.3f} s (runs {runs_s})"
    )
    february = window_features(events, "2024-01-31", "2024-03-01")
    med, times, result = timed(lambda: data_drift(february, march), args.repeats)
    print(
        f"data_drift Feb ({len(february):,}) vs Mar ({len(march):,}) window, "
        f"{len(result.columns)} columns: median {med:.2f} s; drifted share "
        f"{result.drifted_share:.3f}: {', '.join(result.drifted_columns) or '-'}"
    )
    med, times, quality = timed(
        lambda: data_quality(march, missing_ok=MISSING_BY_DESIGN), args.repeats
    )
    print(
        f"data_quality of the March window (figures only): median {med:.3f} s; "
        f"problems: {list(quality.problems) or 'none'}"
    )

    # --- 3. what drifts without injected drift: two late months of a year-old shop -------------
    steady = generate_events(
        SyntheticConfig(n_users=args.shop_users, n_items=args.shop_items, days=365)
    )
    october = window_features(steady, "2024-10-01", "2024-11-01")
    november = window_features(steady, "2024-11-01", "2024-12-01")
    result = data_drift(october, november)
    print(
        f"\nno injected drift, 365-day shop, Oct ({len(october):,}) vs Nov ({len(november):,}): "
        f"drifted share {result.drifted_share:.3f}: {', '.join(result.drifted_columns) or '-'}"
    )
    print(f"\nprocess peak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
