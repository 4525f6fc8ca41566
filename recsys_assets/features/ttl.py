"""Each feature view's TTL, derived from the purchases' time span and cadence.

A view's TTL is how old a row may be and still be given: Feast's point-in-time join returns
nothing for a row stamped before ``t - ttl``, and the service's reader and the consistency
check apply the same rule online (:func:`recsys_assets.features.store.expired`). Fixed numbers
do not fit every shop: a decade-long export would lose most of its customers to a 3,650-day
TTL, so the TTLs follow the data:

- ``customer_profile`` and ``customer_item`` hold values to date (counts, first and last
  purchase), written only on the days a customer buys: a row stays true until the next one,
  however long that takes. Their TTL never expires a row within the data: twice the span from
  the first purchase day to the data's end (the whole span, and as long again after its end
  for replays and later reads), in whole years of 365 days, at least the 3,650 days of a
  short export, at most :data:`MAX_TTL_DAYS` (Feast needs a finite timedelta).
- ``item_popularity`` is a daily snapshot of every item from its first sale through the last
  day of the data (:func:`recsys_assets.features.tables.item_features`), sales or not: an item
  without a sale for weeks still has yesterday's row, so how often an item sells never
  expires it. What ages is the snapshot as a whole: it stops at the data's last day and moves
  again only when a later day with purchases lands. Its TTL is therefore the shop's cadence: a
  high quantile (:data:`CADENCE_QUANTILE`) of the gaps in days between consecutive days with
  purchases over the data's last :data:`CADENCE_WINDOW_DAYS`, at least 7 days (a snapshot a
  week older than the shop's usual quiet spell is stale) and at most that window (a snapshot
  older than a year describes sales windows long past, whatever the shop).
- ``session_context`` is the context of a session, stamped at each event's own time: 1 day,
  whatever the data.

With no purchases, or where the data gives no reason to change them, the TTLs are the
defaults :data:`DEFAULT_TTL_DAYS` (UCI Online Retail, a year of daily trading, keeps exactly
them). An override in days per view (the setting ``features.ttl_days``) replaces the derived
value of that view.

The Feast repository reads the TTLs from :data:`TTL_FILE` in its data folder
(``feature_repo/feature_views.py``), which :meth:`FeatureRepo.apply
<recsys_assets.features.store.FeatureRepo.apply>` writes from the feature tables just before
``feast apply``; the registry then holds them, and every online read applies them from there.
The training sets' pandas join derives them from its tables with :func:`table_ttls`, the same
function on the same rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.core.files import write_json_atomically

__all__ = [
    "CADENCE_QUANTILE",
    "CADENCE_WINDOW_DAYS",
    "CUMULATIVE_VIEWS",
    "DEFAULT_TTL_DAYS",
    "MAX_TTL_DAYS",
    "TTL_FILE",
    "derive_ttls",
    "read_ttls",
    "table_ttls",
    "ttl_days",
    "write_ttls",
]

# Today's fixed TTLs: what a short, daily export derives, and what the repository declares when
# no TTL file was written.
DEFAULT_TTL_DAYS: dict[str, float] = {
    "customer_profile": 3650.0,
    "item_popularity": 7.0,
    "customer_item": 3650.0,
    "session_context": 1.0,
}
CUMULATIVE_VIEWS = ("customer_profile", "customer_item")  # values to date: never expire in data
SNAPSHOT_VIEW = "item_popularity"  # a daily snapshot of every item through the data's last day
CADENCE_QUANTILE = 0.95  # of the gaps between consecutive days with purchases
CADENCE_WINDOW_DAYS = 365  # the gaps of the data's last year: the shop's cadence as it is now
YEAR_DAYS = 365
MAX_TTL_DAYS = 100 * YEAR_DAYS
TTL_FILE = "view_ttls.json"  # in the Feast repository's data folder, beside the tables

_DAY_NS = 86_400 * 10**9


def derive_ttls(
    purchase_ts,
    end: pd.Timestamp | str | None = None,
    overrides: Mapping[str, float] | None = None,
) -> dict[str, timedelta]:
    """The TTL of every view (:data:`DEFAULT_TTL_DAYS`' keys) from the times of the purchases.

    ``purchase_ts``: the purchase times (datetime-like; naive times are UTC, missing ones are
    ignored); ``end``: when the data ends (default: the close of the last purchase day; the
    feature tables' last stamp, the close of the data's last day, is what :func:`table_ttls`
    passes); ``overrides``: days per view that replace the derived values. The rules are in the
    module notes; the result is the same for any order of the purchases.
    """
    days = _days(purchase_ts)
    out = dict(DEFAULT_TTL_DAYS)
    if days.size:
        end_day = days[-1] + 1 if end is None else max(_ceil_day(end), days[-1] + 1)
        span = end_day - days[0]  # days from the first purchase day to the data's end
        years = math.ceil(2 * span / YEAR_DAYS)
        for view in CUMULATIVE_VIEWS:
            out[view] = min(max(DEFAULT_TTL_DAYS[view], years * YEAR_DAYS), MAX_TTL_DAYS)
        cadence = _cadence_days(days, end_day)
        out[SNAPSHOT_VIEW] = min(max(DEFAULT_TTL_DAYS[SNAPSHOT_VIEW], cadence), CADENCE_WINDOW_DAYS)
    for view, value in _checked(overrides).items():
        out[view] = value
    return {view: timedelta(days=value) for view, value in out.items()}


def table_ttls(
    tables: Mapping[str, pd.DataFrame], overrides: Mapping[str, float] | None = None
) -> dict[str, timedelta]:
    """:func:`derive_ttls` of the purchases behind the stored feature tables (Feast form or
    not), keyed by view name: the days with purchases are those of the ``customer_profile``
    rows (one per customer and day bought, stamped at the day's close; ``customer_item`` when
    the profile table is absent), and the data ends at the tables' last stamp (the item
    snapshot of the data's last day). Tables built from the same events give the same TTLs as
    :func:`derive_ttls` of those events' purchases with ``end`` the close of their last day."""
    source = next((tables[v] for v in CUMULATIVE_VIEWS if v in tables), None)
    if source is None or len(source) == 0:
        return derive_ttls([], overrides=overrides)
    stamps = pd.to_datetime(source[c.FEATURE_TS], utc=True)
    ends = [
        pd.to_datetime(t[c.FEATURE_TS], utc=True).max()
        for view, t in tables.items()
        if view in DEFAULT_TTL_DAYS and view != "session_context" and len(t)
    ]
    return derive_ttls(stamps - pd.Timedelta(days=1), end=max(ends), overrides=overrides)


def ttl_days(ttls: Mapping[str, timedelta]) -> dict[str, float]:
    """TTLs as days per view (what the TTL file and run metadata hold)."""
    return {view: ttl / timedelta(days=1) for view, ttl in ttls.items()}


def write_ttls(path: Path, ttls: Mapping[str, timedelta]) -> None:
    """Write the TTLs as days per view to ``path`` (JSON, atomically)."""
    write_json_atomically(path, {"ttl_days": ttl_days(ttls)})


def read_ttls(path: Path) -> dict[str, timedelta]:
    """The TTLs in ``path`` (written by :func:`write_ttls`) over :data:`DEFAULT_TTL_DAYS`: the
    defaults when the file does not exist, and for any view it does not name."""
    days = dict(DEFAULT_TTL_DAYS)
    if Path(path).exists():
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        days.update(_checked(document.get("ttl_days", {}), source=str(path)))
    return {view: timedelta(days=value) for view, value in days.items()}


def _checked(overrides: Mapping[str, float] | None, source: str = "ttl_days") -> dict[str, float]:
    """Days per view, each a known view and a positive finite number."""
    out: dict[str, float] = {}
    for view, value in (overrides or {}).items():
        if view not in DEFAULT_TTL_DAYS:
            raise ValueError(f"{source}: unknown view {view!r}; views: {list(DEFAULT_TTL_DAYS)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{source}: {view} must be a number of days, not {value!r}")
        if not 0 < value <= MAX_TTL_DAYS:
            raise ValueError(f"{source}: {view} must be in (0, {MAX_TTL_DAYS}] days, not {value}")
        out[view] = float(value)
    return out


def _days(ts) -> np.ndarray:
    """The distinct day numbers (days since 1970-01-01, UTC) of ``ts``, sorted."""
    series = pd.Series(ts)
    if series.empty:
        return np.zeros(0, dtype=np.int64)
    stamps = pd.to_datetime(series, utc=True).dropna()
    ns = stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return np.unique(np.floor_divide(ns, _DAY_NS))


def _ceil_day(ts: pd.Timestamp | str) -> int:
    """The day number of the first midnight at or after ``ts`` (naive = UTC)."""
    value = pd.Timestamp(ts)
    value = value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
    return -(-value.value // _DAY_NS)


def _cadence_days(days: np.ndarray, end_day: int) -> float:
    """The :data:`CADENCE_QUANTILE` of the gaps between consecutive purchase days of the last
    :data:`CADENCE_WINDOW_DAYS` before ``end_day`` (all days when that window holds fewer than
    two), rounded up to whole days; 0 with fewer than two purchase days."""
    recent = days[days >= end_day - CADENCE_WINDOW_DAYS]
    if recent.size < 2:
        recent = days
    if recent.size < 2:
        return 0.0
    return float(math.ceil(np.quantile(np.diff(recent), CADENCE_QUANTILE)))
