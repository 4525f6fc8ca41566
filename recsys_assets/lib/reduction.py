"""Dynamic data management for retraining the ranker: smaller history, fewer rows, fewer features.

Three independent reductions, each pure and deterministic:

1. **history** (:func:`reduce_history`, :func:`reduce`): of the events before the split,
   near-duplicate rows (same customer, item and calendar day) are merged into their first row
   (quantities summed); customers with no purchase in the last ``inactive_days`` before the split
   and fewer than ``min_orders`` orders are dropped; the last ``window_days`` are kept in full
   and older *orders* are kept with probability ``max(min_rate, 2 ** (-(age - window) /
   half_life))`` (age of the order's first event, in days before the split), decided by a seeded
   hash of (customer, order) so baskets stay whole and the same order always gets the same draw;
2. **training rows** (:func:`downsample_negatives`): per query, every positive plus
   ``max_negatives`` negatives, a seeded random sample (the hardest by generator votes is an
   option, measured harmful);
3. **features** (:func:`select_features`): drop constant features, then one of each pair with
   ``|r| > corr_threshold`` on a row sample (the less important, else the later one), then keep
   the top ``top_features`` by importance (total gain of a first fit), never fewer than
   ``min_features``.

:func:`fit_reduced_ranker` trains the XGBoost ranker on :func:`~recsys_assets.lib.ranking.
training_set` output restricted to the chosen columns (``lib/ranking.py`` has no feature-subset
knob) and returns an ordinary :class:`~recsys_assets.lib.ranking.Ranker` whose ``features`` is the
subset, so ``recommend`` scores with the same columns.

**Incremental retraining** (:func:`reduce`): given the previous :class:`ReducedHistory` and the
events landed since, the new reduced set is the reduction of (previous reduced events + new
events) at the new split, using per-customer statistics (order count, last purchase) carried
over the *full* history seen. Because the keep probability of an order only falls as the split
moves on and each order's draw is fixed, this equals reducing the union of all raw events, with
one documented exception: a customer dropped as inactive earlier whose history was discarded and
who then buys again keeps only the rows seen since (the union would also keep his older rows,
subject to the sampling). New events must be later than the previous split (landed partitions).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys_assets import constants as c
from recsys_assets.lib.evaluation import order_keys, purchases_only
from recsys_assets.lib.ranking import (
    LABEL,
    QID,
    Ranker,
    RankerConfig,
    feature_columns,
    make_generators,
    training_set,
)

__all__ = [
    "CUSTOMER_STATS",
    "ReducedHistory",
    "ReductionConfig",
    "downsample_negatives",
    "fit_reduced_ranker",
    "keep_probability",
    "quick_importance",
    "reduce",
    "reduce_history",
    "select_features",
]

CUSTOMER_STATS = ("n_orders", "last_ts")
_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class ReductionConfig:
    """The knobs of the reductions (see the module notes).

    - ``window_days``: history kept in full before the split;
    - ``half_life_days`` / ``min_rate``: keep probability of older orders, halved every
      ``half_life_days`` beyond the window, never below ``min_rate``;
    - ``inactive_days`` / ``min_orders``: a customer is dropped when his last purchase is more
      than ``inactive_days`` before the split AND he has fewer than ``min_orders`` orders;
    - ``dedupe``: merge rows of the same customer, item and day;
    - ``max_negatives`` / ``negatives``: negatives kept per query (``None``: all), drawn at
      random (``"random"``) or the hardest by generator votes (``"top"``, harmful: see
      :func:`downsample_negatives`);
    - ``corr_threshold`` / ``corr_sample``: correlation pruning and its row sample;
    - ``top_features`` / ``min_features``: importance cut (``None``: no cut);
    - ``seed``: for the order sample and the correlation sample.
    """

    window_days: int = 120
    half_life_days: float = 60.0
    min_rate: float = 0.1
    inactive_days: int = 180
    min_orders: int = 2
    dedupe: bool = True
    max_negatives: int | None = 50
    negatives: str = "random"
    corr_threshold: float = 0.95
    corr_sample: int = 50_000
    top_features: int | None = 20
    min_features: int = 10
    seed: int = c.SEED


@dataclass
class ReducedHistory:
    """A reduced event history: the kept ``events`` (before ``split_ts``), the per-customer
    statistics over every event seen so far (``n_orders``, ``last_ts``; indexed by user id) and
    the ``report`` of rows / customers / items after each step."""

    events: pd.DataFrame
    customer_stats: pd.DataFrame
    split_ts: pd.Timestamp
    report: dict[str, dict[str, int]] = field(default_factory=dict)


# --- History ----------------------------------------------------------------------------------


def _counts(events: pd.DataFrame) -> dict[str, int]:
    return {
        "rows": len(events),
        "customers": int(events[c.USER_ID].nunique()),
        "items": int(events[c.ITEM_ID].nunique()),
    }


def _dedupe(events: pd.DataFrame) -> pd.DataFrame:
    """Merge rows of one customer, item and day into the first (quantities summed)."""
    events = events.sort_values(c.EVENT_TS, kind="mergesort")
    key = [events[c.USER_ID], events[c.ITEM_ID], events[c.EVENT_TS].dt.normalize()]
    first = ~pd.DataFrame({"u": key[0], "i": key[1], "d": key[2]}).duplicated()
    out = events.loc[first].copy()
    if c.QUANTITY in events.columns:
        total = events.groupby(key, sort=False)[c.QUANTITY].transform("sum")
        out[c.QUANTITY] = total.loc[first].to_numpy()
    return out


def _customer_stats(events: pd.DataFrame) -> pd.DataFrame:
    """Orders (distinct order keys) and last purchase per customer."""
    if events.empty:
        return pd.DataFrame(
            {"n_orders": pd.Series(dtype="int64"), "last_ts": pd.Series(dtype="datetime64[ns]")}
        )
    frame = pd.DataFrame(
        {
            c.USER_ID: events[c.USER_ID].astype(str).to_numpy(),
            "order": order_keys(events).astype(str).to_numpy(),
            c.EVENT_TS: events[c.EVENT_TS].to_numpy(),
        }
    )
    grouped = frame.groupby(c.USER_ID)
    return pd.DataFrame(
        {"n_orders": grouped["order"].nunique(), "last_ts": grouped[c.EVENT_TS].max()}
    )


def _merge_stats(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Combine statistics of disjoint order sets (orders are not split across partitions)."""
    both = pd.concat([old, new])
    return both.groupby(level=0).agg(n_orders=("n_orders", "sum"), last_ts=("last_ts", "max"))


def _order_uniform(events: pd.DataFrame, seed: int) -> np.ndarray:
    """A uniform draw in [0, 1) per row, fixed by (seed, customer, order): whole baskets."""
    keys = events[c.USER_ID].astype(str) + "\x1f" + order_keys(events).astype(str)
    hashed = pd.util.hash_pandas_object(
        keys.reset_index(drop=True), index=False, hash_key=f"{seed:016d}"[-16:]
    ).to_numpy(dtype=np.uint64)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(2**53)


def keep_probability(age_days: np.ndarray, config: ReductionConfig) -> np.ndarray:
    """1 inside the window, then halving every ``half_life_days``, floored at ``min_rate``."""
    beyond = np.maximum(np.asarray(age_days, dtype=np.float64) - config.window_days, 0.0)
    rate = np.exp2(-beyond / config.half_life_days)
    return np.where(beyond <= 0, 1.0, np.maximum(rate, config.min_rate))


def _reduce(
    events: pd.DataFrame,
    stats: pd.DataFrame,
    split: pd.Timestamp,
    config: ReductionConfig,
    report: dict[str, dict[str, int]],
) -> pd.DataFrame:
    """Inactive customers, then the window + decayed order sample (``events`` deduped)."""
    cutoff = split - config.inactive_days * _DAY
    inactive = stats.index[(stats["last_ts"] < cutoff) & (stats["n_orders"] < config.min_orders)]
    events = events.loc[~events[c.USER_ID].astype(str).isin(inactive)]
    report["inactive_customers"] = _counts(events)

    if events.empty:
        report["sample"] = _counts(events)
        return events.reset_index(drop=True)
    order = order_keys(events).astype(str)
    first_ts = events.groupby([events[c.USER_ID].astype(str), order])[c.EVENT_TS].transform("min")
    age = ((split - first_ts) / _DAY).to_numpy(dtype=np.float64)
    keep = _order_uniform(events, config.seed) < keep_probability(age, config)
    events = events.loc[keep]
    report["sample"] = _counts(events)
    return events.sort_values([c.EVENT_TS], kind="mergesort").reset_index(drop=True)


def reduce_history(
    events: pd.DataFrame, split_ts: pd.Timestamp | str, config: ReductionConfig | None = None
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Reduce the purchases before ``split_ts`` (see the module notes); the reduced events and
    the rows / customers / items after each step (``input``, ``dedupe``, ``inactive_customers``,
    ``sample``). Non-purchase events and events from the split on are not kept."""
    history = reduce(None, events, split_ts, config)
    return history.events, history.report


def reduce(
    previous: ReducedHistory | None,
    new_events: pd.DataFrame,
    split_ts: pd.Timestamp | str,
    config: ReductionConfig | None = None,
) -> ReducedHistory:
    """The reduced history at ``split_ts`` from the ``previous`` one (``None``: start from
    scratch) and the events landed since (all later than ``previous.split_ts``).

    Equals reducing the union of every raw event at ``split_ts``, except for customers dropped
    as inactive earlier who buy again: they keep only the rows landed since (module notes).
    The report's ``input`` counts the previous reduced rows plus the new purchases.
    """
    config = config or ReductionConfig()
    split = pd.Timestamp(split_ts)
    new, _ = purchases_only(new_events)
    new = new.loc[new[c.EVENT_TS] < split]
    if previous is not None:
        if len(new) and new[c.EVENT_TS].min() < previous.split_ts:
            raise ValueError("new events must not be older than the previous split")
        events = pd.concat([previous.events, new], ignore_index=True)
        known_days = previous.events[c.EVENT_TS].dt.normalize().max()
    else:
        events, known_days = new, None
    report: dict[str, dict[str, int]] = {"input": _counts(events)}
    if config.dedupe:
        if known_days is None:
            events = _dedupe(events)
        else:  # only the last known day can gain duplicates from the new partition
            old = previous.events.loc[previous.events[c.EVENT_TS].dt.normalize() < known_days]
            tail = events.loc[events[c.EVENT_TS].dt.normalize() >= known_days]
            events = pd.concat([old, _dedupe(tail)], ignore_index=True)
    report["dedupe"] = _counts(events)
    stats = _customer_stats(new)
    if previous is not None:
        stats = _merge_stats(previous.customer_stats, stats)
    reduced = _reduce(events, stats, split, config, report)
    return ReducedHistory(events=reduced, customer_stats=stats, split_ts=split, report=report)


# --- Training rows ----------------------------------------------------------------------------


def downsample_negatives(
    frame: pd.DataFrame,
    max_negatives: int | None,
    generators: Sequence[str],
    *,
    strategy: str = "random",
    seed: int = c.SEED,
) -> pd.DataFrame:
    """Every positive plus ``max_negatives`` negatives per query; keeps the (qid, item) order.

    ``strategy="random"`` (default): a seeded uniform sample of the negatives (the training
    distribution stays that of the served candidates). ``"top"``: the negatives proposed by
    most generators (ties: best rank, then item id). Measured on UCI, ``"top"`` is harmful: all
    positives but only hard negatives teach the model that few sources / poor ranks mean a
    purchase (NDCG@10 0.045 against 0.377; benchmarks/results/reduction.md)."""
    if max_negatives is None:
        return frame
    if strategy == "top":
        ranks = frame[[f"{g}_rank" for g in generators]].min(axis=1).fillna(np.inf)
        keys = {"neg_sources": -frame["n_sources"].to_numpy(), "rank": ranks.to_numpy()}
    elif strategy == "random":
        keys = {"draw": np.random.default_rng(seed).random(len(frame))}
    else:
        raise ValueError(f"unknown strategy {strategy!r}; expected 'random' or 'top'")
    order = pd.DataFrame(
        {QID: frame[QID].to_numpy(), **keys, c.ITEM_ID: frame[c.ITEM_ID].to_numpy()},
        index=frame.index,
    ).sort_values([QID, *keys, c.ITEM_ID], kind="mergesort")
    negative = frame.loc[order.index, LABEL].to_numpy() == 0
    position = order.assign(neg=negative).groupby(QID)["neg"].cumsum().to_numpy()
    keep_index = order.index[~negative | (position <= max_negatives)]
    return frame.loc[frame.index.isin(keep_index)].reset_index(drop=True)


# --- Features ---------------------------------------------------------------------------------


def select_features(
    frame: pd.DataFrame,
    features: Sequence[str],
    importance: Mapping[str, float] | None = None,
    config: ReductionConfig | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Kept features (input order) and a report ``{"constant": [...], "correlated": {dropped:
    [kept, r]}, "low_importance": [...], "kept": [...]}``.

    Constant: at most one distinct non-missing value. Correlated: Pearson ``|r| >
    corr_threshold`` on a seeded sample of ``corr_sample`` rows (pairwise complete); of a pair,
    the less important feature goes (``importance``), else the later one in ``features``.
    Importance cut: the ``top_features`` most important (at least ``min_features``; skipped
    without ``importance``)."""
    config = config or ReductionConfig()
    features = list(features)
    sample = frame
    if len(frame) > config.corr_sample:
        sample = frame.sample(config.corr_sample, random_state=config.seed)
    values = sample[features].astype(np.float64)
    constant = [f for f in features if values[f].nunique(dropna=True) <= 1]
    kept = [f for f in features if f not in constant]

    weight = {f: float((importance or {}).get(f, 0.0)) for f in features}
    position = {f: i for i, f in enumerate(features)}
    corr = values[kept].corr().abs()
    correlated: dict[str, list[Any]] = {}
    # strongest pairs first; a dropped feature no longer removes others
    pairs = [
        (corr.iloc[i, j], a, b)
        for i, a in enumerate(kept)
        for j, b in enumerate(kept)
        if i < j and corr.iloc[i, j] > config.corr_threshold
    ]
    for r, a, b in sorted(pairs, key=lambda p: (-p[0], position[p[1]], position[p[2]])):
        if a in correlated or b in correlated:
            continue
        keep_a = (weight[a], -position[a]) >= (weight[b], -position[b])
        drop, stay = (b, a) if keep_a else (a, b)
        correlated[drop] = [stay, round(float(r), 4)]
    kept = [f for f in kept if f not in correlated]

    low: list[str] = []
    if importance is not None and config.top_features is not None:
        n = max(config.top_features, config.min_features)
        ranked = sorted(kept, key=lambda f: (-weight[f], position[f]))
        low = ranked[n:]
        kept = [f for f in kept if f not in low]
    report = {"constant": constant, "correlated": correlated, "low_importance": low, "kept": kept}
    return kept, report


def _dmatrix(frame: pd.DataFrame, features: Sequence[str]) -> Any:
    import xgboost as xgb

    return xgb.DMatrix(
        frame[list(features)].to_numpy(dtype=np.float32),
        label=frame[LABEL].to_numpy(dtype=np.float32),
        qid=frame[QID].to_numpy(dtype=np.uint32),
        missing=np.nan,
        feature_names=list(features),
    )


def quick_importance(
    frame: pd.DataFrame, features: Sequence[str], config: RankerConfig, rounds: int = 50
) -> dict[str, float]:
    """Total gain per feature of a short first fit (``rounds`` boosting rounds) on ``frame``."""
    import xgboost as xgb

    booster = xgb.train(config.booster_params(), _dmatrix(frame, features), num_boost_round=rounds)
    raw = booster.get_score(importance_type="total_gain")
    return {f: float(raw.get(f, 0.0)) for f in features}


# --- The reduced fit --------------------------------------------------------------------------


def fit_reduced_ranker(
    events: pd.DataFrame,
    split_ts: pd.Timestamp | str,
    config: RankerConfig | None = None,
    *,
    features: Sequence[str] | None = None,
    max_negatives: int | None = None,
    negatives: str = "random",
    seed: int = c.SEED,
    returns: pd.DataFrame | None = None,
    prepared: tuple[pd.DataFrame, dict[str, pd.DataFrame]] | None = None,
) -> Ranker:
    """Like :func:`~recsys_assets.lib.ranking.fit_ranker` (pandas path), but trained on the
    columns ``features`` only (default: all) and at most ``max_negatives`` negatives per query
    (:func:`downsample_negatives` with ``negatives`` and ``seed``).
    ``events`` is typically a reduced history; the serving generators and feature tables come
    from the same events. ``prepared``: the ``training_set`` output already built from them.
    ``fit_seconds`` covers everything done here."""
    import xgboost as xgb

    config = config or RankerConfig()
    started = time.perf_counter()
    split = pd.Timestamp(split_ts)
    split = split.tz_convert("UTC").tz_localize(None) if split.tzinfo is not None else split
    if prepared is None:
        prepared = training_set(events, split, config, returns=returns)
    frame, tables = prepared
    names = config.generator_names()
    chosen = list(features) if features is not None else feature_columns(names)
    frame = downsample_negatives(frame, max_negatives, names, strategy=negatives, seed=seed)
    booster = xgb.train(
        config.booster_params(), _dmatrix(frame, chosen), num_boost_round=config.num_boost_round
    )
    purchases, _ = purchases_only(events)
    purchases = purchases.loc[purchases[c.EVENT_TS] < split].reset_index(drop=True)
    purchases[c.USER_ID] = purchases[c.USER_ID].astype(str)
    purchases[c.ITEM_ID] = purchases[c.ITEM_ID].astype(str)
    generators = {name: g.fit(purchases) for name, g in make_generators(config).items()}
    stats = {
        "rows": len(frame),
        "queries": int(frame[QID].nunique()),
        "positives": int(frame[LABEL].sum()),
        "features": len(chosen),
    }
    return Ranker(
        config=config,
        generators=generators,
        tables=tables,
        booster=booster,
        features=chosen,
        split_ts=split,
        fit_seconds=time.perf_counter() - started,
        train_stats=stats,
    )
