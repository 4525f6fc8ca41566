"""Offline ranking metrics for the recommender: pure, typed, vectorised pandas/numpy.

Modelled on Microsoft Recommenders' ``python_evaluation``: one function per question, keyword
column names with defaults from :mod:`recsys_assets.core.constants`.

The protocol these metrics serve (fixed by the project):

- **relevant items** of a customer are the distinct items they bought in the test period
  (binary relevance);
- **recommendations** are a ranked list over the whole catalogue, one row per customer, item
  and 1-based ``rank`` (items bought before are not filtered out); :func:`rank_by_score` turns
  scores into ranks;
- every metric looks at ranks ``1..k`` only.

Boundary cases, the same in every function:

- a customer without relevant items is **not evaluated**: no row in :func:`per_user_metrics`,
  not in any mean, not in ``n_users``; customers with relevant items but no recommendations
  are evaluated and score 0;
- missing ranks (a list shorter than ``k``, or gaps) are misses; the ideal DCG and the MAP
  normaliser still use ``min(k, n_relevant)`` and precision still divides by ``k``;
- an item repeated in a customer's list counts once, at its first rank; the later copy keeps
  its position as a miss (the slot was wasted), so the items after it do not move up;
- two different items on the same rank of one customer's list (within ``k``) are an error:
  the order would be undefined, use :func:`rank_by_score` to break ties;
- empty inputs give empty per-user tables, NaN means and ``n_users`` 0, never an exception.

For bootstrap confidence intervals, compute :func:`per_user_metrics` once and resample its rows:
each row is one customer's independent contribution to the means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from recsys_assets.core import constants as c

__all__ = [
    "COVERAGE",
    "HIT_RATE",
    "MAP",
    "MRR",
    "NDCG",
    "N_HITS",
    "N_RELEVANT",
    "N_USERS",
    "PER_USER_COLUMNS",
    "PRECISION",
    "RANKING_METRICS",
    "RECALL",
    "REVENUE_AVAILABLE",
    "REVENUE_PER_USER",
    "REVENUE_TOTAL",
    "K",
    "catalogue_coverage",
    "metrics_at_k",
    "per_user_metrics",
    "purchase_value",
    "rank_by_score",
    "revenue_proxy",
    "summarise",
    "top_k_items",
]

# Output columns.
NDCG = "ndcg"
MAP = "map"
RECALL = "recall"
PRECISION = "precision"
HIT_RATE = "hit_rate"
MRR = "mrr"
N_RELEVANT = "n_relevant"  # distinct relevant items of the customer
N_HITS = "n_hits"  # distinct relevant items in the customer's top k
N_USERS = "n_users"  # evaluated customers (at least one relevant item)
K = "k"
COVERAGE = "coverage"

RANKING_METRICS: tuple[str, ...] = (NDCG, MAP, RECALL, PRECISION, HIT_RATE, MRR)
PER_USER_COLUMNS: tuple[str, ...] = (*RANKING_METRICS, N_RELEVANT, N_HITS)

# Keys of revenue_proxy's answer.
REVENUE_TOTAL = "total"
REVENUE_PER_USER = "per_user_mean"
REVENUE_AVAILABLE = "available"


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _require(frame: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise KeyError(f"{name} lacks column(s) {missing}; it has {list(frame.columns)}")


def rank_by_score(
    frame: pd.DataFrame,
    *,
    col_score: str = c.PREDICTION,
    col_user: str = c.USER_ID,
    col_item: str = c.ITEM_ID,
    col_rank: str = c.RANK,
) -> pd.DataFrame:
    """Add 1-based ranks per user by descending score, ties broken by ascending item id.

    The tie-break makes the ranks independent of row order, so a metric never depends on how
    the scores happened to be sorted. Missing scores rank last. Returns a copy sorted by user
    and rank.
    """
    _require(frame, (col_user, col_item, col_score), "frame")
    ordered = frame.sort_values(
        [col_user, col_score, col_item],
        ascending=[True, False, True],
        kind="mergesort",
        na_position="last",
    )
    ranks = ordered.groupby(col_user, sort=False, dropna=False).cumcount().add(1)
    return ordered.assign(**{col_rank: ranks.astype("int64")}).reset_index(drop=True)


def top_k_items(
    recommendations: pd.DataFrame,
    *,
    k: int = c.DEFAULT_K,
    col_user: str = c.USER_ID,
    col_item: str = c.ITEM_ID,
    col_rank: str = c.RANK,
) -> pd.DataFrame:
    """Each user's distinct items at ranks ``1..k`` (user, item, rank), sorted by user and rank.

    A repeated item is kept at its first rank; ranks are not renumbered (see the module notes).
    Raises ValueError for ranks that are missing, below 1 or not whole numbers, and for two items
    on one rank of one user within ``k``.
    """
    k = _check_k(k)
    _require(recommendations, (col_user, col_item, col_rank), "recommendations")
    frame = recommendations[[col_user, col_item, col_rank]]
    ranks = pd.to_numeric(frame[col_rank], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(ranks).any() or (ranks < 1).any() or (ranks != np.floor(ranks)).any():
        raise ValueError(f"{col_rank!r} must hold whole numbers >= 1 (1 = top of the list)")
    frame = frame.assign(**{col_rank: ranks.astype(np.int64)})
    frame = frame[frame[col_rank] <= k].sort_values([col_user, col_rank], kind="mergesort")
    frame = frame.drop_duplicates([col_user, col_item], keep="first")
    if frame.duplicated([col_user, col_rank]).any():
        raise ValueError(
            f"two items share a {col_rank!r} in one user's list; rank scores with rank_by_score"
        )
    return frame.reset_index(drop=True)


def _ideal_dcg(n_relevant: np.ndarray, k: int) -> np.ndarray:
    """DCG of ``min(k, n_relevant)`` relevant items at the top: sum of 1 / log2(r + 1)."""
    cumulative = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))))
    return cumulative[np.minimum(n_relevant, k)]


def per_user_metrics(
    recommendations: pd.DataFrame,
    relevant: pd.DataFrame,
    *,
    k: int = c.DEFAULT_K,
    col_user: str = c.USER_ID,
    col_item: str = c.ITEM_ID,
    col_rank: str = c.RANK,
) -> pd.DataFrame:
    """Ranking metrics at ``k`` for each evaluated user (one with at least one relevant item).

    ``relevant`` holds (user, item) rows, repeats allowed (e.g. the test-period purchases).
    Columns: user, then with ``rel_r`` = 1 if rank r holds a relevant item and
    ``n = n_relevant``:

    - ``ndcg`` = sum_{r<=k} rel_r / log2(r + 1), divided by the same for min(k, n) hits on top;
    - ``map`` = (1 / min(k, n)) * sum_{r<=k, rel_r} precision@r (average precision at k);
    - ``recall`` = hits / n; ``precision`` = hits / k; ``hit_rate`` = 1 if any hit;
    - ``mrr`` = 1 / rank of the first hit (0 if none);
    - ``n_relevant``, ``n_hits``.

    Users without relevant items get no row (the row count is the number of evaluated users);
    users with relevant items but no recommendations get zeros. Rows are sorted by user.
    """
    k = _check_k(k)
    _require(relevant, (col_user, col_item), "relevant")
    truth = relevant[[col_user, col_item]].drop_duplicates()
    n_relevant = truth.groupby(col_user).size().rename(N_RELEVANT)
    top = top_k_items(recommendations, k=k, col_user=col_user, col_item=col_item, col_rank=col_rank)

    hits = top.merge(truth, on=[col_user, col_item], how="inner")
    hits = hits.sort_values([col_user, col_rank], kind="mergesort")
    rank = hits[col_rank].to_numpy(dtype=np.float64)
    hits_so_far = hits.groupby(col_user).cumcount().to_numpy() + 1
    per_hit = pd.DataFrame(
        {
            col_user: hits[col_user].to_numpy(),
            "gain": 1.0 / np.log2(rank + 1.0),
            "precision_at_hit": hits_so_far / rank,
            "reciprocal_rank": 1.0 / rank,
        }
    )
    by_user = per_hit.groupby(col_user).agg(
        n_hits=("gain", "size"),
        dcg=("gain", "sum"),
        ap_sum=("precision_at_hit", "sum"),
        mrr=("reciprocal_rank", "max"),
    )
    by_user = by_user.reindex(n_relevant.index, fill_value=0)

    n_rel = n_relevant.to_numpy(dtype=np.int64)
    n_hits = by_user["n_hits"].to_numpy(dtype=np.int64)
    out = pd.DataFrame(
        {
            NDCG: by_user["dcg"].to_numpy(dtype=np.float64) / _ideal_dcg(n_rel, k),
            MAP: by_user["ap_sum"].to_numpy(dtype=np.float64) / np.minimum(n_rel, k),
            RECALL: n_hits / n_rel,
            PRECISION: n_hits / k,
            HIT_RATE: (n_hits > 0).astype(np.float64),
            MRR: by_user["mrr"].to_numpy(dtype=np.float64),
            N_RELEVANT: n_rel,
            N_HITS: n_hits,
        },
        index=n_relevant.index,
    )
    return out.rename_axis(col_user).reset_index()


def summarise(per_user: pd.DataFrame) -> dict[str, float]:
    """Means of the ranking metrics over the evaluated users, plus ``n_users``.

    Means of an empty table are NaN (nothing was evaluated), not 0.
    """
    summary: dict[str, float] = {
        name: float(per_user[name].mean()) if len(per_user) else math.nan
        for name in RANKING_METRICS
    }
    summary[N_USERS] = len(per_user)
    return summary


def catalogue_coverage(
    recommendations: pd.DataFrame,
    catalogue_size: int,
    *,
    k: int = c.DEFAULT_K,
    col_user: str = c.USER_ID,
    col_item: str = c.ITEM_ID,
    col_rank: str = c.RANK,
) -> float:
    """Share of the catalogue that appears in at least one user's top ``k``.

    Distinct recommended items / ``catalogue_size``; 0.0 without recommendations. The caller
    defines the catalogue (e.g. items sold in the training period).
    """
    if catalogue_size < 1:
        raise ValueError(f"catalogue_size must be >= 1, got {catalogue_size!r}")
    top = top_k_items(recommendations, k=k, col_user=col_user, col_item=col_item, col_rank=col_rank)
    return top[col_item].nunique() / catalogue_size


def purchase_value(
    purchases: pd.DataFrame,
    *,
    col_value: str = c.VALUE,
    col_quantity: str = c.QUANTITY,
    col_price: str = c.UNIT_PRICE,
) -> pd.Series | None:
    """Money of each purchase line: ``col_value`` if present, else quantity x unit price.

    A missing quantity column counts as 1 unit a line. None when there is neither a value nor a
    price column (the source has no prices).
    """
    if col_value in purchases.columns:
        return pd.to_numeric(purchases[col_value]).astype(np.float64)
    if col_price not in purchases.columns:
        return None
    price = pd.to_numeric(purchases[col_price]).astype(np.float64)
    if col_quantity not in purchases.columns:
        return price
    return price * pd.to_numeric(purchases[col_quantity]).astype(np.float64)


def revenue_proxy(
    recommendations: pd.DataFrame,
    purchases: pd.DataFrame,
    *,
    k: int = c.DEFAULT_K,
    col_user: str = c.USER_ID,
    col_item: str = c.ITEM_ID,
    col_rank: str = c.RANK,
    col_value: str = c.VALUE,
    col_quantity: str = c.QUANTITY,
    col_price: str = c.UNIT_PRICE,
) -> dict[str, float | int | bool]:
    """Test-period money spent on items that were in the buyer's top ``k``.

    ``purchases`` are the test-period purchase lines; a line's value comes from
    :func:`purchase_value`. Per customer and item the values are summed, and an item counts
    if it is in that customer's top ``k`` (once, however often it was recommended).

    Returns ``total``, ``per_user_mean`` (total / n_users), ``n_users`` (customers with at least
    one purchase, the evaluated users) and ``available``. Without any priced line (no value or
    price column, only null prices, or no purchases) total and mean are NaN and ``available``
    is False. Lines with a null price add nothing.
    """
    _require(purchases, (col_user, col_item), "purchases")
    value = purchase_value(
        purchases, col_value=col_value, col_quantity=col_quantity, col_price=col_price
    )
    n_users = int(purchases[col_user].nunique())
    if value is None or not value.notna().any():
        return {
            REVENUE_TOTAL: math.nan,
            REVENUE_PER_USER: math.nan,
            N_USERS: n_users,
            REVENUE_AVAILABLE: False,
        }
    spend = (
        purchases[[col_user, col_item]]
        .assign(_value=value.to_numpy())
        .groupby([col_user, col_item], as_index=False)["_value"]
        .sum()
    )
    top = top_k_items(recommendations, k=k, col_user=col_user, col_item=col_item, col_rank=col_rank)
    total = float(top.merge(spend, on=[col_user, col_item], how="inner")["_value"].sum())
    return {
        REVENUE_TOTAL: total,
        REVENUE_PER_USER: total / n_users,
        N_USERS: n_users,
        REVENUE_AVAILABLE: True,
    }


def metrics_at_k(
    recommendations: pd.DataFrame,
    relevant: pd.DataFrame,
    *,
    ks: Sequence[int] = (5, 10, 20),
    catalogue_size: int | None = None,
    col_user: str = c.USER_ID,
    col_item: str = c.ITEM_ID,
    col_rank: str = c.RANK,
) -> pd.DataFrame:
    """Mean metrics for several cut-offs, one row per k (a metric-at-K curve).

    Columns: ``k``, the ranking metrics, ``n_users`` and, when ``catalogue_size`` is given,
    ``coverage``. The lists should hold at least ``max(ks)`` items for the curve to be fair.
    """
    columns = [K, *RANKING_METRICS, N_USERS]
    if catalogue_size is not None:
        columns.append(COVERAGE)
    rows = []
    for k in ks:
        per_user = per_user_metrics(
            recommendations, relevant, k=k, col_user=col_user, col_item=col_item, col_rank=col_rank
        )
        row: dict[str, float] = {K: int(k), **summarise(per_user)}
        if catalogue_size is not None:
            row[COVERAGE] = catalogue_coverage(
                recommendations,
                catalogue_size,
                k=k,
                col_user=col_user,
                col_item=col_item,
                col_rank=col_rank,
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
