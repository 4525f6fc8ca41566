"""Monitoring: data drift, data quality, prediction drift and delayed performance.

Why: a model that scored well offline degrades silently when its inputs or its customers change.
Four pure checks tell the cases apart:

- :func:`data_drift`: did the ranker's input features (:func:`window_features`) shift between
  a reference window and the latest one? Evidently's ``DataDriftPreset`` per column;
- :func:`data_quality`: is the latest window broken (missing, negative, mistyped values)? A
  broken upstream feed shows as quality problems; a real change in behaviour as drift on clean
  data;
- :func:`prediction_drift`: did what the service serves change (scores, items, fallbacks)?
- :func:`delayed_performance`: once the purchases after each served list are known, how often
  did a recommended item sell? :func:`performance_drop` compares that with the offline figure.

Unknown is not healthy: a result that cannot be computed (no rows on a side, no list counted, a
distance that is NaN, a reference figure of 0) says so with ``judged`` False and a ``reason``,
and keeps its figures NaN, never a 0 that would read as "no change".

Evidently (0.7 API: ``Report``, ``Dataset``, ``DataDefinition``, presets) is imported lazily, in
the functions that need it, so importing this module stays cheap. No Dagster here (a pure domain
package).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.evaluation.protocol import purchases_only
from recsys_assets.training.ranker import (
    N_SOURCES,
    derive_features,
    feature_columns,
    feature_tables,
    naive_utc,
    via_pandas,
)

__all__ = [
    "CATEGORICAL_FEATURES",
    "LINE_FEATURES",
    "MISSING_BY_DESIGN",
    "MODEL_FEATURES",
    "NUMERIC_FEATURES",
    "DriftResult",
    "ItemMixShift",
    "PerformanceDrop",
    "PredictionDriftResult",
    "QualityResult",
    "data_drift",
    "data_quality",
    "delayed_performance",
    "item_mix_shift",
    "performance_drop",
    "prediction_drift",
    "window_features",
]

# --- Names ------------------------------------------------------------------------------------

# Columns of the service's served log (one row per request).
SERVED_TS = "ts"  # when the list was served (datetime64, UTC)
SERVED_CUSTOMER = "customer_id"  # the customer it was served to (= user_id of the events)
SERVED_ITEMS = "items"  # recommended item ids, best first
SERVED_SCORES = "scores"  # their scores, same order
SERVED_FALLBACK = "fallback_reason"  # None for a model list, else why the fallback was served

# What window_features returns: the ranker's model inputs other than the candidate generators'
# scores (stored features and those derived from them, as in training) ...
MODEL_FEATURES: tuple[str, ...] = tuple(f for f in feature_columns(()) if f != N_SOURCES)
# ... the purchase line's own numbers ...
LINE_FEATURES: tuple[str, ...] = (c.UNIT_PRICE, c.QUANTITY, c.HOUR_OF_DAY, c.DAY_OF_WEEK)
NUMERIC_FEATURES: tuple[str, ...] = (*MODEL_FEATURES, *LINE_FEATURES)
# ... and the session's categoricals (when the events have them).
CATEGORICAL_FEATURES: tuple[str, ...] = (c.COUNTRY, c.DEVICE)
# Window features whose missing values are expected, not a broken feed: the customer-item
# features are NaN when the customer never bought the item before (most lines), the cadences
# when the customer has a single order so far. Pass as data_quality(missing_ok=...).
MISSING_BY_DESIGN: tuple[str, ...] = (
    *c.CUSTOMER_ITEM_FEATURES,
    c.DAYS_SINCE_LAST_BOUGHT,
    "item_cadence_days",
    "item_recency_ratio",
    "customer_cadence_days",
    "order_recency_ratio",
)

_SCORE_STD_FLOOR = 0.001  # as Evidently's normed Wasserstein: never divide by a zero spread


# --- Window features --------------------------------------------------------------------------


def _naive_ts(values: pd.Series) -> pd.Series:
    """Event times as timezone-naive UTC (the canonical convention; aware times converted)."""
    ts = pd.to_datetime(values)
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts


def window_features(
    events: pd.DataFrame,
    start: pd.Timestamp | str,
    end: pd.Timestamp | str,
    *,
    returns: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The ranker's input features as seen over ``[start, end)``: what data drift compares.

    One row per purchase line (``event_type == purchase`` when the column exists) with
    ``start <= event_ts < end``. Each row carries the customer, item and customer-item features
    as of the line's own time (point in time: the feature tables are built with
    :func:`~recsys_assets.training.ranker.feature_tables` from the clean purchases before ``end``
    and
    joined with :func:`~recsys_assets.training.ranker.via_pandas`, so a line of day D sees only days
    that closed before D, never its own day), the derived features of training
    (:data:`MODEL_FEATURES`), the line's unit price, quantity, hour of day and weekday, and
    ``country`` / ``device`` when the events have them. Lines are kept as they came (a negative
    price stays, for :func:`data_quality` to find); ids and timestamps are dropped. Columns:
    :data:`NUMERIC_FEATURES` (float64) then the categoricals present (object, None = missing).
    """
    start_ts, end_ts = naive_utc(start), naive_utc(end)
    if not start_ts < end_ts:
        raise ValueError(f"window start {start_ts} must be before its end {end_ts}")
    ts = _naive_ts(events[c.EVENT_TS])
    in_window = ((ts >= start_ts) & (ts < end_ts)).to_numpy(dtype=bool)
    if c.EVENT_TYPE in events.columns:
        is_purchase = events[c.EVENT_TYPE].astype(object) == c.PURCHASE
        in_window &= is_purchase.to_numpy(dtype=bool)
    lines = events.loc[in_window]
    line_ts = ts.loc[in_window]
    categoricals = [name for name in CATEGORICAL_FEATURES if name in events.columns]

    before_end = (ts < end_ts).to_numpy()
    history = events.loc[before_end].assign(**{c.EVENT_TS: ts.to_numpy()[before_end]})
    purchases, _ = purchases_only(history)
    purchases = purchases.assign(
        **{
            c.USER_ID: purchases[c.USER_ID].astype(str),
            c.ITEM_ID: purchases[c.ITEM_ID].astype(str),
        }
    )
    if returns is not None:
        returns = returns.assign(**{c.EVENT_TS: _naive_ts(returns[c.EVENT_TS])})

    out = pd.DataFrame(index=pd.RangeIndex(len(lines)))
    if len(lines) and len(purchases):
        tables = feature_tables(purchases, returns, end=end_ts)
        pairs = pd.DataFrame(
            {
                c.USER_ID: lines[c.USER_ID].astype(str).to_numpy(dtype=object),
                c.ITEM_ID: lines[c.ITEM_ID].astype(str).to_numpy(dtype=object),
                c.FEATURE_TS: line_ts.dt.tz_localize("UTC").reset_index(drop=True),
            }
        )
        joined = derive_features(via_pandas(tables, pairs))
        for name in MODEL_FEATURES:
            out[name] = joined[name].to_numpy(dtype=np.float64)
    else:  # no lines, or no clean purchase before end: no history to join
        for name in MODEL_FEATURES:
            out[name] = np.full(len(lines), np.nan)

    def number(name: str) -> np.ndarray:
        if name not in lines.columns:
            return np.full(len(lines), np.nan)
        return pd.to_numeric(lines[name], errors="coerce").to_numpy(dtype=np.float64)

    out[c.UNIT_PRICE] = number(c.UNIT_PRICE)
    out[c.QUANTITY] = number(c.QUANTITY)
    out[c.HOUR_OF_DAY] = line_ts.dt.hour.to_numpy(dtype=np.float64)
    out[c.DAY_OF_WEEK] = line_ts.dt.dayofweek.to_numpy(dtype=np.float64)
    for name in categoricals:
        values = lines[name].astype(object)
        out[name] = values.where(values.notna(), None).to_numpy(dtype=object)
    return out


# --- Data drift -------------------------------------------------------------------------------


def _sample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows drawn without replacement (seeded), index reset."""
    if max_rows is not None and len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed)
    return frame.reset_index(drop=True)


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _evidently_frame(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]):
    """A copy Evidently handles: numbers as float64 (inf -> NaN), categories as object with
    None for missing (pandas ``category`` dtypes would compare by code)."""
    out = pd.DataFrame(index=frame.index)
    for name in numeric:
        values = pd.to_numeric(frame[name]).astype(np.float64)
        out[name] = values.replace([np.inf, -np.inf], np.nan)
    for name in categorical:
        values = frame[name].astype(object)
        out[name] = values.where(values.notna(), None)
    return out


def _check_columns(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str] | None
) -> list[str]:
    if len(reference) == 0:
        raise ValueError("data drift: the reference window is empty (0 rows)")
    if len(current) == 0:
        raise ValueError("data drift: the current window is empty (0 rows)")
    if columns is None:
        missing = [x for x in reference.columns if x not in current.columns]
        extra = [x for x in current.columns if x not in reference.columns]
        if missing or extra:
            raise ValueError(
                "data drift: the windows' columns do not match: "
                f"missing from current {missing}, not in reference {extra}"
            )
        return [str(x) for x in reference.columns]
    names = list(dict.fromkeys(columns))
    if not names:
        raise ValueError("data drift: no columns to compare")
    for side, frame in (("reference", reference), ("current", current)):
        absent = [x for x in names if x not in frame.columns]
        if absent:
            raise ValueError(f"data drift: columns {absent} are missing from the {side} window")
    return names


@dataclass(frozen=True)
class DriftResult:
    """Evidently's data drift verdict, as plain numbers.

    ``columns`` maps each compared column to its ``score`` (a p-value for the statistical tests
    Evidently picks on small samples, a distance otherwise), ``method``, ``threshold`` and
    ``drifted``. ``n_reference`` / ``n_current`` are the rows used after sampling. The evaluated
    snapshot is kept (out of equality and repr) for :meth:`save_html`. ``judged`` is False when
    no drifted share came out (NaN): the verdict is then unknown, not "no drift".
    """

    drifted_share: float
    dataset_drift: bool
    columns: dict[str, dict[str, Any]]
    n_reference: int
    n_current: int
    skipped_columns: tuple[str, ...] = ()
    drift_share: float = 0.5
    snapshot: Any = field(default=None, repr=False, compare=False)

    @property
    def drifted_columns(self) -> list[str]:
        """The columns Evidently found drifted, in column order."""
        return [name for name, result in self.columns.items() if result["drifted"]]

    @property
    def judged(self) -> bool:
        """Whether a drifted share was computed (False: nothing to compare, not "no drift")."""
        return bool(np.isfinite(self.drifted_share))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able figures (for asset metadata or a JSON report)."""
        return {
            "judged": self.judged,
            "drifted_share": self.drifted_share,
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "drifted_columns": self.drifted_columns,
            "columns": self.columns,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "skipped_columns": list(self.skipped_columns),
        }

    def save_html(self, path: str | Path) -> Path:
        """Write Evidently's HTML report to ``path`` (parents created); returns the path."""
        return _save_snapshot(self.snapshot, path)


def _save_snapshot(snapshot: Any, path: str | Path) -> Path:
    if snapshot is None:
        raise ValueError("no Evidently snapshot to render")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Snapshot.save_html writes only when given a str: a Path is silently ignored
    snapshot.save_html(str(target))
    return target


SMALL_WINDOW_ROWS = 1_000  # below this on either side, drift is decided by p-value tests


def data_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    max_rows: int | None = 20_000,
    seed: int = c.SEED,
    drift_share: float = 0.5,
) -> DriftResult:
    """Per-column drift of ``current`` against ``reference`` with Evidently's DataDriftPreset.

    ``columns`` (default: all; then both frames must have the same columns) are compared;
    numeric dtypes as numerical, everything else but datetimes as categorical. Each side is
    sampled to at most ``max_rows`` rows (seeded; ``None`` keeps all), because Evidently's cost
    grows with rows and a 20k sample decides drift as well as the whole window. Columns
    entirely null on either side cannot be compared and are listed in ``skipped_columns``.
    Evidently picks the test per column by the reference's size (KS / chi-square / Z p-values
    up to 1,000 rows, normed Wasserstein / Jensen-Shannon distances above); when either side
    has fewer than :data:`SMALL_WINDOW_ROWS` rows, KS and chi-square are used instead, because
    a distance over a few hundred rows is large by chance alone. ``dataset_drift`` is
    ``drifted_share >= drift_share``. Raises ValueError on an empty window, mismatched or
    datetime columns, or a column numeric on one side only.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    names = _check_columns(reference, current, columns)
    ref = _sample(reference[names], max_rows, seed)
    cur = _sample(current[names], max_rows, seed)

    numeric, categorical, skipped = [], [], []
    for name in names:
        r, k = ref[name], cur[name]
        for side, values in (("reference", r), ("current", k)):
            if pd.api.types.is_datetime64_any_dtype(values):
                raise ValueError(f"data drift: column {name!r} is a timestamp in the {side} window")
        r_num = _is_numeric(r)
        k_num = _is_numeric(k)
        if r_num:
            r = r.replace([np.inf, -np.inf], np.nan)
        if k_num:
            k = k.replace([np.inf, -np.inf], np.nan)
        if r.isna().all() or k.isna().all():
            skipped.append(name)
        elif r_num != k_num:
            raise ValueError(
                f"data drift: column {name!r} is {r.dtype} in the reference window but "
                f"{k.dtype} in the current one"
            )
        elif r_num:
            numeric.append(name)
        else:
            categorical.append(name)
    if not numeric and not categorical:
        raise ValueError(f"data drift: every column is entirely null on one side: {skipped}")

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    methods: dict[str, str] = {}
    if min(len(ref), len(cur)) < SMALL_WINDOW_ROWS:
        # Evidently picks its test by the reference's size only: with a large reference and a
        # day of data, normed Wasserstein > 0.1 is what sampling alone gives. Tests with a
        # p-value account for the smaller side.
        methods = {"num_method": "ks", "cat_method": "chisquare"}
    report = Report([DataDriftPreset(drift_share=drift_share, **methods)], include_tests=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            Dataset.from_pandas(
                _evidently_frame(cur, numeric, categorical), data_definition=definition
            ),
            Dataset.from_pandas(
                _evidently_frame(ref, numeric, categorical), data_definition=definition
            ),
        )
    per_column, share = _drift_figures(snapshot)
    return DriftResult(
        drifted_share=share,
        dataset_drift=bool(share >= drift_share),
        columns={name: per_column[name] for name in names if name in per_column},
        n_reference=len(ref),
        n_current=len(cur),
        skipped_columns=tuple(skipped),
        drift_share=drift_share,
        snapshot=snapshot,
    )


def _drift_figures(snapshot: Any) -> tuple[dict[str, dict[str, Any]], float]:
    """Per-column figures and the drifted share from an evaluated DataDriftPreset snapshot.

    ``ValueDrift`` metrics hold only the score (method and threshold are resolved into their
    config); whether a column drifted is in the matching test's status (FAIL = drifted)."""
    data = json.loads(snapshot.json())
    status = {t["metric_config"]["metric_id"]: t["status"] for t in data["tests"]}
    per_column: dict[str, dict[str, Any]] = {}
    share = float("nan")
    for metric in data["metrics"]:
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif kind.endswith(":ValueDrift"):
            per_column[config["column"]] = {
                "score": float(metric["value"]),
                "method": str(config["method"]),
                "threshold": float(config["threshold"]),
                "drifted": status.get(metric["id"]) == "FAIL",
            }
    if np.isnan(share):  # not expected; derive it from the columns rather than fail
        share = float(np.mean([v["drifted"] for v in per_column.values()]))
    return per_column, share


# --- Data quality -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityResult:
    """Per-column quality figures of one frame and the problems found (plain English).

    ``columns`` maps each column to ``dtype``, ``missing_share``, ``zero_share`` (share of all
    rows equal to 0: sparsity; NaN for non-numeric columns), ``min``, ``max`` (NaN for
    non-numeric) and ``distinct`` (non-missing distinct values). ``ok`` when no problem.
    """

    n_rows: int
    columns: dict[str, dict[str, Any]]
    problems: tuple[str, ...]
    frame: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able figures."""
        return {
            "ok": self.ok,
            "n_rows": self.n_rows,
            "problems": list(self.problems),
            "columns": self.columns,
        }

    def save_html(self, path: str | Path) -> Path:
        """Write Evidently's DataSummaryPreset report of the (sampled) frame to ``path``."""
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataSummaryPreset

        if self.frame is None:
            raise ValueError("no frame kept to render")
        frame = self.frame
        numeric = [x for x in frame.columns if _is_numeric(frame[x])]
        dates = [x for x in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[x])]
        categorical = [x for x in frame.columns if x not in numeric and x not in dates]
        definition = DataDefinition(
            numerical_columns=numeric, categorical_columns=categorical, datetime_columns=dates
        )
        data = _evidently_frame(frame, numeric, categorical)
        for name in dates:
            data[name] = frame[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            snapshot = Report([DataSummaryPreset()]).run(
                Dataset.from_pandas(data[list(frame.columns)], data_definition=definition), None
            )
        return _save_snapshot(snapshot, path)


def _share(count: int, total: int) -> float:
    return count / total if total else float("nan")


def data_quality(
    frame: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    max_missing_share: float = 0.2,
    expected_non_negative: Sequence[str] = (c.UNIT_PRICE, c.QUANTITY),
    missing_ok: Sequence[str] = (),
    max_rows: int | None = 20_000,
    seed: int = c.SEED,
) -> QualityResult:
    """Quality figures and problems of ``frame`` (e.g. a :func:`window_features` window).

    Problems: the frame has no rows; an expected column (``columns``, default all, and
    ``expected_non_negative``) is missing; a column is entirely null; its missing share is above
    ``max_missing_share`` (except for ``missing_ok`` columns, e.g. :data:`MISSING_BY_DESIGN`);
    an ``expected_non_negative`` column is not numeric or has negative values; a numeric column
    has infinite values. The figures use every row; the frame kept for
    :meth:`QualityResult.save_html` is sampled to ``max_rows`` (seeded), as in
    :func:`data_drift`. The point: a broken feed shows here, a real shift in behaviour shows as
    drift with clean quality.
    """
    expected = list(dict.fromkeys([*(columns if columns is not None else frame.columns)]))
    non_negative = list(dict.fromkeys(expected_non_negative))
    allowed = set(missing_ok)
    problems: list[str] = []
    n = len(frame)
    if n == 0:
        problems.append("the frame has no rows")
    for name in [*expected, *non_negative]:
        if name not in frame.columns and f"column {name!r} is missing" not in problems:
            problems.append(f"column {name!r} is missing")

    figures: dict[str, dict[str, Any]] = {}
    present = [x for x in dict.fromkeys([*expected, *non_negative]) if x in frame.columns]
    for name in present:
        values = frame[name]
        numeric = _is_numeric(values)
        missing = int(values.isna().sum())
        stats: dict[str, Any] = {
            "dtype": str(values.dtype),
            "missing_share": _share(missing, n),
            "zero_share": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
            "distinct": int(values.nunique(dropna=True)),
        }
        if numeric:
            numbers = values.astype(np.float64)
            finite = numbers[np.isfinite(numbers)]
            stats["zero_share"] = _share(int((numbers == 0).sum()), n)
            if len(finite):
                stats["min"] = float(finite.min())
                stats["max"] = float(finite.max())
            infinite = int(np.isinf(numbers).sum())
            if infinite:
                problems.append(f"column {name!r} has {infinite:,} infinite values")
        figures[name] = stats
        if n and missing == n:
            problems.append(f"column {name!r} is entirely null")
        elif n and stats["missing_share"] > max_missing_share and name not in allowed:
            problems.append(
                f"column {name!r} is {stats['missing_share']:.1%} missing "
                f"(more than the allowed {max_missing_share:.1%})"
            )
        if name in non_negative:
            if not numeric and missing < n:
                problems.append(
                    f"column {name!r} has dtype {values.dtype} where a numeric dtype is expected"
                )
            elif numeric:
                negative = int((values.astype(np.float64) < 0).sum())
                if negative:
                    problems.append(
                        f"column {name!r} has {negative:,} negative values "
                        f"({_share(negative, n):.1%}) where none are expected"
                    )
    kept = _sample(frame[present], max_rows, seed) if present else None
    return QualityResult(n_rows=n, columns=figures, problems=tuple(problems), frame=kept)


# --- Prediction drift -------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionDriftResult:
    """How the served recommendations changed between two windows of the served log.

    Scores of the top k: two-sample KS statistic and p-value, Wasserstein distance divided by
    the reference scores' standard deviation. Items of the top k: Jensen-Shannon distance (base
    2: 0 same distribution, 1 disjoint) between their frequency distributions. Fallback rates:
    share of requests answered by a fallback. ``n_reference`` / ``n_current``: served lists.

    ``judged``: whether the verdict is known. A figure that cannot be computed (a window without
    requests, items or finite scores) stays NaN; ``drifted`` is then True if a computed figure is
    over its threshold (a drift seen on half the evidence is a drift), else the result is not
    judged (``judged`` False, ``reason`` says why) rather than "no drift".
    """

    ks_statistic: float
    ks_pvalue: float
    wasserstein_normed: float
    js_distance: float
    fallback_rate_reference: float
    fallback_rate_current: float
    n_reference: int
    n_current: int
    k: int
    score_threshold: float
    item_threshold: float
    drifted: bool
    judged: bool = True
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able figures."""
        return dict(self.__dict__)


def _top_k(lists: pd.Series, k: int) -> pd.Series:
    """The first ``k`` entries of each list (index unique), exploded: one entry per row, the
    list's index label repeated; missing entries and empty lists dropped."""
    values = lists.explode()
    position = values.groupby(level=0).cumcount()
    values = values[(position < k).to_numpy()]
    return values[values.notna()]


def _scores(served: pd.DataFrame, k: int) -> np.ndarray:
    """The finite scores of every list's top ``k``, as one float array."""
    scores = _top_k(served[SERVED_SCORES].reset_index(drop=True), k)
    values = pd.to_numeric(scores).to_numpy(dtype=np.float64)
    return values[np.isfinite(values)]


def _fallback_rate(served: pd.DataFrame) -> float:
    if SERVED_FALLBACK not in served.columns:
        return 0.0
    reason = served[SERVED_FALLBACK]
    return float((reason.notna() & (reason.astype(str) != "")).mean())


def prediction_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    k: int = c.DEFAULT_K,
    score_threshold: float = 0.1,
    item_threshold: float = 0.3,
) -> PredictionDriftResult:
    """Compare what the service served in two windows of its served log (columns ``items``,
    ``scores``, ``fallback_reason``; one row per request).

    Every served list counts, fallbacks included: they are what customers saw (their scores
    are popularity counts on another scale, so a jump in the fallback rate also moves the
    score distribution; the rates are reported to tell the two apart). ``drifted`` when the KS
    statistic > ``score_threshold`` or the JS distance > ``item_threshold``. A window without
    requests, recommended items or finite scores leaves its figures NaN and the result not
    judged unless the other figure drifted (:class:`PredictionDriftResult`). Raises ValueError
    when a window lacks the ``items`` or ``scores`` column.
    """
    from scipy.stats import ks_2samp, wasserstein_distance

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    unknown: list[str] = []  # why a figure could not be computed
    for side, frame in (("reference", reference), ("current", current)):
        absent = [x for x in (SERVED_ITEMS, SERVED_SCORES) if x not in frame.columns]
        if absent:
            raise ValueError(f"prediction drift: the {side} window lacks columns {absent}")
        if len(frame) == 0:
            unknown.append(f"the {side} window has no served requests")
    ref_items = _top_k(reference[SERVED_ITEMS].reset_index(drop=True), k).astype(str)
    cur_items = _top_k(current[SERVED_ITEMS].reset_index(drop=True), k).astype(str)
    sides = (("reference", reference, ref_items), ("current", current, cur_items))
    for side, frame, items in sides:
        if len(frame) and len(items) == 0:
            unknown.append(f"the {side} window served no items")

    ref_scores, cur_scores = _scores(reference, k), _scores(current, k)
    if len(ref_scores) and len(cur_scores):
        ks = ks_2samp(ref_scores, cur_scores)
        ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
        spread = max(float(np.std(ref_scores)), _SCORE_STD_FLOOR)
        wasserstein = float(wasserstein_distance(ref_scores, cur_scores)) / spread
    else:
        ks_stat = ks_p = wasserstein = float("nan")
        if len(reference) and len(current):
            unknown.append("a window has no finite served score")

    ref_counts = ref_items.value_counts()
    cur_counts = cur_items.value_counts()
    universe = ref_counts.index.union(cur_counts.index)
    p = ref_counts.reindex(universe, fill_value=0).to_numpy(dtype=np.float64)
    q = cur_counts.reindex(universe, fill_value=0).to_numpy(dtype=np.float64)
    # NaN when a side has no item: unknown, not "the same items"
    js = float(_js_from_counts(p[None, :], q[None, :])[0]) if len(universe) else float("nan")

    drifted = bool((ks_stat > score_threshold) or (js > item_threshold))  # NaN compares False
    judged = drifted or bool(np.isfinite(ks_stat) and np.isfinite(js))
    return PredictionDriftResult(
        ks_statistic=ks_stat,
        ks_pvalue=ks_p,
        wasserstein_normed=wasserstein,
        js_distance=js,
        fallback_rate_reference=_fallback_rate(reference),
        fallback_rate_current=_fallback_rate(current),
        n_reference=len(reference),
        n_current=len(current),
        k=k,
        score_threshold=score_threshold,
        item_threshold=item_threshold,
        drifted=drifted,
        judged=judged,
        reason=None if judged else "; ".join(unknown) or "a distance is NaN",
    )


# --- Delayed performance ----------------------------------------------------------------------


def _utc_ts(values: pd.Series) -> pd.Series:
    """Times as ``datetime64[ns, UTC]`` (naive times are taken as UTC)."""
    ts = pd.to_datetime(values)
    if getattr(ts.dt, "tz", None) is None:
        ts = ts.dt.tz_localize("UTC")
    return ts.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def delayed_performance(
    served: pd.DataFrame,
    purchases: pd.DataFrame,
    *,
    k: int = c.DEFAULT_K,
    horizon_days: float = 7,
) -> dict[str, Any]:
    """Live quality of served lists once their ground truth (later purchases) has arrived.

    For each served list (top ``k`` of ``items``), the purchases (``user_id``, ``item_id``,
    ``event_ts``) by its customer (``customer_id`` = ``user_id``) in ``(ts, ts + horizon]``.
    Only lists whose horizon has fully elapsed by the latest purchase time in ``purchases``
    count: a younger list may still be bought from, so counting it would bias the figures low.
    Returns ``lists`` (lists counted), ``lists_with_purchase``, ``hit_rate`` (share of lists
    with a recommended item bought), ``hit_rate_with_purchase`` (the same over lists whose
    customer bought anything: comparable with the offline HitRate@k, which evaluates buyers
    only), ``precision`` (recommended items bought / (lists * k)) and ``recall`` (mean over lists
    with a purchase of recommended items bought / distinct items bought), ``judged`` and
    ``reason``. When nothing counts the rates are NaN, ``judged`` is False and ``reason`` says
    why (no served list, no purchase, no list whose horizon has elapsed).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    horizon = pd.Timedelta(days=horizon_days)
    nan = float("nan")

    def empty(reason: str) -> dict[str, Any]:
        return {
            "lists": 0,
            "lists_with_purchase": 0,
            "hit_rate": nan,
            "hit_rate_with_purchase": nan,
            "precision": nan,
            "recall": nan,
            "judged": False,
            "reason": reason,
        }

    if len(served) == 0:
        return empty("no served list")
    if len(purchases) == 0:
        return empty("no purchase to score the served lists on")
    bought_ts = _utc_ts(purchases[c.EVENT_TS])
    latest = bought_ts.max()
    served_ts = _utc_ts(served[SERVED_TS]).reset_index(drop=True)
    ready = (served_ts + horizon <= latest).to_numpy()
    if not ready.any():
        return empty(f"no served list's {horizon_days:g}-day horizon has elapsed yet")
    rows = np.flatnonzero(ready)
    lists = pd.DataFrame(
        {
            "list": rows,
            c.USER_ID: served[SERVED_CUSTOMER].astype(str).to_numpy(dtype=object)[rows],
            SERVED_TS: served_ts.iloc[rows].reset_index(drop=True),
        }
    )
    recs = _top_k(pd.Series(served[SERVED_ITEMS].to_numpy(dtype=object)[rows], index=rows), k)
    recs = pd.DataFrame(
        {"list": recs.index.to_numpy(), c.ITEM_ID: recs.astype(str).to_numpy(dtype=object)}
    ).drop_duplicates()

    bought = pd.DataFrame(
        {
            c.USER_ID: purchases[c.USER_ID].astype(str).to_numpy(dtype=object),
            c.ITEM_ID: purchases[c.ITEM_ID].astype(str).to_numpy(dtype=object),
            "bought_ts": bought_ts.reset_index(drop=True),
        }
    )
    bought = bought[bought[c.USER_ID].isin(set(lists[c.USER_ID]))]
    pairs = lists.merge(bought, on=c.USER_ID, how="inner")
    in_horizon = (pairs["bought_ts"] > pairs[SERVED_TS]) & (
        pairs["bought_ts"] <= pairs[SERVED_TS] + horizon
    )
    truth = pairs.loc[in_horizon, ["list", c.ITEM_ID]].drop_duplicates()
    n_bought = truth.groupby("list").size()
    hits = recs.merge(truth, on=["list", c.ITEM_ID], how="inner").groupby("list").size()
    hits = hits.reindex(lists["list"], fill_value=0)
    n_lists = len(lists)
    with_purchase = n_bought.index
    return {
        "lists": n_lists,
        "lists_with_purchase": len(with_purchase),
        "hit_rate": float((hits > 0).mean()),
        "hit_rate_with_purchase": (
            float((hits.loc[with_purchase] > 0).mean()) if len(with_purchase) else nan
        ),
        "precision": float(hits.sum() / (n_lists * k)),
        "recall": (
            float((hits.loc[with_purchase] / n_bought).mean()) if len(with_purchase) else nan
        ),
        "judged": True,
        "reason": None,
    }


@dataclass(frozen=True)
class PerformanceDrop:
    """A live figure's relative drop against its reference (:func:`performance_drop`).

    ``drop`` = ``(expected - observed) / expected`` (0.25 = a quarter worse; negative = better).
    ``judged`` False, ``drop`` NaN and ``reason`` set when it cannot be computed: either figure
    unknown (NaN), or a reference of 0 (a drop from nothing is undefined, not 0).
    """

    drop: float
    observed: float
    expected: float
    judged: bool = True
    reason: str | None = None


def performance_drop(observed: float, expected: float) -> PerformanceDrop:
    """Relative drop of a live figure against the reference one: ``(expected - observed) /
    expected``; not judged when either is NaN or ``expected`` is 0 (:class:`PerformanceDrop`)."""
    observed, expected = float(observed), float(expected)
    reason = None
    if not np.isfinite(observed):
        reason = "the live figure is unknown"
    elif not np.isfinite(expected):
        reason = "the reference figure is unknown"
    elif expected == 0:
        reason = "the reference figure is 0: a relative drop from it is undefined"
    if reason is not None:
        return PerformanceDrop(float("nan"), observed, expected, judged=False, reason=reason)
    return PerformanceDrop((expected - observed) / expected, observed, expected)


# --- Item mix ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemMixShift:
    """How far the mix of items in a current window moved from a reference window, beyond what
    sampling alone gives.

    ``distance``: Jensen-Shannon distance (base 2) between the two item frequency distributions.
    ``expected``: its mean over ``permutations`` random splits of the pooled rows into windows of
    the same sizes (no change at all). ``excess`` = ``distance - expected`` (the trigger's
    figure: a few hundred lines over hundreds of items are far apart by chance alone).
    ``pvalue``: share of the splits at least as far apart as the observed windows (add-one).
    ``judged`` False (with the ``reason``) when a window has no rows or the distance is NaN: the
    figures are then NaN, never a 0 that reads as "the same mix".
    """

    distance: float
    expected: float
    excess: float
    pvalue: float
    n_reference: int
    n_current: int
    judged: bool = True
    reason: str | None = None


def _js_from_counts(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon distance (base 2) of count vectors (rows: repetitions); NaN for
    a row where either side has no count (no distribution to compare)."""
    p_total = p.sum(axis=-1, keepdims=True)
    q_total = q.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = p / p_total
        q = q / q_total
        m = (p + q) / 2
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=-1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=-1)
    distance = np.sqrt(np.clip((kl_p + kl_q) / 2, 0.0, 1.0))
    return np.where((p_total[..., 0] > 0) & (q_total[..., 0] > 0), distance, np.nan)


def item_mix_shift(
    reference: pd.Series, current: pd.Series, *, permutations: int = 200, seed: int = c.SEED
) -> ItemMixShift:
    """The item-mix shift of ``current`` against ``reference`` (one item id per row, e.g. the
    purchase lines of each window), with a permutation baseline; not judged (NaN figures,
    ``judged`` False) when a window is empty or the distance is NaN."""
    nan = float("nan")

    def not_judged(reason: str) -> ItemMixShift:
        return ItemMixShift(nan, nan, nan, nan, len(reference), len(current), False, reason)

    if len(reference) == 0 or len(current) == 0:
        return not_judged(
            f"item mix needs rows in both windows (reference {len(reference)}, "
            f"current {len(current)})"
        )
    codes, _ = pd.factorize(pd.concat([reference, current], ignore_index=True).astype(str))
    n_items, n_ref = int(codes.max()) + 1, len(reference)
    observed = _js_from_counts(
        np.bincount(codes[:n_ref], minlength=n_items)[None, :].astype(float),
        np.bincount(codes[n_ref:], minlength=n_items)[None, :].astype(float),
    )[0]
    if not np.isfinite(observed):
        return not_judged("the item-mix distance is NaN")
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(codes) for _ in range(permutations)])
    ref_counts = np.zeros((permutations, n_items))
    np.add.at(ref_counts, (np.arange(permutations)[:, None], shuffled[:, :n_ref]), 1.0)
    cur_counts = np.bincount(codes, minlength=n_items)[None, :] - ref_counts
    null = _js_from_counts(ref_counts, cur_counts)
    expected = float(null.mean())
    return ItemMixShift(
        distance=float(observed),
        expected=expected,
        excess=float(observed - expected),
        pvalue=float((1 + (null >= observed).sum()) / (1 + permutations)),
        n_reference=n_ref,
        n_current=len(current),
    )
