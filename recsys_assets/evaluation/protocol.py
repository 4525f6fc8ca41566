"""The project's fixed offline evaluation protocol, in code: a temporal split and its scoring.

The protocol (the reference figures in ``benchmarks/results/baselines.md`` use it):

- **events**: purchases only. The validated events of UCI Online Retail already exclude rows
  without a customer, cancellations, quantities <= 0, prices <= 0 and non-product stock codes;
  :func:`temporal_split` applies the same filters again, defensively (event type ``purchase``,
  quantity > 0, price > 0 on rows that have a price, and the item id matching
  ``product_pattern`` only when one is given);
- **split**: train on the events before the split date (UCI: 2011-11-01), test on the events
  from it on. If the split date is outside the data's time range, the last 10% of the time
  range is the test period instead (the description says so);
- **evaluated customers**: those with at least one purchase in each period (a customer seen only
  in the test period cannot be personalised, one seen only in training has nothing to test);
- **relevant items**: the distinct items each evaluated customer bought in the test period,
  including items never sold in training (nobody can recommend those, so they cap recall below
  1 for every model alike);
- **candidates** are ranked over the whole catalogue seen in training, and items a customer
  bought before are **not** filtered out (re-buying is most of this shop's demand);
- **metrics** come from :mod:`recsys_assets.evaluation.metrics` at ``k`` (default 10).

Segments (see :func:`user_segments`). New-versus-returning customers is not a meaningful cut
here, since every evaluated customer bought in both periods; instead:

- ``orders``: ``one_order`` (exactly one training order) versus ``repeat`` (two or more);
- ``country``: ``uk`` versus ``rest`` by the customer's most frequent country in training
  (``unknown`` when the source has no country).

Robustness, beside the accuracy: :func:`evaluate` also returns the bootstrap spread of NDCG per
segment (:func:`bootstrap_by_segment`) and the metrics on three hard groups, one-order
customers, very large test baskets and relevance on items unseen in training
(:func:`edge_case_summaries`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.evaluation.metrics import (
    N_RELEVANT,
    NDCG,
    catalogue_coverage,
    metrics_at_k,
    per_user_metrics,
    rank_by_score,
    revenue_proxy,
    summarise,
)

__all__ = [
    "DEFAULT_SPLIT",
    "EDGE_LARGE_BASKET",
    "EDGE_ONE_ORDER",
    "EDGE_UNSEEN_ITEMS",
    "LARGE_BASKET_QUANTILE",
    "NO_PRICES",
    "ONE_ORDER",
    "REPEAT",
    "REST",
    "SEGMENT_COUNTRY",
    "SEGMENT_ORDERS",
    "UK",
    "UNKNOWN",
    "Split",
    "bootstrap_by_segment",
    "bootstrap_ndcg",
    "edge_case_summaries",
    "evaluate",
    "order_keys",
    "purchases_only",
    "segment_summaries",
    "temporal_split",
    "user_segments",
    "validation_split",
]

DEFAULT_SPLIT = c.DEFAULT_SPLIT
NO_PRICES = "no prices: revenue metrics unavailable"

# Segment columns and labels (user_segments).
SEGMENT_ORDERS = "orders"
SEGMENT_COUNTRY = "country"
ONE_ORDER = "one_order"
REPEAT = "repeat"
UK = "uk"
REST = "rest"
UNKNOWN = "unknown"

# Edge cases (edge_case_summaries).
EDGE_ONE_ORDER = "one_order"
EDGE_LARGE_BASKET = "large_basket"
EDGE_UNSEEN_ITEMS = "unseen_items"
LARGE_BASKET_QUANTILE = 0.95  # large basket: n_relevant >= this quantile ("higher" method)


@dataclass(frozen=True, eq=False)
class Split:
    """A temporal train/test split under the project's protocol (see the module notes).

    - ``train``: every purchase before ``split_ts`` (all customers: models learn from all);
    - ``test``: the purchases from ``split_ts`` on of the evaluated customers only (the lines
      the revenue proxy is computed on);
    - ``relevant``: distinct (user_id, item_id) pairs of ``test``;
    - ``catalogue``: the distinct items of ``train``, sorted (what a model may recommend);
    - ``users``: the evaluated customers (a purchase in each period), sorted;
    - ``split_ts``: the split actually used (the fallback one if the requested date was outside
      the data);
    - ``description``: what was done, in sentences, for reports;
    - ``has_prices``: whether purchase values exist (revenue metrics are computable);
    - ``end_ts``: the last purchase of the data (the test period is ``split_ts`` .. ``end_ts``);
      None on splits stored before it was recorded.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    relevant: pd.DataFrame
    catalogue: np.ndarray
    users: np.ndarray
    split_ts: pd.Timestamp
    description: str
    has_prices: bool = True
    end_ts: pd.Timestamp | None = None

    @property
    def test_days(self) -> float | None:
        """The length of the test period in days (None without ``end_ts``)."""
        if self.end_ts is None:
            return None
        return (pd.Timestamp(self.end_ts) - pd.Timestamp(self.split_ts)) / pd.Timedelta(days=1)


def purchases_only(
    events: pd.DataFrame, *, product_pattern: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """The purchase events usable for evaluation, and one note per filter that dropped rows.

    Keeps rows with a user and an item, event type ``purchase`` (if the column exists),
    quantity > 0 (if it exists), price > 0 where a price is given (rows with a null price are
    kept; a source without prices keeps them all) and, only when ``product_pattern`` is given,
    item ids matching it (``re.match``: from the start, e.g. ``r"^\\d"``).
    """
    keep = pd.Series(True, index=events.index)
    notes: list[str] = []

    def drop(mask: pd.Series, why: str) -> None:
        nonlocal keep
        mask = mask.fillna(False).astype(bool)
        dropped = int((keep & mask).sum())
        if dropped:
            notes.append(f"{dropped:,} {why}")
        keep &= ~mask

    drop(events[c.USER_ID].isna() | events[c.ITEM_ID].isna(), "without customer or item")
    if c.EVENT_TYPE in events.columns:
        drop(events[c.EVENT_TYPE] != c.PURCHASE, "not purchases")
    if c.QUANTITY in events.columns:
        drop(~(events[c.QUANTITY] > 0), "with quantity <= 0 or missing")
    if c.UNIT_PRICE in events.columns:
        price = events[c.UNIT_PRICE]
        drop(price.notna() & ~(price > 0), "with price <= 0")
    if product_pattern is not None:
        is_product = events[c.ITEM_ID].astype("string").str.match(product_pattern)
        drop(~is_product.fillna(False).astype(bool), f"not matching {product_pattern!r}")
    return events.loc[keep].reset_index(drop=True), notes


def order_keys(events: pd.DataFrame) -> pd.Series:
    """An order identifier per event: ``order_id`` where known, else its timestamp.

    Events of one customer at the same instant form one basket when the source has no orders.
    """
    stamp = "ts:" + events[c.EVENT_TS].astype("string")
    if c.ORDER_ID not in events.columns:
        return stamp.astype(object)
    order = events[c.ORDER_ID].astype(object)
    return order.where(events[c.ORDER_ID].notna(), stamp.astype(object))


def _has_prices(events: pd.DataFrame) -> bool:
    return c.UNIT_PRICE in events.columns and bool(events[c.UNIT_PRICE].notna().any())


def temporal_split(
    events: pd.DataFrame,
    split_ts: str | pd.Timestamp | None = None,
    *,
    product_pattern: str | None = None,
) -> Split:
    """Split events in time under the project's protocol (see the module notes).

    ``split_ts`` is the first instant of the test period (a source sets it with ``split_date``).
    When it is None (none configured) or not inside the data's time range (first event <
    split_ts <= last event), the last ``constants.FALLBACK_TEST_FRACTION`` (10%) of the time
    range is the test period and the description says so. Raises ValueError when no purchase
    is left after filtering.
    """
    purchases, notes = purchases_only(events, product_pattern=product_pattern)
    if purchases.empty:
        raise ValueError("no purchase events left to split after filtering")
    parts: list[str] = []
    kept = f"purchases: {len(purchases):,} of {len(events):,} events kept"
    parts.append(kept + (f" (dropped {'; '.join(notes)})" if notes else ""))

    ts = purchases[c.EVENT_TS]
    first, last = ts.min(), ts.max()
    requested = None if split_ts is None else pd.Timestamp(split_ts)
    share = c.FALLBACK_TEST_FRACTION
    if requested is not None and first < requested <= last:
        cut = requested
        parts.append(f"split at {cut}: train before, test from it on")
    else:
        cut = first + (last - first) * (1 - share)
        why = (
            "no split date configured"
            if requested is None
            else f"split date {requested} is outside the data's time range"
        )
        parts.append(
            f"{why} ({first} .. {last}): test = the last {share:.0%} of the time range, "
            f"from {cut} on"
        )

    in_train = (ts < cut).to_numpy()
    train = purchases.loc[in_train].reset_index(drop=True)
    test_all = purchases.loc[~in_train]
    users = np.intersect1d(
        train[c.USER_ID].dropna().unique().astype(str),
        test_all[c.USER_ID].dropna().unique().astype(str),
    ).astype(object)
    test = test_all.loc[test_all[c.USER_ID].isin(users)].reset_index(drop=True)
    relevant = (
        test[[c.USER_ID, c.ITEM_ID]]
        .drop_duplicates()
        .sort_values([c.USER_ID, c.ITEM_ID], kind="mergesort")
        .reset_index(drop=True)
    )
    catalogue = np.sort(train[c.ITEM_ID].unique().astype(str)).astype(object)
    unseen = int((~relevant[c.ITEM_ID].isin(catalogue)).sum())

    parts.append(
        f"train: {len(train):,} purchases, {train[c.USER_ID].nunique():,} customers, "
        f"{len(catalogue):,} items (the catalogue); test: {len(test_all):,} purchases, "
        f"{test_all[c.USER_ID].nunique():,} customers"
    )
    parts.append(
        f"evaluated: {len(users):,} customers with a purchase in both periods; relevant: "
        f"{len(relevant):,} distinct (customer, item) test pairs, {unseen:,} of them items not "
        "in the training catalogue; items bought before are not filtered"
    )
    has_prices = _has_prices(purchases)
    if not has_prices:
        parts.append(NO_PRICES)
    return Split(
        train=train,
        test=test,
        relevant=relevant,
        catalogue=catalogue,
        users=users,
        split_ts=pd.Timestamp(cut),
        description="; ".join(parts),
        has_prices=has_prices,
        end_ts=pd.Timestamp(last),
    )


def validation_split(split: Split) -> Split | None:
    """The same protocol one test period earlier, inside the training period: what a model is
    chosen on, so that the choice never looks at the test period.

    The validation period has the test period's length and ends where the test period begins
    (training purchases before ``split_ts - test length`` train, the rest validate); where that
    leaves no training time, :func:`temporal_split`'s fallback (the last 10% of the training
    period) applies and the description says so. None when the split has no ``end_ts`` or no
    training purchases."""
    length = split.test_days
    if length is None or split.train.empty:
        return None
    cut = pd.Timestamp(split.split_ts) - pd.Timedelta(days=length)
    validation = temporal_split(split.train, cut)
    return replace(validation, description="validation (inside the training period): "
                   + validation.description)  # fmt: skip


def user_segments(split: Split) -> pd.DataFrame:
    """One row per evaluated customer: ``user_id``, ``orders`` and ``country`` segments.

    - ``orders``: ``one_order`` if the customer placed exactly one order in training, else
      ``repeat`` (orders are distinct order ids, see :func:`order_keys`);
    - ``country``: ``uk`` if the customer's most frequent country over their training purchase
      lines is ``constants.HOME_MARKET`` (ties: alphabetical), ``rest`` if it is another one,
      ``unknown`` without a country.
    """
    train = split.train.loc[split.train[c.USER_ID].isin(split.users)]
    users = pd.Index(split.users, name=c.USER_ID)
    n_orders = (
        pd.DataFrame({c.USER_ID: train[c.USER_ID].astype(object), "order": order_keys(train)})
        .drop_duplicates()
        .groupby(c.USER_ID)
        .size()
        .reindex(users, fill_value=0)
    )
    orders = np.where(n_orders.to_numpy() <= 1, ONE_ORDER, REPEAT)

    country = pd.Series(UNKNOWN, index=users, dtype=object)
    if c.COUNTRY in train.columns:
        known = train.loc[train[c.COUNTRY].notna(), [c.USER_ID, c.COUNTRY]].astype(object)
        if len(known):
            top = (
                known.groupby([c.USER_ID, c.COUNTRY])
                .size()
                .rename("n")
                .reset_index()
                .sort_values(["n", c.COUNTRY], ascending=[False, True], kind="mergesort")
                .drop_duplicates(c.USER_ID)
                .set_index(c.USER_ID)[c.COUNTRY]
            )
            label = np.where(top.to_numpy() == c.HOME_MARKET, UK, REST)
            country.loc[top.index] = label
    return pd.DataFrame(
        {c.USER_ID: users.to_numpy(), SEGMENT_ORDERS: orders, SEGMENT_COUNTRY: country.to_numpy()}
    )


def segment_summaries(
    per_user: pd.DataFrame, segments: pd.DataFrame
) -> dict[str, dict[str, dict[str, float]]]:
    """``{segment column: {label: summarise(rows of that label)}}`` for every label present."""
    joined = per_user.merge(segments, on=c.USER_ID, how="left")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for column in (SEGMENT_ORDERS, SEGMENT_COUNTRY):
        labels = sorted(joined[column].dropna().unique())
        out[column] = {
            str(label): summarise(joined.loc[joined[column] == label]) for label in labels
        }
    return out


def bootstrap_by_segment(
    per_user: pd.DataFrame,
    segments: pd.DataFrame,
    *,
    n: int = 200,
    seed: int = c.SEED,
) -> dict[str, dict[str, dict[str, float | int]]]:
    """:func:`bootstrap_ndcg` within each segment: ``{segment column: {label: spread}}``.

    For every segment column (``orders``, ``country``) and every label present among the
    evaluated customers (as in :func:`segment_summaries`), the customers of that label are
    resampled with replacement ``n`` times with the same ``seed`` (so a result is reproducible
    and does not depend on the other segments). Each spread has ``mean``, ``std``, ``p5``,
    ``p95``, ``point``, ``n_resamples`` and ``n_users``; NaNs and ``n_users`` 0 for an empty one.
    """
    joined = per_user.merge(segments, on=c.USER_ID, how="left")
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for column in (SEGMENT_ORDERS, SEGMENT_COUNTRY):
        labels = sorted(joined[column].dropna().unique()) if column in joined.columns else []
        out[column] = {
            str(label): bootstrap_ndcg(joined.loc[joined[column] == label], n=n, seed=seed)
            for label in labels
        }
    return out


def edge_case_summaries(
    per_user: pd.DataFrame,
    split: Split,
    segments: pd.DataFrame,
    *,
    k: int = c.DEFAULT_K,
) -> dict[str, dict[str, float | int]]:
    """Metric means (:func:`~recsys_assets.evaluation.metrics.summarise`) on three hard groups.

    All groups are subsets of the evaluated customers (the rows of ``per_user``); an empty
    group has ``n_users`` 0 and NaN means, never an exception.

    - ``one_order``: customers with exactly one distinct training order (the ``one_order``
      label of :func:`user_segments`; every evaluated customer has at least one).
    - ``large_basket``: customers with a very large test basket. With ``n_relevant`` the number
      of distinct relevant items of a customer, ``threshold`` is the 95th percentile
      (:data:`LARGE_BASKET_QUANTILE`) of ``n_relevant`` over the evaluated customers, taken with
      ``numpy.quantile(..., method="higher")`` (so it is an observed basket size), and the group
      is the customers with ``n_relevant >= threshold``. Without ties that is the top
      ``n - ceil(0.95 (n - 1))`` customers (5% of them for large ``n``); customers tied at the
      threshold are all included, so the group can be larger. Also reported: ``quantile``,
      ``threshold`` (NaN without customers) and ``share_of_users`` (group size / evaluated).
    - ``unseen_items``: relevance on items not in the training catalogue (``split.catalogue``),
      which no model can recommend. Over the distinct relevant (customer, item) pairs of the
      evaluated customers: ``n_pairs``, ``n_unseen_pairs`` and ``unseen_share`` =
      ``n_unseen_pairs / n_pairs``. With ``n_u`` and ``s_u`` a customer's relevant and
      relevant-and-seen item counts, the recall ceilings any catalogue model is bound by are
      ``recall_ceiling`` = mean over customers of ``s_u / n_u`` (at any K) and
      ``recall_ceiling_at_k`` = mean of ``min(k, s_u) / n_u`` (at this ``k``);
      ``pooled_recall_ceiling`` = ``1 - unseen_share`` is the same over pooled pairs. The metric
      means are recomputed on the customers with at least one unseen relevant item (their
      ``n_users``); the other figures are NaN without pairs.
    """
    users = per_user[c.USER_ID]
    summaries: dict[str, dict[str, float | int]] = {}

    one_order = segments.loc[segments[SEGMENT_ORDERS] == ONE_ORDER, c.USER_ID]
    summaries[EDGE_ONE_ORDER] = summarise(per_user.loc[users.isin(one_order)])

    n_relevant = per_user[N_RELEVANT].to_numpy(dtype=np.int64)
    if len(n_relevant):
        threshold: float | int = int(
            np.quantile(n_relevant, LARGE_BASKET_QUANTILE, method="higher")
        )
        large = per_user.loc[n_relevant >= threshold]
        share_of_users = len(large) / len(per_user)
    else:
        threshold, large, share_of_users = math.nan, per_user, math.nan
    summaries[EDGE_LARGE_BASKET] = {
        **summarise(large),
        "quantile": LARGE_BASKET_QUANTILE,
        "threshold": threshold,
        "share_of_users": share_of_users,
    }

    pairs = split.relevant.loc[split.relevant[c.USER_ID].isin(users), [c.USER_ID, c.ITEM_ID]]
    pairs = pairs.drop_duplicates()
    unseen = ~pairs[c.ITEM_ID].isin(split.catalogue).to_numpy()
    n_pairs, n_unseen = len(pairs), int(unseen.sum())
    if n_pairs:
        per_customer = (
            pd.DataFrame({c.USER_ID: pairs[c.USER_ID].to_numpy(), "seen": ~unseen})
            .groupby(c.USER_ID)["seen"]
            .agg(n="size", s="sum")
        )
        n_u = per_customer["n"].to_numpy(dtype=np.float64)
        s_u = per_customer["s"].to_numpy(dtype=np.float64)
        share = n_unseen / n_pairs
        ceiling = float(np.mean(s_u / n_u))
        ceiling_at_k = float(np.mean(np.minimum(k, s_u) / n_u))
        pooled = 1.0 - share
    else:
        share = ceiling = ceiling_at_k = pooled = math.nan
    with_unseen = pairs.loc[unseen, c.USER_ID].unique()
    summaries[EDGE_UNSEEN_ITEMS] = {
        **summarise(per_user.loc[users.isin(with_unseen)]),
        "n_pairs": n_pairs,
        "n_unseen_pairs": n_unseen,
        "unseen_share": share,
        "recall_ceiling": ceiling,
        "recall_ceiling_at_k": ceiling_at_k,
        "pooled_recall_ceiling": pooled,
    }
    return summaries


def evaluate(
    recommendations: pd.DataFrame,
    split: Split,
    *,
    k: int = c.DEFAULT_K,
    ks: Sequence[int] = c.DEFAULT_KS,
    n_bootstrap: int = 200,
    seed: int = c.SEED,
) -> dict[str, Any]:
    """Score ranked recommendations (user_id, item_id, rank) on a split.

    Only the evaluated customers' lists count (other rows are ignored, so they do not inflate
    coverage). A frame with a ``score`` but no ``rank`` column is ranked with
    :func:`~recsys_assets.evaluation.metrics.rank_by_score`. Returns:

    - ``k`` and the summary at ``k``: ``ndcg``, ``map``, ``recall``, ``precision``,
      ``hit_rate``, ``mrr``, ``n_users`` (means over the evaluated customers);
    - ``coverage``: share of the training catalogue in at least one top-``k``;
    - ``revenue``: :func:`~recsys_assets.evaluation.metrics.revenue_proxy`, the test-period money
    the
      customers spent on items of their top ``k`` (NaN and ``available`` False without prices);
    - ``at_k``: one summary per cut-off in ``ks`` (with coverage), as a list of dicts;
    - ``segments``: :func:`segment_summaries` by ``orders`` and ``country``;
    - ``per_user``: the per-customer metrics at ``k`` (for :func:`bootstrap_ndcg`);
    - ``description``: the split's description;
    - ``bootstrap_ndcg``: :func:`bootstrap_ndcg` over all evaluated customers;
    - ``bootstrap_by_segment``: :func:`bootstrap_by_segment` (``n_bootstrap`` resamples,
      ``seed``), the spread of NDCG@``k`` within each segment;
    - ``edge_cases``: :func:`edge_case_summaries` (one-order customers, very large test baskets,
      relevance on items unseen in training).
    """
    recs = recommendations
    if c.RANK not in recs.columns and c.SCORE in recs.columns:
        recs = rank_by_score(recs, col_score=c.SCORE)
    recs = recs.loc[recs[c.USER_ID].isin(split.users)]
    catalogue_size = max(len(split.catalogue), 1)
    per_user = per_user_metrics(recs, split.relevant, k=k)
    at_k = metrics_at_k(recs, split.relevant, ks=ks, catalogue_size=catalogue_size)
    segments = user_segments(split)
    return {
        "k": int(k),
        **summarise(per_user),
        "coverage": catalogue_coverage(recs, catalogue_size, k=k),
        "revenue": revenue_proxy(recs, split.test, k=k),
        "at_k": at_k.to_dict("records"),
        "segments": segment_summaries(per_user, segments),
        "per_user": per_user,
        "description": split.description,
        "bootstrap_ndcg": bootstrap_ndcg(per_user, n=n_bootstrap, seed=seed),
        "bootstrap_by_segment": bootstrap_by_segment(per_user, segments, n=n_bootstrap, seed=seed),
        "edge_cases": edge_case_summaries(per_user, split, segments, k=k),
    }


def bootstrap_ndcg(
    per_user: pd.DataFrame, *, n: int = 200, seed: int = c.SEED
) -> dict[str, float | int]:
    """Spread of mean NDCG under resampling customers with replacement.

    ``per_user`` is :func:`~recsys_assets.evaluation.metrics.per_user_metrics` output (one row per
    evaluated customer, an independent contribution to the mean). Returns ``mean``, ``std``
    (ddof 1), ``p5`` and ``p95`` of the ``n`` bootstrap means, with ``point`` (the mean over
    all customers), ``n_resamples`` and ``n_users``. NaNs for an empty table.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    values = per_user[NDCG].to_numpy(dtype=np.float64)
    m = len(values)
    if m == 0:
        nan = math.nan
        return {
            "mean": nan,
            "std": nan,
            "p5": nan,
            "p95": nan,
            "point": nan,
            "n_resamples": n,
            "n_users": 0,
        }
    rng = np.random.default_rng(seed)
    means = np.array([values[rng.integers(0, m, size=m)].mean() for _ in range(n)])
    return {
        "mean": float(means.mean()),
        "std": float(means.std(ddof=1)) if n > 1 else 0.0,
        "p5": float(np.percentile(means, 5)),
        "p95": float(np.percentile(means, 95)),
        "point": float(values.mean()),
        "n_resamples": n,
        "n_users": m,
    }


def per_user_ndcg(per_user: pd.DataFrame) -> dict[str, float]:
    """Each evaluated customer's NDCG from :func:`evaluate`'s ``per_user`` table, by customer
    id: what a paired comparison of two models on the same split needs."""
    return dict(zip(per_user[c.USER_ID].astype(str), per_user[NDCG].astype(float), strict=True))


def paired_ndcg_difference(
    challenger: Mapping[str, float],
    champion: Mapping[str, float],
    *,
    n: int = 1_000,
    seed: int = c.SEED,
    confidence: float = 0.95,
) -> dict[str, float | int]:
    """The challenger's mean NDCG relative to the champion's over the customers both were
    scored on, with a paired bootstrap interval (customers resampled together, so what both
    models find easy or hard cancels out). ``relative`` = mean(ch) / mean(champ) - 1; ``low`` /
    ``high``: the central ``confidence`` interval of it. NaNs without common customers."""
    users = sorted(set(challenger) & set(champion))
    m = len(users)
    if m == 0 or n < 1:
        nan = math.nan
        return {"relative": nan, "low": nan, "high": nan, "n_users": 0, "n_resamples": n}
    a = np.array([challenger[u] for u in users], dtype=np.float64)
    b = np.array([champion[u] for u in users], dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, m, size=(n, m))
    sums_a, sums_b = a[draws].sum(axis=1), b[draws].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(sums_b > 0, sums_a / sums_b - 1.0, np.nan)
    tail = (1.0 - confidence) / 2 * 100
    relative = a.mean() / b.mean() - 1.0 if b.mean() > 0 else math.nan
    return {
        "relative": float(relative),
        "low": float(np.nanpercentile(ratios, tail)),
        "high": float(np.nanpercentile(ratios, 100 - tail)),
        "n_users": m,
        "n_resamples": n,
    }
