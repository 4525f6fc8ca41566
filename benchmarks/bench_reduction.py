"""Benchmark: full vs reduced retraining of the XGBoost ranker on UCI Online Retail (K = 10).

One run compares the default ranker (:func:`recsys_assets.training.ranker.fit_ranker`, every
purchase before 2011-11-01, 3 cutoffs, 300 rounds) with reduced retraining variants
(:mod:`recsys_assets.training.reduction`). Each variant runs in its own subprocess, one after the
other, so its peak RSS is its own; every child loads and validates the data the same way (the
RSS after loading is printed as the floor). Timed: data preparation + fit (history reduction,
training set, feature selection, booster, serving generators), not the load or the evaluation.

Variants that retrain "a month later" first build, untimed, the previous production model: the
default ranker at 2011-10-01 (cutoffs 09-01, 08-01, 07-01), keeping its labelled cutoffs. What
they may reuse from it: its closed cutoffs, its serving generators (fitted on the purchases
before 2011-10-01: the generators of the new 2011-10-01 cutoff), its feature importance and its
booster (warm start).

- ``scratch``: full history, 30 random negatives per query (dropped before the join), features
  selected with a 50-round first fit (timed), 100 rounds at eta 0.15, nothing reused;
- ``incremental``: as ``scratch``, reusing the previous model's closed cutoffs and generators,
  features selected with its importance;
- ``warm_start`` (the ``ReductionConfig`` defaults): only the new cutoff (previous generators,
  30 random negatives per query), 100 more rounds at eta 0.05 on the previous booster;
- ``reduced_history``: as ``scratch`` on the reduced history (window + decayed sample).

    python benchmarks/bench_reduction.py [--variants full,scratch,...] [--k 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import resource
import subprocess
import sys
import time

import pandas as pd
from common import load_uci, machine, peak_rss_mib

from recsys_assets.core import constants as c
from recsys_assets.evaluation.protocol import evaluate, temporal_split
from recsys_assets.features.tables import returns_from_quarantine
from recsys_assets.training.ranker import (
    Ranker,
    RankerConfig,
    feature_columns,
    fit_ranker,
    make_generators,
    reusable_cutoffs,
    training_set,
)
from recsys_assets.training.reduction import (
    ReductionConfig,
    fit_reduced_ranker,
    quick_importance,
    reduce_history,
    reduced_training_frame,
    select_features,
)

VARIANTS = ("full", "scratch", "incremental", "warm_start", "reduced_history")


def previous_model(
    events: pd.DataFrame, split_ts: pd.Timestamp, config: RankerConfig, returns: pd.DataFrame
) -> tuple[Ranker, dict]:
    """The production model of a month earlier (``fit_ranker``'s steps, keeping the labelled
    cutoffs) and the cutoffs of it a retraining at ``split_ts`` may reuse."""
    import xgboost as xgb

    from recsys_assets.training.ranker import train_purchases
    from recsys_assets.training.reduction import _dmatrix

    split = split_ts - pd.DateOffset(months=1)
    earlier = tuple((split - pd.DateOffset(months=i)).strftime("%Y-%m-%d") for i in (1, 2, 3))
    prev_config = dataclasses.replace(config, cutoffs=earlier)
    cache: dict = {}
    frame, tables = training_set(events, split, prev_config, returns=returns, cutoff_rows=cache)
    features = feature_columns(config.generator_names())
    booster = xgb.train(
        prev_config.booster_params(),
        _dmatrix(frame, features),
        num_boost_round=prev_config.num_boost_round,
    )
    purchases = train_purchases(events, split)
    generators = {n: g.fit(purchases) for n, g in make_generators(config).items()}
    ranker = Ranker(prev_config, generators, tables, booster, features, pd.Timestamp(split))
    return ranker, reusable_cutoffs(cache, split, config.label_days)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads): less sensitive than the
    wall time to other jobs on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(name: str, k: int) -> dict:
    result = load_uci()
    events = result.valid
    returns = returns_from_quarantine(result.quarantined)
    split = temporal_split(events, c.DEFAULT_SPLIT)
    rss_loaded = peak_rss_mib()
    config = RankerConfig()
    rconf = ReductionConfig()
    out: dict = {"variant": name, "rss_after_load_mib": round(rss_loaded)}
    out["history_rows"] = int((events[c.EVENT_TS] < split.split_ts).sum())
    all_features = feature_columns(config.generator_names())
    if name == "full":
        cpu = cpu_seconds()
        ranker = fit_ranker(events, split.split_ts, config, returns=returns)
        seconds = ranker.fit_seconds
    elif name in ("scratch", "reduced_history"):
        cold = dataclasses.replace(rconf, warm_start=False)
        started, cpu = time.perf_counter(), cpu_seconds()
        train_events = events
        if name == "reduced_history":
            train_events, report = reduce_history(events, split.split_ts, rconf)
            out["history_report"] = report
            out["history_rows"] = len(train_events)
        rows: dict = {}
        frame, tables = reduced_training_frame(
            train_events, split.split_ts, config, max_negatives=cold.max_negatives,
            seed=cold.seed, returns=returns, report=rows,
        )  # fmt: skip
        importance = quick_importance(frame, all_features, config)
        features, out["feature_report"] = select_features(frame, all_features, importance, cold)
        ranker = fit_reduced_ranker(
            train_events, split.split_ts, config, reduction=cold, features=features,
            returns=returns, prepared=(frame, tables),
        )  # fmt: skip
        seconds = time.perf_counter() - started
        out["candidate_rows"] = rows["candidate_rows"]
    elif name in ("incremental", "warm_start"):
        previous, reused = previous_model(events, pd.Timestamp(split.split_ts), config, returns)
        out["reused_cutoffs"] = sorted(str(t.date()) for t in reused)
        started, cpu = time.perf_counter(), cpu_seconds()
        if name == "warm_start":
            ranker = fit_reduced_ranker(
                events, split.split_ts, config, reduction=rconf, returns=returns,
                previous=previous,
            )  # fmt: skip
        else:
            cold = dataclasses.replace(rconf, warm_start=False)
            frame, tables = reduced_training_frame(
                events, split.split_ts, config, max_negatives=cold.max_negatives,
                seed=cold.seed, returns=returns, cutoff_rows=dict(reused),
                generators={previous.split_ts: previous.generators},
            )  # fmt: skip
            importance = previous.feature_importance()
            features, out["feature_report"] = select_features(frame, all_features, importance, cold)
            ranker = fit_reduced_ranker(
                events, split.split_ts, config, reduction=cold, features=features,
                returns=returns, prepared=(frame, tables),
            )  # fmt: skip
        seconds = time.perf_counter() - started
    else:
        raise SystemExit(f"unknown variant {name!r}; expected one of {VARIANTS}")
    cpu = cpu_seconds() - cpu
    out["train_stats"] = {
        key: ranker.train_stats.get(key) for key in ("cutoffs", "warm_start", "rounds", "trees")
    }
    recs = ranker.recommend(split.users, 100)
    ev = evaluate(recs, split, k=k)
    out.update(
        seconds=round(seconds, 1),
        cpu_seconds=round(cpu, 1),
        training_rows=int(ranker.train_stats["rows"]),
        features=len(ranker.features),
        ndcg=round(float(ev["ndcg"]), 4),
        map=round(float(ev["map"]), 4),
        recall=round(float(ev["recall"]), 4),
        peak_rss_mib=round(peak_rss_mib()),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="full,scratch,incremental,warm_start")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.k)))
        return

    started = time.perf_counter()
    print(f"# bench_reduction: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"reduction config (defaults): {ReductionConfig()}")
    names = args.variants.split(",")
    if names[0] != "full":
        raise SystemExit("the first variant must be 'full' (the baseline of the speed-up)")
    results = []
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, "--k", str(args.k)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{name} failed:\n{proc.stderr[-3000:]}")
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(f"\n## {name}")
        for key in ("reused_cutoffs", "train_stats", "history_report", "feature_report"):
            if key in res:
                print(f"{key}: {json.dumps(res[key])}")
    full = results[0]
    k = args.k
    print()
    print(
        f"| variant | prep+fit s | speed-up | CPU s | CPU speed-up | peak RSS MiB (after load) | "
        f"history rows | "
        f"training rows | features | NDCG@{k} | rel. NDCG | MAP@{k} | Recall@{k} |"
    )
    print("|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        speed = full["seconds"] / r["seconds"]
        cpu_speed = full["cpu_seconds"] / r["cpu_seconds"]
        rel = (r["ndcg"] - full["ndcg"]) / full["ndcg"] * 100
        print(
            f"| {r['variant']} | {r['seconds']:.1f} | {speed:.2f}x | {r['cpu_seconds']:.1f} | "
            f"{cpu_speed:.2f}x | {r['peak_rss_mib']} "
            f"({r['rss_after_load_mib']}) | {r['history_rows']:,} | {r['training_rows']:,} | "
            f"{r['features']} | {r['ndcg']:.4f} | {rel:+.1f}% | {r['map']:.4f} | "
            f"{r['recall']:.4f} |"
        )
    print(f"total wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
