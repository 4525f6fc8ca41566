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

:func:`fit_reduced_ranker` trains the XGBoost ranker on :func:`~recsys_assets.training.ranker.
training_set` output restricted to the chosen columns (``training/ranker.py`` has no feature-subset
knob) and returns an ordinary :class:`~recsys_assets.training.ranker.Ranker` whose ``features`` is
the
subset, so ``recommend`` scores with the same columns.

**Retraining recipe** (the :class:`ReductionConfig` defaults, measured in
``benchmarks/results/reduction.md``): keep the full history (``history=False``: the history
reduction costs 5-7% NDCG@10 because the serving generators and feature tables are rebuilt from
the sample), and build only what changed since the previous model: the labelled candidates of
the newest cutoff, whose generators are the previous model's serving generators (fitted on the
purchases before its split, which is that cutoff; ``previous=``), down-sampled to 30 random
negatives per query *before* the feature join (:func:`reduced_training_frame`); then
**warm-start** the previous booster with 100 more rounds at ``eta`` 0.05 on those rows
(``warm_start``). Without a previous model (``previous=None``) the booster is fitted from scratch
on every cutoff (closed cutoffs reused from ``cutoff_rows`` when given) with 100 rounds at
``eta`` 0.15 on the selected features. The serving generators and feature tables at the new
split are always rebuilt: they are most of what is left.

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

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.evaluation.protocol import order_keys, purchases_only
from recsys_assets.features.ttl import table_ttls
from recsys_assets.training.candidates import CandidateGenerator
from recsys_assets.training.ranker import (
    LABEL,
    QID,
    Ranker,
    RankerConfig,
    feature_columns,
    feature_tables,
    labelled_candidates,
    make_generators,
    naive_utc,
    train_purchases,
    training_frame,
)

__all__ = [
    "CUSTOMER_STATS",
    "ReducedHistory",
    "ReductionConfig",
    "cutoff_rows_from",
    "downsample_negatives",
    "fit_reduced_ranker",
    "keep_probability",
    "new_cutoffs",
    "quick_importance",
    "reduce",
    "reduce_history",
    "reduced_training_frame",
    "select_features",
]

CUSTOMER_STATS = ("n_orders", "last_ts")
_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class ReductionConfig:
    """The knobs of the reductions (see the module notes); the defaults are the measured
    retraining recipe.

    - ``history``: whether to reduce the history at all (off: it costs 5-7% NDCG@10);
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
    - ``num_boost_round`` / ``eta``: the booster fitted from scratch (the production ranker:
      300 rounds at 0.05);
    - ``warm_start`` / ``warm_rounds`` / ``warm_eta``: with a previous model, add
      ``warm_rounds`` trees at ``warm_eta`` to its booster, trained on the new cutoffs only;
    - ``seed``: for the order sample, the negatives and the correlation sample.
    """

    history: bool = False
    window_days: int = 120
    half_life_days: float = 60.0
    min_rate: float = 0.1
    inactive_days: int = 180
    min_orders: int = 2
    dedupe: bool = True
    max_negatives: int | None = 30
    negatives: str = "random"
    corr_threshold: float = 0.95
    corr_sample: int = 50_000
    top_features: int | None = 20
    min_features: int = 10
    num_boost_round: int = 100
    eta: float = 0.15
    warm_start: bool = True
    warm_rounds: int = 100
    warm_eta: float = 0.05
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


def cutoff_rows_from(
    generators: Mapping[str, CandidateGenerator],
    purchases: pd.DataFrame,
    cutoff: pd.Timestamp | str,
    split_ts: pd.Timestamp | str,
    config: RankerConfig,
) -> pd.DataFrame:
    """The labelled candidates of one cutoff, like ``ranking.training_set`` builds them, but
    from already fitted ``generators``: those fitted on the purchases before ``cutoff``, e.g.
    the serving generators of the model trained with ``cutoff`` as its split. Saves refitting
    them (ALS, item-KNN ...). Queries: customers with purchases both before the cutoff and in
    ``[cutoff, min(cutoff + label_days, split_ts))`` and at least one positive candidate."""
    return labelled_candidates(
        purchases, naive_utc(cutoff), naive_utc(split_ts), config, generators=generators
    )


def new_cutoffs(cutoffs: Sequence[str | pd.Timestamp], previous_split: pd.Timestamp | str) -> list:
    """The cutoffs a model trained at ``previous_split`` has not seen: those at or after it
    (its own cutoffs were before it). Input order kept."""
    prev = naive_utc(previous_split)
    return [t for t in cutoffs if naive_utc(t) >= prev]


def reduced_training_frame(
    events: pd.DataFrame,
    split_ts: pd.Timestamp | str,
    config: RankerConfig,
    *,
    max_negatives: int | None = 30,
    negatives: str = "random",
    seed: int = c.SEED,
    returns: pd.DataFrame | None = None,
    cutoff_rows: dict[pd.Timestamp, pd.DataFrame] | None = None,
    generators: Mapping[pd.Timestamp, Mapping[str, CandidateGenerator]] | None = None,
    report: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """``downsample_negatives(training_set(...)[0], max_negatives, ...)`` and the feature
    tables, the same rows in the same order, cheaper: the negatives are dropped before the
    point-in-time join, closed cutoffs come from ``cutoff_rows`` (see
    ``ranking.reusable_cutoffs``; new cutoffs are added to it) and a cutoff found in
    ``generators`` (cutoff -> generators fitted on the purchases before it) takes its
    candidates from them instead of refitting (:func:`cutoff_rows_from`). ``report`` (if
    given) receives the candidate rows before and after down-sampling."""
    split = naive_utc(split_ts)
    purchases = train_purchases(events, split)
    tables = feature_tables(purchases, returns, end=split)
    cache = cutoff_rows if cutoff_rows is not None else {}
    fitted = {naive_utc(t): g for t, g in (generators or {}).items()}
    parts = []
    for cutoff in sorted({naive_utc(t) for t in config.cutoffs}):
        if not cutoff < split:
            raise ValueError(f"cutoff {cutoff} must be before the split date {split}")
        if cutoff not in cache:
            if cutoff in fitted:
                cache[cutoff] = cutoff_rows_from(fitted[cutoff], purchases, cutoff, split, config)
            else:
                cache[cutoff] = labelled_candidates(purchases, cutoff, split, config)
        if len(cache[cutoff]):
            parts.append(cache[cutoff])
    if not parts:
        raise ValueError("no training rows: no cutoff has customers active on both sides")
    pairs = pd.concat(parts, ignore_index=True)
    pairs = pairs.sort_values([c.FEATURE_TS, c.USER_ID, c.ITEM_ID], kind="mergesort")
    pairs = pairs.reset_index(drop=True)
    pairs[QID] = pairs.groupby([c.FEATURE_TS, c.USER_ID], sort=True).ngroup()
    kept = downsample_negatives(
        pairs, max_negatives, config.generator_names(), strategy=negatives, seed=seed
    )
    if report is not None:
        report.update(candidate_rows=len(pairs), training_rows=len(kept))
    frame = training_frame(kept, tables=tables, ttls=table_ttls(tables, dict(config.ttl_days)))
    frame = frame.sort_values([QID, c.ITEM_ID], kind="mergesort").reset_index(drop=True)
    return frame, tables


def fit_reduced_ranker(
    events: pd.DataFrame,
    split_ts: pd.Timestamp | str,
    config: RankerConfig | None = None,
    *,
    reduction: ReductionConfig | None = None,
    features: Sequence[str] | None = None,
    returns: pd.DataFrame | None = None,
    cutoff_rows: dict[pd.Timestamp, pd.DataFrame] | None = None,
    previous: Ranker | None = None,
    prepared: tuple[pd.DataFrame, dict[str, pd.DataFrame]] | None = None,
) -> Ranker:
    """Retrain the ranker cheaply (pandas path); returns an ordinary ``Ranker``.

    ``events`` is the history to train and serve from (the full one by default; a reduced one
    when ``reduction.history``, which the caller applies with :func:`reduce_history`). Training
    rows: :func:`reduced_training_frame` with ``reduction.max_negatives`` random negatives per
    query, reusing ``cutoff_rows`` and, for the cutoff equal to ``previous.split_ts``, the
    previous model's serving generators.

    - With ``previous`` and ``reduction.warm_start``: only the cutoffs ``previous`` has not
      seen (:func:`new_cutoffs`) are built and ``reduction.warm_rounds`` trees at
      ``reduction.warm_eta`` are added to its booster, on its features (``features`` ignored);
    - otherwise a booster of ``reduction.num_boost_round`` rounds at ``reduction.eta`` is fitted
      on every cutoff, on ``features`` (default: all).

    ``prepared``: the :func:`reduced_training_frame` output already built (rows already
    down-sampled). The serving generators are refitted on every purchase before the split;
    ``fit_seconds`` covers everything done here."""
    import xgboost as xgb

    config = config or RankerConfig()
    reduction = reduction or ReductionConfig()
    started = time.perf_counter()
    split = naive_utc(split_ts)
    warm = previous is not None and reduction.warm_start
    train_config = config
    if warm:
        assert previous is not None
        train_config = dataclasses.replace(
            config, cutoffs=tuple(new_cutoffs(config.cutoffs, previous.split_ts))
        )
        if not train_config.cutoffs:
            raise ValueError(f"no cutoff at or after the previous split {previous.split_ts}")
        chosen = list(previous.features)
        params = {**config.booster_params(), "eta": reduction.warm_eta}
        rounds, base = reduction.warm_rounds, previous.booster
    else:
        chosen = (
            list(features) if features is not None else feature_columns(config.generator_names())
        )
        params = {**config.booster_params(), "eta": reduction.eta}
        rounds, base = reduction.num_boost_round, None
    if prepared is None:
        fitted = {}
        if previous is not None:
            fitted = {naive_utc(previous.split_ts): previous.generators}
        prepared = reduced_training_frame(
            events,
            split,
            train_config,
            max_negatives=reduction.max_negatives,
            negatives=reduction.negatives,
            seed=reduction.seed,
            returns=returns,
            cutoff_rows=cutoff_rows,
            generators=fitted,
        )
    frame, tables = prepared
    booster = xgb.train(params, _dmatrix(frame, chosen), num_boost_round=rounds, xgb_model=base)
    purchases = train_purchases(events, split)
    generators = {name: g.fit(purchases) for name, g in make_generators(config).items()}
    stats = {
        "rows": len(frame),
        "queries": int(frame[QID].nunique()),
        "positives": int(frame[LABEL].sum()),
        "features": len(chosen),
        "cutoffs": [str(naive_utc(t).date()) for t in sorted(train_config.cutoffs)],
        "warm_start": warm,
        "rounds": rounds,
        "trees": booster.num_boosted_rounds(),
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
