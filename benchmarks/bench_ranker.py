"""Benchmark: the XGBoost learning-to-rank ranker on UCI Online Retail (fixed protocol, K = 10).

Loads the validated events, splits at 2011-11-01 (:func:`temporal_split`), fits the ranker on the
training purchases (:func:`recsys_assets.training.ranker.fit_ranker`: cutoffs before the split, one
label window each) and ranks each evaluated customer's candidates with features as of the split.
Prints the candidate union's recall (the ceiling of the re-ranker), NDCG / MAP / Recall / HitRate
/ MRR at k of the ranker next to repeat-then-popular (the best baseline) computed in the same run,
fit time, peak memory (max RSS) and the top 15 feature importances (total gain).

``--feast`` also writes the feature tables into a scratch copy of ``feature_repo``, applies it
and joins the evaluation rows' features through the Feast offline store (DuckDB), timing it
against the pandas as-of join and counting differing values.

    python benchmarks/bench_ranker.py [--cutoffs 2011-10-01,2011-09-01,2011-08-01]
        [--rounds 300] [--eta 0.05] [--depth 6] [--k 10] [--feast]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import load_uci, machine, peak_rss_mib

from recsys_assets.core import constants as c
from recsys_assets.evaluation.protocol import bootstrap_ndcg, evaluate, temporal_split
from recsys_assets.features.tables import returns_from_quarantine
from recsys_assets.training.candidates import RepeatThenPopular
from recsys_assets.training.ranker import (
    RankerConfig,
    fit_ranker,
    via_feast,
    via_pandas,
)

METRICS = ("ndcg", "map", "recall", "hit_rate", "mrr")


def candidate_recall(cands: pd.DataFrame, relevant: pd.DataFrame) -> tuple[float, float]:
    """Mean per-customer share of relevant items among the candidates, and the pooled share."""
    keys = [c.USER_ID, c.ITEM_ID]
    hit = relevant.merge(cands[keys], on=keys, how="left", indicator=True)
    hit["hit"] = (hit["_merge"] == "both").astype(float)
    return float(hit.groupby(c.USER_ID)["hit"].mean().mean()), float(hit["hit"].mean())


def row(name: str, result: dict, extra: str = "") -> str:
    values = " | ".join(f"{result[m]:.3f}" for m in METRICS)
    return f"| {name} | {values} | {extra} |"


def feast_timing(ranker, pairs: pd.DataFrame) -> None:
    from recsys_assets.features.store import FeatureRepo, write_table
    from recsys_assets.features.tables import session_context_features
    from tests.conftest import copy_feature_repo

    with tempfile.TemporaryDirectory() as tmp:
        repo = FeatureRepo(copy_feature_repo(Path(tmp) / "feature_repo"))
        for name, table in ranker.tables.items():
            write_table(table, repo.table_path(name))
        known = ranker.generators["repeat"].data.pairs
        context = session_context_features(known.assign(device="web", country="unknown"))
        write_table(context, repo.table_path("session_context"))
        started = time.perf_counter()
        repo.apply()
        print(f"feast apply: {time.perf_counter() - started:.1f} s")
        store = repo.store()
        started = time.perf_counter()
        feast = via_feast(store, pairs)
        t_feast = time.perf_counter() - started
        started = time.perf_counter()
        local = via_pandas(ranker.tables, pairs)
        t_pandas = time.perf_counter() - started
        diff = 0
        for name in feast.columns:
            a, b = feast[name], local[name]
            if pd.api.types.is_float_dtype(a):
                same = np.isclose(a, b, equal_nan=True)
            else:
                same = (a.astype(object) == b.astype(object)) | (a.isna() & b.isna())
            diff += int((~np.asarray(same)).sum())
        print(
            f"feature join of {len(pairs):,} rows: feast (duckdb) {t_feast:.1f} s, "
            f"pandas merge_asof {t_pandas:.1f} s, differing values {diff}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoffs", default="2011-10-01,2011-09-01,2011-08-01")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--eta", type=float, default=0.05)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--objective", default="rank:ndcg")
    parser.add_argument("--n-repeat", type=int, default=100)
    parser.add_argument("--n-popularity", type=int, default=50)
    parser.add_argument("--n-knn", type=int, default=100)
    parser.add_argument("--n-als", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--feast", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    print(f"# bench_ranker: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    result = load_uci()
    events = result.valid
    returns = returns_from_quarantine(result.quarantined)
    split = temporal_split(events, c.DEFAULT_SPLIT)
    print(f"load + validate + split: {time.perf_counter() - started:.1f} s")
    print(f"split: {split.description}")

    base = RankerConfig()
    params = {**base.xgb_params, "eta": args.eta, "max_depth": args.depth}
    params["objective"] = args.objective
    config = dataclasses.replace(
        base,
        candidates=(
            ("repeat", args.n_repeat),
            ("popularity", args.n_popularity),
            ("item_knn", args.n_knn),
            ("als", args.n_als),
        ),
        cutoffs=tuple(args.cutoffs.split(",")),
        xgb_params=params,
        num_boost_round=args.rounds,
    )
    print(f"config: {config}")

    t0 = time.perf_counter()
    baseline = RepeatThenPopular().fit(split.train)
    base_recs = baseline.recommend(split.users, 100)
    base_eval = evaluate(base_recs, split, k=args.k)
    t_base = time.perf_counter() - t0

    ranker = fit_ranker(events, split.split_ts, config, returns=returns)
    print(f"ranker fit: {ranker.fit_seconds:.1f} s; training rows {ranker.train_stats}")

    t0 = time.perf_counter()
    cands = ranker.candidates(split.users)
    recall, share = candidate_recall(cands, split.relevant)
    per_user = cands.groupby(c.USER_ID).size()
    print(
        f"candidate union: {len(cands):,} rows, {per_user.mean():.0f} per customer (median "
        f"{per_user.median():.0f}); recall {recall:.3f} (pooled share {share:.3f})"
    )
    for name, n in config.candidates:
        own = cands.loc[cands[f"{name}_rank"].notna()]
        r, s = candidate_recall(own, split.relevant)
        print(f"  {name} top {n}: recall {r:.3f} (pooled {s:.3f})")
    base_recall, _ = candidate_recall(base_recs, split.relevant)
    print(f"  repeat_then_popular top 100 (reference): recall {base_recall:.3f}")

    t0 = time.perf_counter()
    recs = ranker.recommend(split.users, 100)
    t_rec = time.perf_counter() - t0
    rank_eval = evaluate(recs, split, k=args.k)
    band = bootstrap_ndcg(rank_eval["per_user"])
    base_band = bootstrap_ndcg(base_eval["per_user"])

    k = args.k
    print()
    print(f"| model | NDCG@{k} | MAP@{k} | Recall@{k} | HitRate@{k} | MRR@{k} | notes |")
    print("|:--|--:|--:|--:|--:|--:|:--|")
    base_note = f"NDCG p5-p95 {base_band['p5']:.3f}-{base_band['p95']:.3f}; fit+rec {t_base:.1f} s"
    note = (
        f"NDCG p5-p95 {band['p5']:.3f}-{band['p95']:.3f}; fit {ranker.fit_seconds:.1f} s, "
        f"recommend {t_rec:.1f} s"
    )
    print(row("repeat_then_popular", base_eval, base_note))
    print(row("xgb ranker", rank_eval, note))
    print(f"users evaluated: {rank_eval['n_users']}; coverage@{k}: {rank_eval['coverage']:.3f}")
    for segment, labels in rank_eval["segments"].items():
        parts = [
            f"{label} {v['ndcg']:.3f} (baseline "
            f"{base_eval['segments'][segment][label]['ndcg']:.3f})"
            for label, v in labels.items()
        ]
        print(f"NDCG@{k} by {segment}: " + "; ".join(parts))
    print()
    print("top 15 features (total gain, share):")
    importance = ranker.feature_importance()
    total = sum(importance.values()) or 1.0
    for name, value in list(importance.items())[:15]:
        print(f"  {name:28s} {value / total:.3f}")
    print(f"peak memory (max RSS): {peak_rss_mib():.0f} MiB")

    if args.feast:
        pairs = cands[[c.USER_ID, c.ITEM_ID]].assign(
            **{c.FEATURE_TS: pd.Timestamp(split.split_ts, tz="UTC")}
        )
        feast_timing(ranker, pairs)
    print(f"total wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
