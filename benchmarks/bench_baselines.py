"""Benchmark: the candidate generators on UCI Online Retail under the fixed evaluation protocol.

Loads the validated events (the same rules as the assets), splits them at 2011-11-01
(:func:`recsys_assets.evaluation.protocol.temporal_split`), fits every generator on the training
purchases, recommends the top ``--n`` (100) items to each evaluated customer (a purchase in both
periods) and prints, per generator:

- NDCG, MAP, Recall, HitRate and MRR at ``--k`` (10), with a bootstrap 5-95% band of NDCG;
- coverage@k (share of the training catalogue in some top-k) and the revenue proxy (test-period
  money the customers spent on items of their top k, in the source currency: GBP for UCI);
- fit and recommend wall time (seconds; recommend = all evaluated customers, top n);
- candidate recall@n: the mean share of a customer's relevant items in their top n (what a
  re-ranker of these candidates could reach at best), and the pooled share over all pairs;

then NDCG@k by segment, and the reference figures for comparison. A few variants are there for
the record of how the reference figures were matched: popularity with a 30-day half-life,
repeat-then-popular with ties by item id instead of recency, ALS with Hu et al.'s confidence
``1 + n_orders`` and with BM25-weighted counts.

    python benchmarks/bench_baselines.py [--n 100] [--k 10] [--bpr-iterations 100]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from common import load_uci, machine

from recsys_assets.core import constants as c
from recsys_assets.evaluation.metrics import N_HITS, N_RELEVANT, RECALL, per_user_metrics
from recsys_assets.evaluation.protocol import (
    SEGMENT_COUNTRY,
    SEGMENT_ORDERS,
    bootstrap_ndcg,
    evaluate,
    temporal_split,
)
from recsys_assets.training.candidates import (
    CandidateGenerator,
    CoClustering,
    ImplicitALS,
    ImplicitBPR,
    ItemKNN,
    Popularity,
    RepeatPurchase,
    RepeatThenPopular,
)

# The project's reference figures on this protocol (K = 10): NDCG@10 (MAP@10 where known).
REFERENCE = {
    "popularity": "0.094",
    "repeat_then_popular": "0.312 (MAP 0.204)",
    "repeat_then_popular (ties by id)": "0.312 (MAP 0.204)",
    "als (64 factors)": "0.286",
    "item_knn_bm25": "0.311",
    "bpr": "0.215",
}


class ALSHuConfidence(ImplicitALS):
    """ALS with Hu, Koren and Volinsky's confidence 1 + alpha * n_orders (alpha 1)."""

    def _weights(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        weighted = counts.astype(np.float32, copy=True)
        weighted.data = 1.0 + weighted.data
        return weighted


class ALSBM25(ImplicitALS):
    """ALS on BM25-weighted counts (K1 100, B 0.8: implicit's last.fm example)."""

    def _weights(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        from implicit.nearest_neighbours import bm25_weight

        return bm25_weight(counts, K1=100, B=0.8).tocsr()


def generators(bpr_iterations: int) -> list[tuple[str, CandidateGenerator]]:
    return [
        ("popularity", Popularity()),
        ("popularity (half-life 30 d)", Popularity(half_life_days=30)),
        ("repeat", RepeatPurchase()),
        ("repeat_then_popular", RepeatThenPopular()),
        ("repeat_then_popular (ties by id)", RepeatThenPopular(recency_ties=False)),
        ("als (64 factors)", ImplicitALS(factors=64)),
        ("als, confidence 1 + n", ALSHuConfidence(factors=64)),
        ("als, bm25 weights", ALSBM25(factors=64)),
        ("item_knn_bm25", ItemKNN("bm25", k=100)),
        ("item_knn_cosine", ItemKNN("cosine", k=100)),
        ("bpr", ImplicitBPR(factors=64, iterations=bpr_iterations)),
        ("coclustering", CoClustering(n_clusters=8)),
    ]


def run_one(
    name: str, model: CandidateGenerator, split: Any, n: int, k: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    model.fit(split.train)
    started = time.perf_counter()
    recs = model.recommend(split.users, n=n)
    recommend_seconds = time.perf_counter() - started
    result = evaluate(recs, split, k=k)
    deep = per_user_metrics(recs, split.relevant, k=n)
    band = bootstrap_ndcg(result["per_user"])
    row = {
        "model": name,
        f"NDCG@{k}": result["ndcg"],
        f"NDCG@{k} p5-p95": f"{band['p5']:.3f}-{band['p95']:.3f}",
        f"MAP@{k}": result["map"],
        f"Recall@{k}": result["recall"],
        f"HitRate@{k}": result["hit_rate"],
        f"MRR@{k}": result["mrr"],
        f"coverage@{k}": result["coverage"],
        "revenue (GBP)": result["revenue"]["total"],
        "revenue / user": result["revenue"]["per_user_mean"],
        "fit s": model.fit_seconds,
        "recommend s": recommend_seconds,
        f"cand. recall@{n}": float(deep[RECALL].mean()),
        f"cand. share@{n}": float(deep[N_HITS].sum() / deep[N_RELEVANT].sum()),
        "users": result["n_users"],
        "reference NDCG@10": REFERENCE.get(name, ""),
    }
    segments = {"model": name}
    for column in (SEGMENT_ORDERS, SEGMENT_COUNTRY):
        for label, summary in result["segments"][column].items():
            segments[f"{label} (n={summary['n_users']})"] = summary["ndcg"]
    return row, segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=c.CANDIDATES_N, help="candidates per customer")
    parser.add_argument("--k", type=int, default=c.DEFAULT_K, help="cut-off of the metrics")
    parser.add_argument("--bpr-iterations", type=int, default=100)
    args = parser.parse_args()

    print(f"# bench_baselines: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    started = time.perf_counter()
    events = load_uci().valid
    split = temporal_split(events, c.DEFAULT_SPLIT)
    print(f"load + validate + split: {time.perf_counter() - started:.1f} s")
    print(f"split: {split.description}")
    print(f"top {args.n} candidates for {len(split.users):,} evaluated customers; k = {args.k}")
    print()

    rows, segment_rows, cluster_note = [], [], ""
    for name, model in generators(args.bpr_iterations):
        row, segments = run_one(name, model, split, args.n, args.k)
        rows.append(row)
        segment_rows.append(segments)
        print(f"  {name}: NDCG@{args.k} {row[f'NDCG@{args.k}']:.4f}", file=sys.stderr, flush=True)
        if isinstance(model, CoClustering):
            sizes = np.bincount(model.user_clusters, minlength=model.n_clusters)
            cluster_note = f"co-clustering customer cluster sizes: {sizes.tolist()}"
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".3f"))
    print()
    print(f"NDCG@{args.k} by segment (orders in training; most frequent country):")
    print()
    print(pd.DataFrame(segment_rows).to_markdown(index=False, floatfmt=".3f"))
    print()
    print(cluster_note)
    print(f"total wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
