"""The online ranking path: what the recommendation service runs for one request.

A :class:`ServingModel` is what gets promoted: the ranker's booster and feature list, the
candidates of every known customer precomputed from the candidate generators refitted on all
purchases up to the model's data end (batch retrieval, real-time ranking: no matrix
factorisation runs per request), a popularity fallback (global and per country) and the
catalogue with product names. Where a simple model was chosen over the ranker
(:mod:`recsys_assets.evaluation.selection`), the serving model has no booster: its candidates
are that model's own top N and its score is their order (:func:`build_simple_serving_model`);
the request path, the business filters and the fallbacks are the same.

Per request (:func:`recommend`): the customer's candidates -> their stored features as of now
from a :class:`FeatureReader` (in the service: Feast's online store; customer and
customer-item rows per request, item rows held in memory) -> the same derived features and
column order as training (:func:`recsys_assets.training.ranker.derive_features`) -> the booster ->
business filters (only catalogue products; the request's exclusions; optionally items the
customer bought in the last N days) -> top k. Unknown customers, and a feature store that is
down or broken (:data:`FEATURE_STORE_ERRORS`), get the popularity list, flagged as a fallback
with its reason; any other error in the read is a bug and propagates.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import redis.exceptions
from google.protobuf.message import DecodeError

from recsys_assets.core import constants as c
from recsys_assets.evaluation.protocol import Split, evaluate, per_user_ndcg
from recsys_assets.features.store import expired, view_ttls
from recsys_assets.observability.telemetry import mark_error, span_factory
from recsys_assets.training.baselines import make_simple_model
from recsys_assets.training.candidates import CandidateGenerator, Popularity
from recsys_assets.training.ranker import (
    RAW_FEATURES,
    STRING_FEATURES,
    VIEW_FEATURES,
    VIEW_KEYS,
    Ranker,
    RankerConfig,
    candidate_frame,
    derive_arrays,
    feature_tables,
    make_generators,
    train_purchases,
    via_pandas,
)

__all__ = [
    "FEATURE_STORE_ERRORS",
    "CandidateIndex",
    "FeastOnlineReader",
    "FeatureReader",
    "Recommendation",
    "ServingModel",
    "TableReader",
    "build_serving_model",
    "build_simple_serving_model",
    "recommend",
    "sample_latency",
    "score_candidates",
]

logger = logging.getLogger(__name__)

FALLBACK_UNKNOWN_CUSTOMER = "unknown_customer"
FALLBACK_FEATURES_UNAVAILABLE = "feature_store_unavailable"
FALLBACK_NO_CANDIDATES = "no_candidates_left"
_DAY_S = 86_400.0

# What a feature read raises when the online store is down or broken, as Feast 0.67's online
# stores raise it (``online_read`` of feast/infra/online_stores/sqlite.py and redis.py): SQLite's
# errors (no such table, database locked, not a database), Redis' (connection refused, timeout,
# a server error reply), OSError (sockets, files; the builtin ConnectionError is one) and
# protobuf's DecodeError (a stored value that does not parse). These serve the fallback
# (FALLBACK_FEATURES_UNAVAILABLE). Anything else, a TypeError or a KeyError, is a bug: it
# propagates. Feast's own errors (a view missing from the registry, a missing extra) come up
# when a reader is built, when the service loads, not per read.
FEATURE_STORE_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.Error,
    redis.exceptions.RedisError,
    OSError,
    DecodeError,
)


# --- Candidates of every known customer --------------------------------------------------------


@dataclass
class CandidateIndex:
    """Precomputed candidates: per customer a slice of ``items`` and of ``scores`` (the
    generators' ``<gen>_score`` / ``<gen>_rank`` columns and ``n_sources``, in ``columns``)."""

    offsets: dict[str, tuple[int, int]]
    items: np.ndarray  # object, item ids, grouped by customer
    scores: np.ndarray  # float64, one row per item, one column per name in `columns`
    columns: list[str]
    bought: np.ndarray | None = None  # bool: the customer had bought the item (has pair rows)

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, bought_pairs: pd.DataFrame | None = None
    ) -> CandidateIndex:
        """From :func:`~recsys_assets.training.ranker.candidate_frame` output; ``bought_pairs``
        (user_id, item_id) marks the candidates the customer had bought, the only ones with
        customer-item features to read online."""
        frame = frame.sort_values([c.USER_ID, c.ITEM_ID], kind="mergesort")
        bought = None
        if bought_pairs is not None:
            keys = bought_pairs[[c.USER_ID, c.ITEM_ID]].astype(str).drop_duplicates()
            flagged = (
                frame[[c.USER_ID, c.ITEM_ID]]
                .astype(str)
                .merge(keys.assign(_bought=True), on=[c.USER_ID, c.ITEM_ID], how="left")
            )
            bought = flagged["_bought"].notna().to_numpy()
        users = frame[c.USER_ID].astype(str).to_numpy()
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else []
        ends = [*list(starts[1:]), len(users)]
        columns = [col for col in frame.columns if col not in (c.USER_ID, c.ITEM_ID)]
        return cls(
            offsets={users[s]: (int(s), int(e)) for s, e in zip(starts, ends, strict=True)},
            items=frame[c.ITEM_ID].astype(str).to_numpy(dtype=object),
            scores=frame[columns].to_numpy(dtype=np.float64),
            columns=columns,
            bought=bought,
        )

    def __contains__(self, customer_id: str) -> bool:
        return customer_id in self.offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def lookup(self, customer_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The customer's candidate items and their generator columns (empty if unknown)."""
        start, end = self.offsets.get(customer_id, (0, 0))
        return self.items[start:end], self.scores[start:end]

    def bought_mask(self, customer_id: str) -> np.ndarray | None:
        """Which of the customer's candidates they had bought (None: not recorded)."""
        if self.bought is None:
            return None
        start, end = self.offsets.get(customer_id, (0, 0))
        return self.bought[start:end]


# --- The promoted model -------------------------------------------------------------------------


@dataclass
class ServingModel:
    """Everything the service needs to rank, in one picklable object (see the module notes)."""

    version: str
    booster: Any  # xgboost.Booster; None for a simple model (its score column ranks)
    features: list[str]
    candidates: CandidateIndex
    catalogue: dict[str, str]  # item id -> product name; nothing outside it is ever served
    popular: list[tuple[str, float]]  # the global fallback list, best first
    popular_by_country: dict[str, list[tuple[str, float]]]
    data_end: pd.Timestamp  # UTC; the latest purchase the candidates were built from
    product_pattern: str | None = None  # item ids that are products (None: all of them)
    ranker_config: RankerConfig | None = None  # to re-evaluate the booster on another split
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    simple_model: str | None = None  # the simple model served instead of a ranker, by name

    @property
    def model_kind(self) -> str:
        """``ranker`` or the simple model's name: what ranks the candidates."""
        return self.simple_model or "ranker"

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Booster scores for rows of ``self.features`` (float32, NaN = missing), on one
        thread: a request is small, and threads would fight over the cores between requests.
        A simple model's score is its one feature, its own score column."""
        if self.booster is None:
            return matrix[:, 0].astype(np.float64)
        if not getattr(self, "_single_thread", False):
            self.booster.set_param({"nthread": 1})
            self._single_thread = True
        return self.booster.inplace_predict(matrix, missing=np.nan).astype(np.float64)


def _fallback_lists(
    purchases: pd.DataFrame, half_life_days: float, n: int
) -> tuple[list[tuple[str, float]], dict[str, list[tuple[str, float]]]]:
    """Time-decayed popularity overall and per country (countries with 20+ customers)."""

    def top(frame: pd.DataFrame) -> list[tuple[str, float]]:
        model = Popularity(half_life_days=half_life_days).fit(frame)
        items, scores = model.top(n)
        return [(str(i), float(s)) for i, s in zip(items, scores, strict=True)]

    by_country: dict[str, list[tuple[str, float]]] = {}
    if c.COUNTRY in purchases.columns:
        customers = purchases.groupby(c.COUNTRY, observed=True)[c.USER_ID].nunique()
        for country in customers[customers >= 20].index:
            by_country[str(country)] = top(purchases.loc[purchases[c.COUNTRY] == country])
    return top(purchases), by_country


def build_serving_model(
    ranker: Ranker,
    purchases: pd.DataFrame,
    *,
    version: str,
    generators: Mapping[str, CandidateGenerator] | None = None,
    product_pattern: str | None = None,
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    fallback_n: int = c.MAX_K,
    batch: int = 2_000,
) -> ServingModel:
    """A serving model from a fitted ranker: its booster, with candidates for every customer in
    ``purchases`` from ``generators`` (default: the ranker's own, fitted before its split; pass
    generators refitted on all of ``purchases`` for production)."""
    generators = generators if generators is not None else ranker.generators
    frame = _candidates(generators, purchases, ranker.config.candidates, product_pattern, batch)
    return ServingModel(
        version=version,
        booster=ranker.booster,
        features=list(ranker.features),
        ranker_config=ranker.config,
        **_catalogue_parts(
            frame, purchases, product_pattern, ranker.config.popularity_half_life_days, fallback_n
        ),
        metrics=dict(metrics or {}),
        lineage=dict(lineage or {}),
    )


def build_simple_serving_model(
    name: str,
    purchases: pd.DataFrame,
    *,
    version: str,
    product_pattern: str | None = None,
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    depth: int = c.MAX_K,
    fallback_n: int = c.MAX_K,
    batch: int = 2_000,
) -> ServingModel:
    """A serving model for the simple model ``name`` (:data:`~recsys_assets.training.baselines.
    SIMPLE_MODELS`), refitted on all of ``purchases``: its top ``depth`` per customer are the
    candidates and its score ranks them; no booster. The popularity fallback and the catalogue
    are built as for the ranker."""
    generator = make_simple_model(name).fit(purchases)
    frame = _candidates({name: generator}, purchases, ((name, depth),), product_pattern, batch)
    half_life = RankerConfig().popularity_half_life_days  # the same fallback as a ranker's
    return ServingModel(
        version=version,
        booster=None,
        features=[f"{name}_score"],
        **_catalogue_parts(frame, purchases, product_pattern, half_life, fallback_n),
        metrics=dict(metrics or {}),
        lineage=dict(lineage or {}),
        simple_model=name,
    )


def _candidates(
    generators: Mapping[str, CandidateGenerator],
    purchases: pd.DataFrame,
    depths: Sequence[tuple[str, int]],
    product_pattern: str | None,
    batch: int,
) -> pd.DataFrame:
    """Every customer's candidates from ``generators`` (products only), in batches."""
    users = sorted(purchases[c.USER_ID].astype(str).unique())
    parts = [
        candidate_frame(generators, users[i : i + batch], depths)
        for i in range(0, len(users), batch)
    ]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if product_pattern is not None and len(frame):  # non-products are never candidates
        frame = frame.loc[frame[c.ITEM_ID].astype(str).str.match(product_pattern)]
    return frame


def _catalogue_parts(
    frame: pd.DataFrame,
    purchases: pd.DataFrame,
    product_pattern: str | None,
    half_life_days: float,
    fallback_n: int,
) -> dict[str, Any]:
    """What every serving model holds beside its ranking: the candidate index, the catalogue
    with names, the popularity fallbacks, the data end and the product pattern."""
    names = (
        purchases.dropna(subset=[c.DESCRIPTION]).drop_duplicates(c.ITEM_ID, keep="last")
        if c.DESCRIPTION in purchases.columns
        else purchases.drop_duplicates(c.ITEM_ID)
    )
    catalogue = {
        str(item): str(name) if isinstance(name, str) else ""
        for item, name in zip(
            names[c.ITEM_ID].astype(str),
            names[c.DESCRIPTION] if c.DESCRIPTION in names.columns else [""] * len(names),
            strict=True,
        )
    }
    for item in purchases[c.ITEM_ID].astype(str).unique():
        catalogue.setdefault(item, "")
    products = purchases
    if product_pattern is not None:
        products = purchases.loc[purchases[c.ITEM_ID].astype(str).str.match(product_pattern)]
    popular, by_country = _fallback_lists(products, half_life_days, fallback_n)
    end = pd.Timestamp(purchases[c.EVENT_TS].max())
    return {
        "candidates": CandidateIndex.from_frame(frame, purchases[[c.USER_ID, c.ITEM_ID]]),
        "catalogue": catalogue,
        "popular": popular,
        "popular_by_country": by_country,
        "data_end": end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC"),
        "product_pattern": product_pattern,
    }


# --- Feature readers ----------------------------------------------------------------------------


class FeatureReader(Protocol):
    """Stored features (the Feast views' raw columns) for one customer's candidate items."""

    def read(
        self,
        customer_id: str,
        items: np.ndarray,
        as_of: pd.Timestamp,
        bought: np.ndarray | None = None,
    ) -> Mapping[str, np.ndarray]:
        """Every column of ``RAW_FEATURES`` as an array aligned with ``items`` (NaN / None when
        unknown). ``bought`` marks the items with customer-item rows; None: look up all."""
        ...


class TableReader:
    """Features from the Feast-form feature tables by the point-in-time join (tests, offline
    replays): the same values the offline store gives as of ``as_of``."""

    def __init__(self, tables: Mapping[str, pd.DataFrame]) -> None:
        self.tables = tables

    def read(self, customer_id, items, as_of, bought=None) -> Mapping[str, np.ndarray]:
        entity = pd.DataFrame({c.USER_ID: customer_id, c.ITEM_ID: items, c.FEATURE_TS: as_of})
        frame = via_pandas(self.tables, entity)
        return {name: frame[name].to_numpy() for name in RAW_FEATURES}


def _python_value(value: Any) -> Any:
    """A Feast ValueProto as a Python value (None when unset)."""
    kind = value.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(value, kind)


class FeastOnlineReader:
    """Features from a Feast store's online store, read through the store's provider
    (``online_read``: the same rows ``get_online_features`` returns, without its per-row SDK
    work, about 10x cheaper): the customer's profile and the customer-item rows of the
    candidates they had bought, per request; item rows from an in-memory copy of the item view,
    read once and refreshed every ``item_refresh_s`` seconds (items change slowly and the
    catalogue is small).

    The online store keeps each entity's latest row whatever its age; the offline store, and so
    every training set, gives nothing for a row older than the view's TTL (as registered,
    declared in ``feature_repo/feature_views.py``). :meth:`read` treats such a row as missing
    at its ``as_of`` (:func:`recsys_assets.features.store.expired`), so the model is served
    what it was trained on: a customer last seen more than 3,650 days before, or an item whose
    last daily snapshot is more than 7 days old, reads as unknown, as in training."""

    def __init__(self, store: Any, catalogue: Sequence[str], item_refresh_s: float = 300.0):
        self.store = store
        self.catalogue = list(catalogue)
        self.item_refresh_s = item_refresh_s
        self._provider = store._get_provider()
        self._views = {name: store.get_feature_view(name) for name in VIEW_FEATURES}
        self._ttls = view_ttls(store, VIEW_FEATURES)
        self._items: tuple[dict[str, int], dict[str, np.ndarray]] | None = None
        self._item_stamps = np.empty(0)  # Unix seconds of the cached item rows (NaN: none)
        self._items_read_at = 0.0

    def _online_rows(
        self, view: str, keys: list[tuple[str, ...]], as_of: pd.Timestamp | None = None
    ) -> list[dict | None]:
        """The rows of ``keys`` (None: not in the online store); with ``as_of``, also None for
        a row older than the view's TTL at ``as_of``."""
        rows, stamps = self._stamped_rows(view, keys)
        if as_of is None:
            return rows
        stale = expired(self._stamps(rows, stamps), as_of, self._ttls[view])
        return [None if old else row for row, old in zip(rows, stale, strict=True)]

    @staticmethod
    def _stamps(rows: list[dict | None], stamps: list[Any]) -> np.ndarray:
        return np.array(
            [np.nan if row is None or ts is None else pd.Timestamp(ts).timestamp()
             for row, ts in zip(rows, stamps, strict=True)],
            dtype=np.float64,
        )  # fmt: skip

    def _stamped_rows(
        self, view: str, keys: list[tuple[str, ...]]
    ) -> tuple[list[dict | None], list[Any]]:
        """The rows of ``keys`` as plain values and their event times, as the store has them."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        join_keys = list(VIEW_KEYS[view])
        entity_keys = [
            EntityKey(join_keys=join_keys, entity_values=[Value(string_val=k) for k in key])
            for key in keys
        ]
        names = list(VIEW_FEATURES[view])
        rows = self._provider.online_read(
            config=self.store.config,
            table=self._views[view],
            entity_keys=entity_keys,
            requested_features=names,
        )
        values = [
            None if got is None else {n: _python_value(got[n]) for n in names if n in got}
            for _, got in rows
        ]
        return values, [ts for ts, _ in rows]

    @staticmethod
    def _columns(view: str, rows: list[dict | None]) -> dict[str, np.ndarray]:
        out = {}
        for name in VIEW_FEATURES[view]:
            values = [None if row is None else row.get(name) for row in rows]
            if name in STRING_FEATURES:
                out[name] = np.array(values, dtype=object)
            else:
                out[name] = np.array([np.nan if v is None else v for v in values], np.float64)
        return out

    def customer_profile(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's online profile row as plain values (None: not in the online store):
        what the service shows to a caller allowed to read customer features, whatever its
        age (the model's reads, :meth:`read`, apply the view's TTL)."""
        return self._online_rows("customer_profile", [(customer_id,)])[0]

    def items(self) -> tuple[dict[str, int], dict[str, np.ndarray]]:
        """Item features of the whole catalogue: (item id -> row, columns), refreshed when
        older than ``item_refresh_s``; every row as stored, whatever its age (:meth:`read`
        applies the view's TTL per request, from the rows' event times)."""
        if self._items is None or time.monotonic() - self._items_read_at > self.item_refresh_s:
            rows, stamps = self._stamped_rows("item_popularity", [(i,) for i in self.catalogue])
            columns = self._columns("item_popularity", [*rows, None])  # last row: unknown
            self._item_stamps = self._stamps([*rows, None], [*stamps, None])
            self._items = ({item: n for n, item in enumerate(self.catalogue)}, columns)
            self._items_read_at = time.monotonic()
        return self._items

    def read(self, customer_id, items, as_of, bought=None) -> Mapping[str, np.ndarray]:
        n = len(items)
        out: dict[str, np.ndarray] = {}
        profile = self._online_rows("customer_profile", [(customer_id,)], as_of)
        customer = self._columns("customer_profile", profile)
        for name, value in customer.items():
            out[name] = np.repeat(value, n)
        index, item_columns = self.items()
        unknown = len(self.catalogue)
        rows = np.fromiter((index.get(i, unknown) for i in items), dtype=np.int64, count=n)
        stale = expired(self._item_stamps[rows], as_of, self._ttls["item_popularity"])
        for name, values in item_columns.items():
            column = values[rows]
            if stale.any():
                column[stale] = None if column.dtype == object else np.nan
            out[name] = column
        lookup = np.arange(n) if bought is None else np.flatnonzero(bought)
        keys = [(customer_id, str(items[j])) for j in lookup]
        pairs = self._online_rows("customer_item", keys, as_of)
        for name, values in self._columns("customer_item", pairs).items():
            column = np.full(n, np.nan)
            column[lookup] = values
            out[name] = column
        return out


# --- One request ------------------------------------------------------------------------------


@dataclass
class Recommendation:
    """A ranked list for one request."""

    items: list[str]
    scores: list[float]
    names: list[str]
    fallback: bool
    fallback_reason: str | None
    model_version: str
    as_of: pd.Timestamp


def _utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def score_candidates(
    model: ServingModel,
    items: np.ndarray,
    generator_scores: np.ndarray,
    stored: Mapping[str, np.ndarray],
    as_of: pd.Timestamp,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The model's score for each candidate from its generator columns, stored features and
    the derived features (:func:`~recsys_assets.training.ranker.derive_arrays`, as in training),
    in the training column order. Returns the scores and every model input by name."""
    now_s = (as_of - pd.Timestamp(0, tz="UTC")).total_seconds()
    raw = {name: np.asarray(stored[name]) for name in RAW_FEATURES}
    inputs: dict[str, Any] = {**raw, **derive_arrays(raw, now_s)}
    for j, name in enumerate(model.candidates.columns):
        inputs[name] = generator_scores[:, j]
    matrix = np.empty((len(items), len(model.features)), dtype=np.float32)
    for j, name in enumerate(model.features):
        matrix[:, j] = inputs[name]
    return model.predict(matrix), inputs


def _fallback(model: ServingModel, country: str | None) -> list[tuple[str, float]]:
    if country and country in model.popular_by_country:
        return model.popular_by_country[country]
    return model.popular


def recommend(
    model: ServingModel,
    reader: FeatureReader,
    customer_id: str,
    *,
    k: int = c.DEFAULT_K,
    as_of: pd.Timestamp | str | None = None,
    country: str | None = None,
    exclude: Sequence[str] = (),
    exclude_bought_within_days: float | None = None,
    tracer: Any | None = None,
    span_attributes: Mapping[str, Any] | None = None,
) -> Recommendation:
    """The top ``k`` items for one customer (see the module notes). ``as_of`` defaults to the
    model's data end (a replay of historical data) and is the clock of the recency features.

    With an OpenTelemetry ``tracer``, each step is a child span of the current one
    (``candidate_lookup``, ``feature_read``, ``ranking``, ``business_filters``) carrying
    ``recsys.model_version`` and ``span_attributes`` (the service adds ``recsys.variant``);
    without one the steps cost nothing extra
    (:func:`~recsys_assets.observability.telemetry.span_factory`).
    """
    span = span_factory(tracer, {"recsys.model_version": model.version, **(span_attributes or {})})
    stamp = _utc(as_of) if as_of is not None else model.data_end
    excluded = set(exclude)
    with span("candidate_lookup") as step:
        items, generator_scores = model.candidates.lookup(customer_id)
        step.set_attribute("recsys.candidates", len(items))
    reason: str | None = None
    if len(items) == 0:
        reason = FALLBACK_UNKNOWN_CUSTOMER
    else:
        with span("feature_read", **{"recsys.candidates": len(items)}) as step:
            try:
                bought = model.candidates.bought_mask(customer_id)
                stored = reader.read(customer_id, items, stamp, bought)
            except FEATURE_STORE_ERRORS as error:  # the store is down or broken: serve, flag
                logger.warning(
                    "feature read failed for a request; serving the fallback", exc_info=True
                )
                reason = FALLBACK_FEATURES_UNAVAILABLE
                step.set_attribute("recsys.fallback_reason", reason)
                mark_error(step, error)
    if reason is None:
        with span("ranking", **{"recsys.candidates": len(items)}):
            scores, inputs = score_candidates(model, items, generator_scores, stored, stamp)
        with span("business_filters", **{"recsys.candidates": len(items), "recsys.k": k}) as step:
            # candidates and fallback lists hold catalogue products only (build_serving_model)
            keep = np.ones(len(items), dtype=bool)
            if excluded:
                keep &= np.fromiter(
                    (i not in excluded for i in items), dtype=bool, count=len(items)
                )
            if exclude_bought_within_days is not None:
                recent = np.asarray(inputs[c.DAYS_SINCE_LAST_BOUGHT], dtype=np.float64)
                keep &= ~(recent < exclude_bought_within_days)  # NaN (never bought) stays
            kept = np.flatnonzero(keep)
            step.set_attribute("recsys.kept", len(kept))
            if len(kept):
                # best score first, ties by item id
                order = sorted(kept, key=lambda j: (-scores[j], items[j]))[:k]
                chosen = [str(items[j]) for j in order]
                return Recommendation(
                    items=chosen,
                    scores=[float(scores[j]) for j in order],
                    names=[model.catalogue.get(i, "") for i in chosen],
                    fallback=False,
                    fallback_reason=None,
                    model_version=model.version,
                    as_of=stamp,
                )
            reason = FALLBACK_NO_CANDIDATES
            step.set_attribute("recsys.fallback_reason", reason)
    with span("business_filters", **{"recsys.fallback_reason": reason, "recsys.k": k}):
        popular = [(i, s) for i, s in _fallback(model, country) if i not in excluded][:k]
        return Recommendation(
            items=[i for i, _ in popular],
            scores=[s for _, s in popular],
            names=[model.catalogue.get(i, "") for i, _ in popular],
            fallback=True,
            fallback_reason=reason,
            model_version=model.version,
            as_of=stamp,
        )


def sample_latency(
    model: ServingModel, reader: FeatureReader, customers: Sequence[str], **kwargs: Any
) -> dict[str, float]:
    """In-process latency of :func:`recommend` over ``customers`` (ms percentiles), the
    figure the promotion gate holds against the latency budget."""
    timings = []
    for customer in customers:
        started = time.perf_counter()
        recommend(model, reader, customer, **kwargs)
        timings.append((time.perf_counter() - started) * 1000.0)
    values = np.asarray(timings)
    return {
        "calls": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
    }


def evaluate_on_split(
    model: ServingModel, split: Split, *, returns: pd.DataFrame | None = None
) -> dict[str, Any]:
    """The model's booster scored on ``split`` exactly as a freshly trained ranker is: its
    generators refitted on the split's training purchases, features as of the split date from
    training data only, the top N of each evaluated customer through the protocol's
    :func:`~recsys_assets.evaluation.protocol.evaluate`. The gate uses it to compare a champion with
    a challenger on the same test window. A simple model is refitted on the split's training
    purchases and its own top N evaluated the same way."""
    simple = getattr(model, "simple_model", None)
    if simple is not None:
        generator = make_simple_model(simple).fit(split.train)
        report = evaluate(generator.recommend(list(split.users), n=c.CANDIDATES_N), split)
        report["per_user_ndcg"] = per_user_ndcg(report.pop("per_user"))
        return report
    if model.ranker_config is None:
        raise ValueError(f"model {model.version} has no ranker config to re-evaluate with")
    purchases = train_purchases(split.train, split.split_ts)
    generators = {
        name: g.fit(purchases) for name, g in make_generators(model.ranker_config).items()
    }
    ranker = Ranker(
        config=model.ranker_config,
        generators=generators,
        tables=feature_tables(purchases, returns, end=split.split_ts),
        booster=model.booster,
        features=list(model.features),
        split_ts=pd.Timestamp(split.split_ts),
    )
    recommendations = ranker.recommend(list(split.users), n=c.CANDIDATES_N)
    report = evaluate(recommendations, split)
    report["per_user_ndcg"] = per_user_ndcg(report.pop("per_user"))
    return report
