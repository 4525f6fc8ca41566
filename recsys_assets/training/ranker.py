"""The production ranker: XGBoost learning-to-rank over the union of candidate generators.

Two stages:

1. **candidates**: the top-N of several generators (:mod:`recsys_assets.training.candidates`), by
   default repeat purchase, time-decayed popularity, item-KNN (BM25) and ALS. Their union is what
   the ranker orders; each candidate keeps every generator's score and rank as features (NaN
   when that generator did not propose it), plus how many generators proposed it;
2. **ranking**: an XGBoost ``rank:ndcg`` model (rows sorted by query id, ``qid`` passed) over the
   generator features and the point-in-time features of the customer, the item and the pair
   (the Feast views ``customer_profile``, ``item_popularity`` and ``customer_item``) as of the
   moment the candidates are ranked, plus recency and cadence features derived from them.

Training (:func:`fit_ranker`): for every cutoff ``T`` in ``RankerConfig.cutoffs`` (before the
split date), the generators are fitted on the purchases before ``T``; a candidate is positive
when its customer bought the item in ``[T, min(T + label_days, split_ts))``; features are joined
as of ``T``; the queries are (cutoff, customer) pairs of customers with purchases both before
``T`` and in the label window (the protocol's evaluated customers, one month earlier). Nothing at
or after the split date is read. For serving / evaluation the generators are refitted on every
purchase before the split date and candidates are ranked with features as of the split date.

Features (:func:`training_frame`) come AS OF each row's ``event_timestamp`` through one of two
equivalent paths: :func:`via_feast` (the Feast offline store, DuckDB, point-in-time join) or
:func:`via_pandas` (``pd.merge_asof`` backward, exact matches allowed, within each view's TTL,
derived from the tables by :func:`~recsys_assets.features.ttl.table_ttls`, the function that
gives the Feast views theirs, with ``RankerConfig.ttl_days`` replacing it for the views named
there, as the setting ``features.ttl_days`` does for the registry). The feature tables stamp a
day's values at the close of the day, so an event on the cutoff day is never visible at the
cutoff. Timestamps inside the tables (``last_order_ts`` ...) are Unix
seconds, as in the Feast tables (:func:`~recsys_assets.features.store.to_feast_table`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.evaluation.metrics import rank_by_score
from recsys_assets.evaluation.protocol import purchases_only
from recsys_assets.features.store import quiet_feast, to_feast_table
from recsys_assets.features.tables import (
    customer_features,
    customer_item_features,
    item_features,
)
from recsys_assets.features.ttl import table_ttls
from recsys_assets.training.candidates import (
    CandidateGenerator,
    ImplicitALS,
    ItemKNN,
    Popularity,
    RepeatPurchase,
)

__all__ = [
    "CANDIDATE",
    "DERIVED",
    "DERIVED_INPUTS",
    "GENERATOR_NAMES",
    "LABEL",
    "QID",
    "STORED",
    "VIEW_KEYS",
    "Ranker",
    "RankerConfig",
    "candidate_frame",
    "derive_arrays",
    "derive_features",
    "feature_columns",
    "feature_lineage",
    "feature_refs",
    "feature_tables",
    "fit_ranker",
    "label_pairs",
    "labelled_candidates",
    "make_generators",
    "naive_utc",
    "train_purchases",
    "training_frame",
    "training_set",
    "via_feast",
    "via_pandas",
]

LABEL = "label"
QID = "qid"
N_SOURCES = "n_sources"
GENERATOR_NAMES = ("repeat", "popularity", "item_knn", "als")

# The stored Feast views the ranker reads, their join keys and features (as declared in
# feature_repo/feature_views.py; their TTLs follow the data: recsys_assets/features/ttl.py).
VIEW_KEYS: dict[str, tuple[str, ...]] = {
    "customer_profile": (c.USER_ID,),
    "item_popularity": (c.ITEM_ID,),
    "customer_item": (c.USER_ID, c.ITEM_ID),
}
VIEW_FEATURES: dict[str, tuple[str, ...]] = {
    "customer_profile": c.CUSTOMER_FEATURES,
    "item_popularity": c.ITEM_FEATURES,
    "customer_item": c.CUSTOMER_ITEM_FEATURES,
}
RAW_FEATURES: tuple[str, ...] = tuple(f for view in VIEW_FEATURES.values() for f in view)
STRING_FEATURES = (c.PRICE_BAND, c.HOME_COUNTRY)
_TS_FEATURES = (c.FIRST_ORDER_TS, c.LAST_ORDER_TS, c.LAST_BOUGHT_TS)
_PRICE_BAND_CODE = {c.PRICE_BAND_LOW: 0.0, c.PRICE_BAND_MID: 1.0, c.PRICE_BAND_HIGH: 2.0}
_DAY_S = 86_400.0

# Model inputs derived from the raw features (and the row's timestamp).
DERIVED_FEATURES: tuple[str, ...] = (
    c.DAYS_SINCE_LAST_ORDER,
    c.CUSTOMER_TENURE_DAYS,
    c.DAYS_SINCE_LAST_BOUGHT,
    "customer_cadence_days",  # tenure / (orders - 1): mean days between orders
    "order_recency_ratio",  # days since last order / cadence (due to buy again when ~1)
    "item_share_of_orders",  # times_bought / orders_total
    "item_cadence_days",  # tenure / times_bought: the customer's cycle for this item
    "item_recency_ratio",  # days since last bought / item cadence
    "sales_30_90",  # sales_30d / (sales_90d / 3): monthly trend
    "price_band_code",  # low 0, mid 1, high 2, unknown NaN
    "is_home_market",  # 1 if the customer's home country is the home market
)
_MODEL_RAW = tuple(f for f in RAW_FEATURES if f not in (*STRING_FEATURES, *_TS_FEATURES))


def feature_columns(generators: Sequence[str]) -> list[str]:
    """The model's input columns, in order, for candidates from ``generators``."""
    gen = [f"{g}_{part}" for g in generators for part in ("score", "rank")]
    return [*gen, N_SOURCES, *_MODEL_RAW, *DERIVED_FEATURES]


def feature_refs() -> list[str]:
    """Feast feature references (``view:feature``) of the stored features the ranker joins."""
    return [f"{view}:{name}" for view, names in VIEW_FEATURES.items() for name in names]


# The stored features each derived input is computed from (with the moment it is scored at);
# test_ranker checks it against derive_arrays.
DERIVED_INPUTS: dict[str, tuple[str, ...]] = {
    c.DAYS_SINCE_LAST_ORDER: (c.LAST_ORDER_TS,),
    c.CUSTOMER_TENURE_DAYS: (c.FIRST_ORDER_TS,),
    c.DAYS_SINCE_LAST_BOUGHT: (c.LAST_BOUGHT_TS,),
    "customer_cadence_days": (c.FIRST_ORDER_TS, c.ORDERS_TOTAL),
    "order_recency_ratio": (c.LAST_ORDER_TS, c.FIRST_ORDER_TS, c.ORDERS_TOTAL),
    "item_share_of_orders": (c.TIMES_BOUGHT, c.ORDERS_TOTAL),
    "item_cadence_days": (c.FIRST_ORDER_TS, c.TIMES_BOUGHT),
    "item_recency_ratio": (c.LAST_BOUGHT_TS, c.FIRST_ORDER_TS, c.TIMES_BOUGHT),
    "sales_30_90": (c.SALES_30D, c.SALES_90D),
    "price_band_code": (c.PRICE_BAND,),
    "is_home_market": (c.HOME_COUNTRY,),
}
CANDIDATE = "candidate"  # a generator's score or rank, or how many generators proposed the item
STORED = "stored"  # a Feast feature as it is read
DERIVED = "derived"  # computed from stored features and the moment of scoring


def feature_lineage(features: Sequence[str]) -> list[dict[str, Any]]:
    """What each model input in ``features`` (a ranker's ``features``, in order) is and which
    Feast features it comes from: ``name``, ``kind`` (:data:`CANDIDATE`, :data:`STORED` or
    :data:`DERIVED`) and ``feast_refs``, the references (``view:feature``, e.g.
    ``customer_profile:orders_total``) it is read or derived from; none for candidate columns,
    which the generators compute. What a model's lineage records as its features."""
    view_of = {name: view for view, names in VIEW_FEATURES.items() for name in names}
    out = []
    for name in features:
        if name in DERIVED_INPUTS:
            kind, sources = DERIVED, DERIVED_INPUTS[name]
        elif name in view_of:
            kind, sources = STORED, (name,)
        elif name == N_SOURCES or name.endswith(("_score", "_rank")):
            kind, sources = CANDIDATE, ()
        else:
            raise ValueError(f"model input {name!r} is neither a candidate nor a feature")
        refs = [f"{view_of[source]}:{source}" for source in sources]
        out.append({"name": name, "kind": kind, "feast_refs": refs})
    return out


# --- Configuration ----------------------------------------------------------------------------


def _default_xgb() -> dict[str, Any]:
    return {
        "objective": "rank:ndcg",
        "eval_metric": "ndcg@10",
        "eta": 0.05,
        "max_depth": 6,
        "min_child_weight": 20.0,  # a leaf needs real support: small shops overfit at 1
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "tree_method": "hist",
        "lambdarank_pair_method": "topk",
        "lambdarank_num_pair_per_sample": 10,
    }


@dataclass(frozen=True)
class RankerConfig:
    """Everything that defines a ranker.

    - ``candidates``: (generator name, top-N) pairs, names from :data:`GENERATOR_NAMES`;
    - ``popularity_half_life_days``: time decay of the popularity generator;
    - ``als_factors``: ALS factors; ``knn_k``: item-KNN neighbours;
    - ``cutoffs``: training cutoffs (each must be before the split date);
    - ``label_days``: length of each cutoff's label window (clipped at the split date);
    - ``xgb_params`` / ``num_boost_round``: the booster (``seed`` and ``nthread`` are added);
      ``num_boost_round`` is the most rounds: see ``early_stopping_rounds``;
    - ``early_stopping_rounds``: with two or more cutoffs, a probe booster is fitted on the older
      cutoffs and scored (NDCG@10) on the newest one; it stops after this many rounds without a
      gain, and the booster is then fitted on every cutoff with the probe's best number of
      rounds. A small shop's few thousand queries are learnt by heart in 300 rounds; a large one
      uses them all. None: always ``num_boost_round``;
    - ``seed``, ``nthread``: for reproducibility (``nthread`` also caps XGBoost's threads);
    - ``ttl_days``: (view, days) TTLs of the pandas point-in-time join for some views (the
      setting ``features.ttl_days``, which the registry gets too); the others are derived from
      the feature tables (:func:`~recsys_assets.features.ttl.table_ttls`).
    """

    candidates: tuple[tuple[str, int], ...] = (
        ("repeat", 100),
        ("popularity", 50),
        ("item_knn", 100),
        ("als", 100),
    )
    popularity_half_life_days: float = 30.0
    als_factors: int = 64
    knn_k: int = 100
    cutoffs: tuple[str, ...] = ("2011-10-01", "2011-09-01", "2011-08-01")
    label_days: int = 30
    xgb_params: Mapping[str, Any] = field(default_factory=_default_xgb)
    num_boost_round: int = 300
    early_stopping_rounds: int | None = 30
    seed: int = c.SEED
    nthread: int = 2
    ttl_days: tuple[tuple[str, float], ...] = ()

    def generator_names(self) -> list[str]:
        return [name for name, _ in self.candidates]

    def booster_params(self) -> dict[str, Any]:
        return {**self.xgb_params, "seed": self.seed, "nthread": self.nthread}


def make_generators(config: RankerConfig) -> dict[str, CandidateGenerator]:
    """Unfitted generators of ``config.candidates``, by name."""
    out: dict[str, CandidateGenerator] = {}
    for name, _ in config.candidates:
        if name == "repeat":
            out[name] = RepeatPurchase()
        elif name == "popularity":
            out[name] = Popularity(half_life_days=config.popularity_half_life_days)
        elif name == "item_knn":
            out[name] = ItemKNN("bm25", k=config.knn_k)
        elif name == "als":
            out[name] = ImplicitALS(factors=config.als_factors, seed=config.seed)
        else:
            raise ValueError(f"unknown generator {name!r}; expected one of {GENERATOR_NAMES}")
    return out


# --- Candidates and labels --------------------------------------------------------------------


def candidate_frame(
    generators: Mapping[str, CandidateGenerator],
    users: Sequence[str],
    candidates: Sequence[tuple[str, int]],
) -> pd.DataFrame:
    """The union of the generators' top-N per customer: user_id, item_id, ``<gen>_score``,
    ``<gen>_rank`` (NaN when the generator did not propose the item) and ``n_sources``.
    Sorted by user and item."""
    merged: pd.DataFrame | None = None
    names = []
    for name, n in candidates:
        recs = generators[name].recommend(users, n)
        part = pd.DataFrame(
            {
                c.USER_ID: recs[c.USER_ID].astype(str).to_numpy(dtype=object),
                c.ITEM_ID: recs[c.ITEM_ID].astype(str).to_numpy(dtype=object),
                f"{name}_score": recs[c.SCORE].to_numpy(dtype=np.float64),
                f"{name}_rank": recs[c.RANK].to_numpy(dtype=np.float64),
            }
        )
        names.append(name)
        if merged is None:
            merged = part
        else:
            merged = merged.merge(part, on=[c.USER_ID, c.ITEM_ID], how="outer")
    assert merged is not None, "no candidate generators configured"
    ranks = merged[[f"{name}_rank" for name in names]]
    merged[N_SOURCES] = ranks.notna().sum(axis=1).astype(np.float64)
    return merged.sort_values([c.USER_ID, c.ITEM_ID], kind="mergesort").reset_index(drop=True)


def label_pairs(purchases: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Distinct (user_id, item_id) bought in ``[start, end)``."""
    ts = purchases[c.EVENT_TS]
    window = purchases.loc[(ts >= start) & (ts < end), [c.USER_ID, c.ITEM_ID]]
    return window.astype(str).astype(object).drop_duplicates().reset_index(drop=True)


# --- Feature tables and the point-in-time join -----------------------------------------------


def feature_tables(
    purchases: pd.DataFrame,
    returns: pd.DataFrame | None = None,
    *,
    end: pd.Timestamp | None = None,
) -> dict[str, pd.DataFrame]:
    """The three stored feature tables from ``purchases`` (and optional ``returns``), in the
    Feast form (timestamps inside as Unix seconds), keyed by view name. ``end`` (exclusive)
    drops every event from it on; pass the split date so nothing of the test period is used."""
    if end is not None:
        end_naive = naive_utc(end)
        purchases = purchases.loc[purchases[c.EVENT_TS] < end_naive]
        if returns is not None:
            returns = returns.loc[returns[c.EVENT_TS] < end_naive]
    return {
        "customer_profile": to_feast_table(customer_features(purchases, returns)),
        "item_popularity": to_feast_table(item_features(purchases, returns, end=end)),
        "customer_item": to_feast_table(customer_item_features(purchases)),
    }


def naive_utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    """A timestamp as timezone-naive UTC (the canonical event table's convention)."""
    ts = pd.Timestamp(ts)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _entity(entity_df: pd.DataFrame) -> pd.DataFrame:
    ts = pd.to_datetime(entity_df[c.FEATURE_TS], utc=True).astype("datetime64[ns, UTC]")
    return pd.DataFrame(
        {
            c.USER_ID: entity_df[c.USER_ID].astype(str).to_numpy(dtype=object),
            c.ITEM_ID: entity_df[c.ITEM_ID].astype(str).to_numpy(dtype=object),
            c.FEATURE_TS: ts.reset_index(drop=True),
        }
    )


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Raw feature columns with one dtype whichever path produced them: float64 for numbers,
    object (None for missing) for the strings."""
    out = frame.copy()
    for name in RAW_FEATURES:
        if name not in out.columns:
            out[name] = np.nan
        if name in STRING_FEATURES:
            values = out[name].astype(object)
            out[name] = values.where(values.notna(), None)
        else:
            out[name] = pd.to_numeric(out[name]).astype(np.float64)
    return out


def via_pandas(
    tables: Mapping[str, pd.DataFrame],
    entity_df: pd.DataFrame,
    ttls: Mapping[str, timedelta] | None = None,
) -> pd.DataFrame:
    """Point-in-time features for (user_id, item_id, event_timestamp) rows, by
    ``pd.merge_asof`` (backward, exact matches allowed, within each view's TTL): the latest row
    of each view stamped at or before the row's time. Rows keep the input's order. ``ttls``
    default: derived from ``tables`` (:func:`~recsys_assets.features.ttl.table_ttls`), as
    the Feast views' are from the tables they are applied with."""
    ttls = table_ttls(tables) if ttls is None else ttls
    out = _entity(entity_df)
    out["_row"] = np.arange(len(out))
    for view, keys in VIEW_KEYS.items():
        names = list(VIEW_FEATURES[view])
        table = tables[view]
        right = pd.DataFrame({k: table[k].astype(str).to_numpy(dtype=object) for k in keys})
        right[c.FEATURE_TS] = pd.to_datetime(table[c.FEATURE_TS], utc=True).astype(
            "datetime64[ns, UTC]"
        )
        for name in names:
            right[name] = table[name].to_numpy()
        right = right.sort_values(c.FEATURE_TS, kind="mergesort")
        left = out[["_row", *keys, c.FEATURE_TS]].sort_values(c.FEATURE_TS, kind="mergesort")
        joined = pd.merge_asof(
            left,
            right,
            on=c.FEATURE_TS,
            by=list(keys),
            direction="backward",
            allow_exact_matches=True,
            tolerance=pd.Timedelta(ttls[view]),
        )
        joined = joined.sort_values("_row", kind="mergesort")
        for name in names:
            out[name] = joined[name].to_numpy()
    return _normalise(out.drop(columns="_row"))


def via_feast(store: Any, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features for (user_id, item_id, event_timestamp) rows from the Feast
    offline store (``store.get_historical_features``). Feast may reorder rows; they are matched
    back on the keys and the timestamp, so rows keep the input's order."""
    entity = _entity(entity_df)
    with quiet_feast():
        got = store.get_historical_features(entity_df=entity, features=feature_refs()).to_df()
    got = got.assign(
        **{
            c.USER_ID: got[c.USER_ID].astype(str).to_numpy(dtype=object),
            c.ITEM_ID: got[c.ITEM_ID].astype(str).to_numpy(dtype=object),
            c.FEATURE_TS: pd.to_datetime(got[c.FEATURE_TS], utc=True).astype("datetime64[ns, UTC]"),
        }
    )
    keys = [c.USER_ID, c.ITEM_ID, c.FEATURE_TS]
    got = got.drop_duplicates(keys)
    out = entity.merge(got[[*keys, *RAW_FEATURES]], on=keys, how="left", validate="many_to_one")
    return _normalise(out)


def derive_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Add :data:`DERIVED_FEATURES` from the raw features and the row's ``event_timestamp``
    (recency in days from the Unix-second timestamps, cadences, ratios, encodings)."""
    out = frame.copy()
    now = (out[c.FEATURE_TS] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    derived = derive_arrays({name: out[name].to_numpy() for name in RAW_FEATURES}, now)
    for name, values in derived.items():
        out[name] = values
    return out


def derive_arrays(raw: Mapping[str, np.ndarray], now_s: np.ndarray | float) -> dict[str, Any]:
    """:data:`DERIVED_FEATURES` from raw feature arrays (numbers as float, strings as object
    arrays with None for missing) and the moment in Unix seconds: the one implementation the
    training frame (:func:`derive_features`) and the online path share."""

    def number(name: str) -> np.ndarray:
        return np.asarray(raw[name], dtype=np.float64)

    def days_since(name: str) -> np.ndarray:
        return (now_s - number(name)) / _DAY_S

    out: dict[str, Any] = {}
    tenure = days_since(c.FIRST_ORDER_TS)
    orders = number(c.ORDERS_TOTAL)
    times = number(c.TIMES_BOUGHT)
    with np.errstate(divide="ignore", invalid="ignore"):
        cadence = np.where(orders > 1, tenure / (orders - 1), np.nan)
        item_cadence = np.where(times > 0, tenure / times, np.nan)
        out[c.DAYS_SINCE_LAST_ORDER] = days_since(c.LAST_ORDER_TS)
        out[c.CUSTOMER_TENURE_DAYS] = tenure
        out[c.DAYS_SINCE_LAST_BOUGHT] = days_since(c.LAST_BOUGHT_TS)
        out["customer_cadence_days"] = cadence
        out["order_recency_ratio"] = out[c.DAYS_SINCE_LAST_ORDER] / cadence
        out["item_share_of_orders"] = np.where(orders > 0, np.nan_to_num(times) / orders, np.nan)
        out["item_cadence_days"] = item_cadence
        out["item_recency_ratio"] = out[c.DAYS_SINCE_LAST_BOUGHT] / item_cadence
        sales30 = number(c.SALES_30D)
        sales90 = number(c.SALES_90D)
        out["sales_30_90"] = (sales30 + 1.0) / (sales90 / 3.0 + 1.0)
    band = np.asarray(raw[c.PRICE_BAND], dtype=object)
    out["price_band_code"] = np.array(
        [_PRICE_BAND_CODE.get(b, np.nan) if isinstance(b, str) else np.nan for b in band],
        dtype=np.float64,
    )
    home = np.asarray(raw[c.HOME_COUNTRY], dtype=object)
    missing = np.array([not isinstance(h, str) for h in home], dtype=bool)
    out["is_home_market"] = np.where(missing, np.nan, (home == c.HOME_MARKET).astype(np.float64))
    return out


def training_frame(
    pairs: pd.DataFrame,
    *,
    tables: Mapping[str, pd.DataFrame] | None = None,
    store: Any = None,
    ttls: Mapping[str, timedelta] | None = None,
) -> pd.DataFrame:
    """``pairs`` (user_id, item_id, event_timestamp = the cutoff, any other columns) with the
    customer, item and customer-item features AS OF each row's timestamp, and the derived
    features. Features come from the Feast offline store when ``store`` is given
    (:func:`via_feast`, under the registered TTLs), else from ``tables`` by the pandas as-of
    join (:func:`via_pandas`, under ``ttls``, default derived from ``tables``); both give the
    same values. Rows keep the order of ``pairs``."""
    if (store is None) == (tables is None):
        raise ValueError("pass exactly one of tables= (pandas as-of join) or store= (Feast)")
    joined = via_feast(store, pairs) if store is not None else via_pandas(tables, pairs, ttls)
    extra = pairs.drop(columns=[c.USER_ID, c.ITEM_ID, c.FEATURE_TS]).reset_index(drop=True)
    joined = pd.concat([joined.reset_index(drop=True), extra], axis=1)
    return derive_features(joined)


# --- The ranker -------------------------------------------------------------------------------


@dataclass
class Ranker:
    """A fitted ranker: generators fitted on every purchase before ``split_ts``, the feature
    tables built from those purchases, and the booster."""

    config: RankerConfig
    generators: dict[str, CandidateGenerator]
    tables: dict[str, pd.DataFrame]
    booster: Any
    features: list[str]
    split_ts: pd.Timestamp
    fit_seconds: float = float("nan")
    train_stats: dict[str, Any] = field(default_factory=dict)

    def candidates(self, users: Sequence[str]) -> pd.DataFrame:
        """The candidate union for ``users`` (see :func:`candidate_frame`)."""
        return candidate_frame(self.generators, users, self.config.candidates)

    def score(
        self,
        users: Sequence[str],
        as_of: pd.Timestamp | str | None = None,
        *,
        store: Any = None,
    ) -> pd.DataFrame:
        """Every candidate of ``users`` with its model ``score`` (features as of ``as_of``,
        default the split date; from Feast when ``store`` is given)."""
        stamp = _utc(self.split_ts if as_of is None else as_of)
        pairs = self.candidates(users).assign(**{c.FEATURE_TS: stamp})
        if store is None:
            ttls = table_ttls(self.tables, dict(self.config.ttl_days))
            frame = training_frame(pairs, tables=self.tables, ttls=ttls)
        else:
            frame = training_frame(pairs, store=store)
        frame[c.SCORE] = self.predict(frame)
        return frame

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        import xgboost as xgb

        matrix = xgb.DMatrix(
            frame[self.features].to_numpy(dtype=np.float32),
            missing=np.nan,
            feature_names=self.features,
        )
        return self.booster.predict(matrix).astype(np.float64)

    def recommend(
        self,
        users: Sequence[str],
        n: int = c.DEFAULT_K,
        as_of: pd.Timestamp | str | None = None,
        *,
        store: Any = None,
    ) -> pd.DataFrame:
        """The best ``n`` candidates per customer: user_id, item_id, score, rank (1 = best;
        ties by item id). Customers without candidates get no rows."""
        scored = self.score(users, as_of, store=store)[[c.USER_ID, c.ITEM_ID, c.SCORE]]
        ranked = rank_by_score(scored, col_score=c.SCORE)
        ranked = ranked.loc[ranked[c.RANK] <= n, [c.USER_ID, c.ITEM_ID, c.SCORE, c.RANK]]
        return ranked.reset_index(drop=True)

    def feature_importance(self, kind: str = "total_gain") -> dict[str, float]:
        """Importance per feature (XGBoost ``kind``: gain, total_gain, weight, ...), sorted
        descending; features never split on are 0."""
        raw = self.booster.get_score(importance_type=kind)
        scores = {name: float(raw.get(name, 0.0)) for name in self.features}
        return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])))


def labelled_candidates(
    purchases: pd.DataFrame,
    cutoff: pd.Timestamp,
    split_ts: pd.Timestamp,
    config: RankerConfig,
    generators: Mapping[str, CandidateGenerator] | None = None,
) -> pd.DataFrame:
    """Candidates with labels for one cutoff (events before the cutoff only for candidates).
    ``generators`` already fitted on the purchases before the cutoff are used as they are;
    without them they are fitted here."""
    before = purchases.loc[purchases[c.EVENT_TS] < cutoff]
    end = min(cutoff + pd.Timedelta(days=config.label_days), split_ts)
    bought = label_pairs(purchases, cutoff, end)
    users = np.intersect1d(
        before[c.USER_ID].astype(str).unique(), bought[c.USER_ID].unique().astype(str)
    )
    if len(before) == 0 or len(users) == 0:
        return pd.DataFrame()
    if generators is None:
        generators = {name: g.fit(before) for name, g in make_generators(config).items()}
    cands = candidate_frame(generators, users.tolist(), config.candidates)
    cands = cands.merge(bought.assign(**{LABEL: 1.0}), on=[c.USER_ID, c.ITEM_ID], how="left")
    cands[LABEL] = cands[LABEL].fillna(0.0)
    # a query without a positive candidate teaches the ranker nothing
    has_positive = cands.groupby(c.USER_ID)[LABEL].transform("max") > 0
    cands = cands.loc[has_positive].reset_index(drop=True)
    return cands.assign(**{c.FEATURE_TS: _utc(cutoff)})


def reusable_cutoffs(
    cutoff_rows: dict[pd.Timestamp, pd.DataFrame], built_at: pd.Timestamp | str, label_days: int
) -> dict[pd.Timestamp, pd.DataFrame]:
    """The cached cutoffs a later retraining may reuse: those whose label window had closed at
    the split they were built with (cutoff + label_days <= that split), since their candidates
    (from purchases before the cutoff) and labels (inside the window) can no longer change."""
    built = naive_utc(built_at)
    window = pd.Timedelta(days=label_days)
    return {t: rows for t, rows in cutoff_rows.items() if t + window <= built}


def train_purchases(events: pd.DataFrame, split: pd.Timestamp) -> pd.DataFrame:
    """The purchases of ``events`` before ``split``, ids as strings: what a ranker trains on."""
    purchases, _ = purchases_only(events)
    purchases = purchases.loc[purchases[c.EVENT_TS] < split].reset_index(drop=True)
    purchases[c.USER_ID] = purchases[c.USER_ID].astype(str)
    purchases[c.ITEM_ID] = purchases[c.ITEM_ID].astype(str)
    return purchases


def training_set(
    events: pd.DataFrame,
    split_ts: pd.Timestamp | str,
    config: RankerConfig,
    *,
    returns: pd.DataFrame | None = None,
    store: Any = None,
    cutoff_rows: dict[pd.Timestamp, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The labelled training frame (candidates of every cutoff with features as of the cutoff,
    ``label`` and ``qid``; rows sorted by ``qid`` then item) and the feature tables it was
    joined from. Only purchases (and returns) before ``split_ts`` are read.

    ``cutoff_rows`` caches the labelled candidates per cutoff across retrainings: entries
    present are reused (the caller keeps only cutoffs whose label window had closed when they
    were built, see :func:`reusable_cutoffs`), missing ones are computed and added to it."""
    split = naive_utc(split_ts)
    purchases = train_purchases(events, split)
    tables = feature_tables(purchases, returns, end=split)
    cache = cutoff_rows if cutoff_rows is not None else {}
    parts = []
    for cutoff in sorted({naive_utc(t) for t in config.cutoffs}):
        if not cutoff < split:
            raise ValueError(f"cutoff {cutoff} must be before the split date {split}")
        if cutoff not in cache:
            cache[cutoff] = labelled_candidates(purchases, cutoff, split, config)
        rows = cache[cutoff]
        if len(rows):
            parts.append(rows)
    if not parts:
        raise ValueError("no training rows: no cutoff has customers active on both sides")
    pairs = pd.concat(parts, ignore_index=True)
    pairs = pairs.sort_values([c.FEATURE_TS, c.USER_ID, c.ITEM_ID], kind="mergesort")
    pairs = pairs.reset_index(drop=True)
    if store is not None:
        frame = training_frame(pairs, store=store)
    else:
        ttls = table_ttls(tables, dict(config.ttl_days))
        frame = training_frame(pairs, tables=tables, ttls=ttls)
    frame[QID] = frame.groupby([c.FEATURE_TS, c.USER_ID], sort=True).ngroup()
    frame = frame.sort_values([QID, c.ITEM_ID], kind="mergesort").reset_index(drop=True)
    return frame, tables


def _ranking_matrix(frame: pd.DataFrame, features: list[str]):
    """The XGBoost matrix of a labelled training frame (rows sorted by query id)."""
    import xgboost as xgb

    return xgb.DMatrix(
        frame[features].to_numpy(dtype=np.float32),
        label=frame[LABEL].to_numpy(dtype=np.float32),
        qid=frame[QID].to_numpy(dtype=np.uint32),
        missing=np.nan,
        feature_names=features,
    )


def boosting_rounds(
    frame: pd.DataFrame, features: list[str], config: RankerConfig
) -> tuple[int, dict[str, Any]]:
    """How many rounds to boost (see ``RankerConfig.early_stopping_rounds``) and how that was
    decided: the probe's best round and its NDCG on the newest cutoff, or why there was none."""
    import xgboost as xgb

    stamps = frame[c.FEATURE_TS]
    if not config.early_stopping_rounds:
        return config.num_boost_round, {"used": False, "why": "early stopping is off"}
    if stamps.nunique() < 2:
        return config.num_boost_round, {"used": False, "why": "one cutoff: nothing to hold out"}
    newest = (stamps == stamps.max()).to_numpy()
    probe = xgb.train(
        config.booster_params(),
        _ranking_matrix(frame.loc[~newest], features),
        num_boost_round=config.num_boost_round,
        evals=[(_ranking_matrix(frame.loc[newest], features), "newest_cutoff")],
        early_stopping_rounds=config.early_stopping_rounds,
        verbose_eval=False,
    )
    rounds = int(probe.best_iteration) + 1
    return rounds, {
        "used": True,
        "best_rounds": rounds,
        "held_out_ndcg": round(float(probe.best_score), 4),
        "held_out_cutoff": str(pd.Timestamp(stamps.max()).date()),
    }


def fit_ranker(
    events: pd.DataFrame,
    split_ts: pd.Timestamp | str,
    config: RankerConfig | None = None,
    *,
    returns: pd.DataFrame | None = None,
    store: Any = None,
) -> Ranker:
    """Fit the ranker on the purchases of ``events`` before ``split_ts`` (see the module notes).

    ``returns`` (canonical return events, e.g. ``returns_from_quarantine``) feed the return
    rates; only those before ``split_ts`` are used. With ``store`` the training features come
    from that Feast store (whose tables must hold the same data) instead of the pandas join.
    The wall time, generators' refit included, is kept in ``fit_seconds``.
    """
    import xgboost as xgb

    config = config or RankerConfig()
    started = time.perf_counter()
    split = naive_utc(split_ts)
    frame, tables = training_set(events, split, config, returns=returns, store=store)
    features = feature_columns(config.generator_names())
    rounds, probe = boosting_rounds(frame, features, config)
    booster = xgb.train(
        config.booster_params(), _ranking_matrix(frame, features), num_boost_round=rounds
    )

    purchases = train_purchases(events, split)
    generators = {name: g.fit(purchases) for name, g in make_generators(config).items()}
    stats = {
        "rows": len(frame),
        "queries": int(frame[QID].nunique()),
        "positives": int(frame[LABEL].sum()),
        "cutoffs": [str(t.date()) for t in sorted({naive_utc(t) for t in config.cutoffs})],
        "rounds": rounds,
        "early_stopping": probe,
    }
    return Ranker(
        config=config,
        generators=generators,
        tables=tables,
        booster=booster,
        features=features,
        split_ts=pd.Timestamp(split),
        fit_seconds=time.perf_counter() - started,
        train_stats=stats,
    )
