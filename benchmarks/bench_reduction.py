"""Benchmark: full vs reduced retraining of the XGBoost ranker on UCI Online Retail (K = 10).

One run compares the default ranker (:func:`recsys_assets.lib.ranking.fit_ranker`, every
purchase before 2011-11-01) with reduced retraining variants (:mod:`recsys_assets.lib.reduction`:
history window + decayed order sample, inactive customers and same-day duplicates dropped,
negatives down-sampled per query, feature selection). Each variant runs in its own subprocess,
one after the other, so its peak RSS is its own; every child loads and validates the data the
same way (the RSS after loading is printed as the floor). Timed: data preparation + fit
(history reduction, training set, feature selection, booster, serving generators), not the
load or the evaluation. Feature selection takes its importance (total gain) from the full
model fitted first in the same run, standing for the previous production model.

    python benchmarks/bench_reduction.py [--variants full,reduced,...] [--k 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import load_uci, machine, peak_rss_mib

from recsys_assets import constants as c
from recsys_assets.lib.evaluation import evaluate, temporal_split
from recsys_assets.lib.features import returns_from_quarantine
from recsys_assets.lib.ranking import (
    RankerConfig,
    feature_columns,
    fit_ranker,
    reusable_cutoffs,
    training_set,
)
from recsys_assets.lib.reduction import (
    ReductionConfig,
    fit_reduced_ranker,
    reduce_history,
    select_features,
)

# name -> (reduce history?, ReductionConfig overrides, select features?)
VARIANTS: dict[str, tuple[bool, dict, bool]] = {
    "full": (False, {}, False),
    "reduced": (True, {}, True),
    "reduced_top_negatives": (True, {"negatives": "top"}, True),
    "rows_features": (False, {}, True),
    "rows_only": (False, {}, False),  # full history and features, 50 random negatives/query
    # rows_features, reusing the cutoffs a retraining a month earlier had already built
    "incremental": (False, {}, True),
    "history_only": (True, {"max_negatives": None}, False),
    "reduced_neg30_top15": (True, {"max_negatives": 30, "top_features": 15}, True),
}


def child(name: str, k: int, importance_path: Path) -> dict:
    result = load_uci()
    events = result.valid
    returns = returns_from_quarantine(result.quarantined)
    split = temporal_split(events, c.DEFAULT_SPLIT)
    rss_loaded = peak_rss_mib()
    config = RankerConfig()
    out: dict = {"variant": name, "rss_after_load_mib": round(rss_loaded)}
    if name == "full":
        ranker = fit_ranker(events, split.split_ts, config, returns=returns)
        importance_path.write_text(json.dumps(ranker.feature_importance()))
        seconds, rows = ranker.fit_seconds, ranker.train_stats["rows"]
        out["history_rows"] = int((events[c.EVENT_TS] < split.split_ts).sum())
    else:
        do_history, overrides, do_select = VARIANTS[name]
        rconf = dataclasses.replace(ReductionConfig(), **overrides)
        started = time.perf_counter()
        train_events = events
        if do_history:
            train_events, report = reduce_history(events, split.split_ts, rconf)
            out["history_report"] = report
        out["history_rows"] = len(train_events.loc[train_events[c.EVENT_TS] < split.split_ts])
        cutoff_rows: dict = {}
        if name == "incremental":
            # The previous retraining, a month earlier (not timed): its closed cutoffs carry over.
            previous_split = split.split_ts - pd.DateOffset(months=1)
            earlier = tuple(
                (previous_split - pd.DateOffset(months=i)).strftime("%Y-%m-%d") for i in (1, 2, 3)
            )
            previous = dataclasses.replace(config, cutoffs=earlier)
            training_set(events, previous_split, previous, returns=returns, cutoff_rows=cutoff_rows)
            cutoff_rows = reusable_cutoffs(cutoff_rows, previous_split, config.label_days)
            out["reused_cutoffs"] = sorted(str(t.date()) for t in cutoff_rows)
            started = time.perf_counter()
        prepared = training_set(
            train_events, split.split_ts, config, returns=returns, cutoff_rows=cutoff_rows
        )
        features = feature_columns(config.generator_names())
        if do_select:
            importance = json.loads(importance_path.read_text())
            features, freport = select_features(prepared[0], features, importance, rconf)
            out["feature_report"] = freport
        ranker = fit_reduced_ranker(
            train_events,
            split.split_ts,
            config,
            features=features,
            max_negatives=rconf.max_negatives,
            negatives=rconf.negatives,
            seed=rconf.seed,
            returns=returns,
            prepared=prepared,
        )
        seconds = time.perf_counter() - started
        rows = ranker.train_stats["rows"]
    recs = ranker.recommend(split.users, 100)
    ev = evaluate(recs, split, k=k)
    out.update(
        seconds=round(seconds, 1),
        training_rows=int(rows),
        features=len(ranker.features),
        ndcg=round(float(ev["ndcg"]), 4),
        map=round(float(ev["map"]), 4),
        recall=round(float(ev["recall"]), 4),
        peak_rss_mib=round(peak_rss_mib()),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="full,reduced,rows_features,history_only")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--importance", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.k, Path(args.importance))))
        return

    started = time.perf_counter()
    print(f"# bench_reduction: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"reduction config (defaults): {ReductionConfig()}")
    names = args.variants.split(",")
    if names[0] != "full":
        raise SystemExit("the first variant must be 'full' (its importance feeds the selection)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        imp = Path(tmp) / "importance.json"
        for name in names:
            cmd = [sys.executable, __file__, "--child", name, "--importance", str(imp)]
            cmd += ["--k", str(args.k)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"{name} failed:\n{proc.stderr[-3000:]}")
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(res)
            print(f"\n## {name}")
            for key in ("history_report", "feature_report"):
                if key in res:
                    print(f"{key}: {json.dumps(res[key])}")
    full = results[0]
    k = args.k
    print()
    print(
        f"| variant | prep+fit s | speed-up | peak RSS MiB (after load) | history rows | "
        f"training rows | features | NDCG@{k} | rel. NDCG | MAP@{k} | Recall@{k} |"
    )
    print("|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        speed = full["seconds"] / r["seconds"]
        rel = (r["ndcg"] - full["ndcg"]) / full["ndcg"] * 100
        print(
            f"| {r['variant']} | {r['seconds']:.1f} | {speed:.2f}x | {r['peak_rss_mib']} "
            f"({r['rss_after_load_mib']}) | {r['history_rows']:,} | {r['training_rows']:,} | "
            f"{r['features']} | {r['ndcg']:.4f} | {rel:+.1f}% | {r['map']:.4f} | "
            f"{r['recall']:.4f} |"
        )
    print(f"total wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
