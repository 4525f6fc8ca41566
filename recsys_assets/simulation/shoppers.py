"""The shoppers of a closed-loop simulation: hidden tastes, a click model, metrics, a report.

Why: offline metrics replay a fixed history, so they cannot show what a model's lists *do*. A
closed loop serves lists from the real recommendation service to simulated shoppers whose tastes
are the synthetic shop's ground truth (:mod:`recsys_assets.ingestion.synthetic`, drift included),
and
feeds their reactions back as data. This module is the pure part of that loop (no HTTP, no
Dagster): who shops (:class:`Shoppers`), how a shopper reacts to a list (:func:`respond`), the
feedback body (:func:`to_feedback_payload`), the shop's organic events of a day
(:func:`organic_events`), daily business metrics per group (:func:`daily_metrics`) and the HTML
report (:func:`write_report`).

The click model (a position-based model: each position is examined and clicked on its own):

- every shown item gets an impression;
- ``P(click at p) = examine(p) * attraction``, ``examine(p) = 1 / log2(p + 1)``;
- ``attraction = min(1, max_click * affinity * price_factor)`` where ``affinity = min(1,
  weight[category] / max(base taste))``, ``weight`` being the user's taste at that moment after
  preference shifts times seasonal boosts (what the generator weighs categories by) and
  ``price_factor = clip((price / typical price of the category) ** -sensitivity, *bounds)``,
  the typical price being the geometric mean of the category's catalogue prices;
- a click is added to the cart with ``cart_rate``, a cart line bought with ``purchase_rate``;
  the bought lines of one list form one order.

So an item of the user's favourite category at a typical price is clicked with ``max_click`` at
the top, and a category the user has (almost) no taste for (almost) never. Unknown items and
items not launched yet get an impression only. Same rng state, same reactions. Unlike the
generator's view choice, item popularity plays no part, and prices are compared within their
category (the generator compares them with the whole catalogue): a list is judged on what the
shopper likes, not on what the shop sells most.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.core.html import cell, escape, figures_html, page, table
from recsys_assets.core.jsonable import json_safe
from recsys_assets.ingestion.synthetic import (
    CATEGORY,
    LAUNCH_TS,
    LatentUsers,
    SyntheticConfig,
    generate_events,
    item_catalogue,
)

__all__ = [
    "DEFAULT_EVENTS_OF_NOTE",
    "GROUPS",
    "METRIC_COLUMNS",
    "REACTION_TYPES",
    "Reaction",
    "ShopperBehaviour",
    "Shoppers",
    "daily_metrics",
    "examine",
    "feedback_bodies",
    "order_id_for",
    "organic_events",
    "reactions_frame",
    "respond",
    "to_feedback_payload",
    "write_json",
    "write_report",
]

REACTION_TYPES: tuple[str, ...] = ("impression", "click", "add_to_cart", "purchase")
GROUPS: tuple[str, ...] = ("drifted", "others", "all")
METRIC_COLUMNS: tuple[str, ...] = (
    "day",
    "group",
    "lists",
    "shoppers",
    "impressions",
    "clicks",
    "ctr",
    "orders",
    "conversion",
    "revenue",
    "aov",
    "revenue_per_list",
    "fallback_share",
    "model_version",
)
# Timeline events drawn as vertical markers by default (what the simulation command logs).
DEFAULT_EVENTS_OF_NOTE: tuple[str, ...] = (
    "drift_injected",
    "drift_detected",
    "retraining_triggered",
    "new_model_serving",
)
MAX_FEEDBACK_EVENTS = 1_000  # the service's limit of events per POST /feedback body
_TYPE_RANK = {kind: rank for rank, kind in enumerate(REACTION_TYPES)}


# --- Knobs and reactions --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ShopperBehaviour:
    """Knobs of the click model (see the module docstring); defaults give a lively shop."""

    max_click: float = 0.5  # P(click) at position 1: favourite category, typical price
    price_factor_bounds: tuple[float, float] = (0.5, 2.0)  # clip of the relative-price factor
    cart_rate: float = 0.35  # P(add_to_cart | click)
    purchase_rate: float = 0.6  # P(purchase | add_to_cart)
    quantity_p: float = 0.5  # quantity = min(Geometric(quantity_p), max_quantity): mean ~2
    max_quantity: int = 6
    click_delay_s: float = 60.0  # click: 3 s + Exponential(mean) after the list is shown
    cart_delay_s: float = 30.0  # add_to_cart: 2 s + Exponential(mean) after the click
    checkout_delay_s: float = 90.0  # order: 10 s + Exponential(mean) after the last cart line

    def __post_init__(self) -> None:
        for name in ("max_click", "cart_rate", "purchase_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        if not 0.0 < self.quantity_p <= 1.0:
            raise ValueError(f"quantity_p must lie in (0, 1], got {self.quantity_p!r}")
        if self.max_quantity < 1:
            raise ValueError(f"max_quantity must be at least 1, got {self.max_quantity!r}")
        low, high = self.price_factor_bounds
        if not 0.0 < low <= high:
            raise ValueError(f"price_factor_bounds must be 0 < low <= high, got {(low, high)}")
        for name in ("click_delay_s", "cart_delay_s", "checkout_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")


DEFAULT_BEHAVIOUR = ShopperBehaviour()


@dataclass(frozen=True)
class Reaction:
    """One shopper event on a shown item (a :class:`~recsys_assets.ingestion.feedback.FeedbackEvent`
    without the model fields). ``order_value`` is the whole order's value on every purchase line;
    ``ts`` is timezone-aware UTC; ``position`` is 1-based."""

    request_id: str
    customer_id: str
    feedback_type: str
    item_id: str
    position: int
    ts: datetime
    quantity: int = 1
    unit_price: float | None = None
    order_id: str | None = None
    order_value: float | None = None


def examine(position: int | np.ndarray) -> float | np.ndarray:
    """Chance a shopper looks at a 1-based position: ``1 / log2(position + 1)`` (1 at the top)."""
    return 1.0 / np.log2(np.asarray(position, dtype=np.float64) + 1.0)


# --- Shoppers -------------------------------------------------------------------------------


class Shoppers:
    """The synthetic shop's users with their hidden state, and its item catalogue.

    Why: the simulated shoppers must react with the same tastes (and drift) the shop's organic
    events are drawn from; everything comes from :class:`~recsys_assets.ingestion.synthetic.
    LatentUsers` and :func:`~recsys_assets.ingestion.synthetic.item_catalogue`.
    """

    def __init__(self, config: SyntheticConfig) -> None:
        latent = LatentUsers(config)
        self.config = config
        self.categories: tuple[str, ...] = latent.categories
        self.user_ids: tuple[str, ...] = tuple(str(u) for u in latent.user_ids)
        self.users = pd.DataFrame(
            {
                c.USER_ID: pd.array(self.user_ids, dtype="string"),
                c.HOME_COUNTRY: pd.array(latent.home_country, dtype="string"),
                c.DEVICE: pd.array(latent.device, dtype="string"),
                "activity": latent.activity,
                "price_sensitivity": latent.sensitivity,
            }
        )
        self.catalogue = item_catalogue(config)  # item_id, category, unit_price, launch_ts
        self._latent = latent
        self._user_index = {u: i for i, u in enumerate(self.user_ids)}
        self._item_index = {str(item): i for i, item in enumerate(self.catalogue[c.ITEM_ID])}
        category_of = {name: k for k, name in enumerate(self.categories)}
        self._item_category = self.catalogue[CATEGORY].map(category_of).to_numpy(np.int64)
        self._item_price = self.catalogue[c.UNIT_PRICE].to_numpy(np.float64)
        self._item_launch = self.catalogue[LAUNCH_TS].to_numpy("datetime64[ns]")
        log_price = np.log(self._item_price)
        typical = np.exp(
            np.bincount(self._item_category, log_price, minlength=len(self.categories))
            / np.maximum(np.bincount(self._item_category, minlength=len(self.categories)), 1)
        )
        self.typical_price: dict[str, float] = {
            name: float(price) for name, price in zip(self.categories, typical, strict=True)
        }
        self._relative_price = self._item_price / typical[self._item_category]
        self._origin = datetime.combine(config.start, time(0), UTC)

    def __repr__(self) -> str:
        return f"Shoppers({len(self.user_ids)} users, {len(self.catalogue)} items)"

    def _index(self, user_id: str) -> int:
        try:
            return self._user_index[user_id]
        except KeyError:
            raise KeyError(
                f"unknown shopper {user_id!r} (not a user of the synthetic shop)"
            ) from None

    def _seconds(self, ts: datetime) -> float:
        return (_utc(ts) - self._origin).total_seconds()

    def home_country(self, user_id: str) -> str:
        """The user's home country (name)."""
        return str(self._latent.home_country[self._index(user_id)])

    def device(self, user_id: str) -> str:
        """The user's preferred device (name)."""
        return str(self._latent.device[self._index(user_id)])

    def taste_at(self, user_ids: Sequence[str], ts: datetime) -> np.ndarray:
        """Each user's category weights at ``ts`` (users x :attr:`categories`): base taste after
        every preference shift (with its ramp) and times every seasonal boost active then.

        The generator's own weighting; rows sum to 1 unless a boost is active. Naive ``ts`` is
        taken as UTC (the shop's clock).
        """
        users = np.array([self._index(u) for u in user_ids], dtype=np.int64)
        if users.size == 0:
            return np.zeros((0, len(self.categories)))
        return self._latent.category_weights(users, self._seconds(ts))

    def drifted_users(self) -> set[str]:
        """Users in any preference shift's segment (union of ``synthetic.user_segment``)."""
        out: set[str] = set()
        for mask in self._latent.segments:
            out.update(self.user_ids[i] for i in np.flatnonzero(mask))
        return out

    def active_sample(self, day: date, n: int, rng: np.random.Generator) -> list[str]:
        """``n`` distinct users (all of them if fewer), drawn with probability proportional to
        their activity, in draw order.

        ``day`` names the simulated day; activity levels are constant over time in the generator,
        so the draw depends on ``rng`` alone.
        """
        del day  # activity does not vary by day (kept for the caller's clarity)
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        n = min(n, len(self.user_ids))
        if n == 0:
            return []
        p = self._latent.activity / self._latent.activity.sum()
        chosen = rng.choice(len(self.user_ids), size=n, replace=False, p=p)
        return [self.user_ids[i] for i in chosen]

    def attraction(
        self,
        user_id: str,
        items: Sequence[str],
        ts: datetime,
        behaviour: ShopperBehaviour = DEFAULT_BEHAVIOUR,
    ) -> np.ndarray:
        """P(click | examined) of each item for the user at ``ts`` (0: unknown or not launched)."""
        u = self._index(user_id)
        idx = np.array([self._item_index.get(item, -1) for item in items], dtype=np.int64)
        if idx.size == 0:
            return np.zeros(0)
        weight = self._latent.category_weights(np.array([u]), self._seconds(ts))[0]
        affinity = np.minimum(1.0, weight / self._latent.taste[u].max())
        known = idx >= 0
        safe = np.where(known, idx, 0)
        launched = self._item_launch[safe] <= np.datetime64(_utc(ts).replace(tzinfo=None), "ns")
        price_factor = np.clip(
            self._relative_price[safe] ** -self._latent.sensitivity[u],
            *behaviour.price_factor_bounds,
        )
        value = np.minimum(1.0, behaviour.max_click * affinity[self._item_category[safe]])
        value = np.minimum(1.0, value * price_factor)
        return np.where(known & launched, value, 0.0)

    def order_probability(
        self,
        user_id: str,
        items: Sequence[str],
        ts: datetime,
        behaviour: ShopperBehaviour = DEFAULT_BEHAVIOUR,
    ) -> float:
        """Exact chance that the list leads to an order under the click model:
        ``1 - prod_p (1 - examine(p) * attraction * cart_rate * purchase_rate)``."""
        attraction = self.attraction(user_id, items, ts, behaviour) * _first_occurrence(items)
        if attraction.size == 0:
            return 0.0
        buy = examine(np.arange(1, attraction.size + 1)) * attraction
        buy = buy * behaviour.cart_rate * behaviour.purchase_rate
        return float(1.0 - np.prod(1.0 - buy))

    def unit_price(self, item_id: str) -> float | None:
        """The item's catalogue price; None for an unknown item."""
        i = self._item_index.get(item_id)
        return None if i is None else float(self._item_price[i])


# --- Reacting to a list ---------------------------------------------------------------------


def respond(
    shoppers: Shoppers,
    user_id: str,
    items: Sequence[str],
    ts: datetime,
    rng: np.random.Generator,
    *,
    request_id: str,
    behaviour: ShopperBehaviour = DEFAULT_BEHAVIOUR,
) -> list[Reaction]:
    """The user's reactions to a list shown at ``ts``, sorted by time (impressions first).

    Every item gets an impression at ``ts``; clicks, add-to-carts and one order follow the click
    model (module docstring). The rng is consumed by a fixed amount per list length, whatever
    happens, so two lists of the same length under the same seed face the same dice. A repeated
    item can only be clicked at its first position. The order id is ``"R"`` + the first 10 hex
    digits of the SHA-1 of ``request_id``.
    """
    if len(items) > c.MAX_K:
        raise ValueError(f"a list holds at most {c.MAX_K} items, got {len(items)}")
    shown_at = _utc(ts)
    n = len(items)
    if n == 0:
        return []
    attraction = shoppers.attraction(user_id, items, shown_at, behaviour) * _first_occurrence(items)
    dice = rng.random((n, 3))  # click, add_to_cart, purchase
    quantity = np.minimum(rng.geometric(behaviour.quantity_p, size=n), behaviour.max_quantity)
    delays = rng.exponential(1.0, size=(n, 2))  # click, add_to_cart
    checkout = 10.0 + behaviour.checkout_delay_s * rng.exponential(1.0)

    clicked = dice[:, 0] < examine(np.arange(1, n + 1)) * attraction
    carted = clicked & (dice[:, 1] < behaviour.cart_rate)
    bought = carted & (dice[:, 2] < behaviour.purchase_rate)
    click_s = 3.0 + behaviour.click_delay_s * delays[:, 0]
    cart_s = click_s + 2.0 + behaviour.cart_delay_s * delays[:, 1]

    prices = [shoppers.unit_price(item) for item in items]
    base = {"request_id": request_id, "customer_id": user_id}
    out = []
    for p, item in enumerate(items):
        at = {"item_id": item, "position": p + 1, "unit_price": prices[p]}
        out.append(Reaction(**base, **at, feedback_type="impression", ts=shown_at))
    for p in np.flatnonzero(clicked):
        at = {"item_id": items[p], "position": int(p) + 1, "unit_price": prices[p]}
        out.append(Reaction(**base, **at, feedback_type="click", ts=_after(shown_at, click_s[p])))
        if carted[p]:
            out.append(
                Reaction(
                    **base,
                    **at,
                    feedback_type="add_to_cart",
                    ts=_after(shown_at, cart_s[p]),
                    quantity=int(quantity[p]),
                )
            )
    lines = np.flatnonzero(bought)
    if lines.size:
        order_id = order_id_for(request_id)
        value = round(sum(int(quantity[p]) * float(prices[p] or 0.0) for p in lines), 2)
        paid = _after(shown_at, float(cart_s[lines].max()) + checkout)
        for p in lines:
            out.append(
                Reaction(
                    **base,
                    feedback_type="purchase",
                    item_id=items[p],
                    position=int(p) + 1,
                    ts=paid,
                    quantity=int(quantity[p]),
                    unit_price=prices[p],
                    order_id=order_id,
                    order_value=value,
                )
            )
    out.sort(key=lambda r: (r.ts, _TYPE_RANK[r.feedback_type], r.position))
    return out


def order_id_for(request_id: str) -> str:
    """The order id of a list's purchases: ``"R"`` + 10 hex digits of SHA-1(request id)."""
    return "R" + hashlib.sha1(request_id.encode("utf-8")).hexdigest()[:10]


def _first_occurrence(items: Sequence[str]) -> np.ndarray:
    seen: set[str] = set()
    out = np.zeros(len(items))
    for p, item in enumerate(items):
        if item not in seen:
            out[p] = 1.0
            seen.add(item)
    return out


def _utc(ts: datetime) -> datetime:
    """A timezone-aware UTC datetime; a naive one is taken as UTC (the shop's clock)."""
    if isinstance(ts, pd.Timestamp):
        ts = ts.to_pydatetime()
    if not isinstance(ts, datetime):
        raise TypeError(f"ts must be a datetime, got {type(ts).__name__}")
    if ts.tzinfo is None or ts.utcoffset() is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def _after(ts: datetime, seconds: float) -> datetime:
    """``ts`` plus ``seconds``, rounded to the millisecond (clean ISO timestamps)."""
    return ts + timedelta(milliseconds=round(seconds * 1000.0))


# --- Feedback bodies ------------------------------------------------------------------------


def to_feedback_payload(reactions: Iterable[Reaction]) -> list[dict[str, Any]]:
    """The events of a POST /feedback body (the service's ``FeedbackItem``), None fields left
    out; ``timestamp`` is ISO 8601 UTC. Wrap as ``{"events": [...]}``, at most
    :data:`MAX_FEEDBACK_EVENTS` per body (see :func:`feedback_bodies`)."""
    out = []
    for r in reactions:
        event = {
            "request_id": r.request_id,
            "customer_id": r.customer_id,
            "item_id": r.item_id,
            "type": r.feedback_type,
            "timestamp": _utc(r.ts).isoformat(timespec="milliseconds"),
            "quantity": int(r.quantity),
            "unit_price": None if r.unit_price is None else float(r.unit_price),
            "order_id": r.order_id,
            "order_value": None if r.order_value is None else float(r.order_value),
            "position": None if r.position is None else int(r.position),
        }
        out.append({key: value for key, value in event.items() if value is not None})
    return out


def feedback_bodies(
    reactions: Iterable[Reaction], max_events: int = MAX_FEEDBACK_EVENTS
) -> list[dict[str, list[dict[str, Any]]]]:
    """POST /feedback bodies ``{"events": [...]}`` of at most ``max_events`` each (none if no
    reactions: the service refuses an empty body)."""
    if max_events < 1:
        raise ValueError(f"max_events must be at least 1, got {max_events}")
    events = to_feedback_payload(reactions)
    return [{"events": events[i : i + max_events]} for i in range(0, len(events), max_events)]


def reactions_frame(reactions: Iterable[Reaction]) -> pd.DataFrame:
    """One row per reaction, columns the :class:`Reaction` fields (ts as UTC datetimes)."""
    names = [f.name for f in fields(Reaction)]
    rows = [[getattr(r, name) for name in names] for r in reactions]
    frame = pd.DataFrame(rows, columns=names)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.astype(
        {
            "quantity": "int64",
            "position": "int64",
            "unit_price": "float64",
            "order_value": "float64",
        }
    )


# --- Organic events -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _all_events(config: SyntheticConfig) -> pd.DataFrame:
    """The config's whole event frame, generated once (configs are frozen, hence hashable)."""
    return generate_events(config)


def organic_events(config: SyntheticConfig, day: date) -> pd.DataFrame:
    """The shop's own events of ``day`` (``[midnight, next midnight)``): rows of
    ``generate_events(config)``, which is generated once per config and cached. Empty outside
    the config's window. A copy: callers may change it."""
    events = _all_events(config)
    start = np.datetime64(pd.Timestamp(day).normalize().to_datetime64(), "ns")
    ts = events[c.EVENT_TS].to_numpy("datetime64[ns]")
    lo, hi = np.searchsorted(ts, [start, start + np.timedelta64(1, "D")], side="left")
    return events.iloc[lo:hi].reset_index(drop=True).copy()


# --- Metrics --------------------------------------------------------------------------------


def daily_metrics(lists: pd.DataFrame, reactions: pd.DataFrame, drifted: set[str]) -> pd.DataFrame:
    """Business figures per (day, group), group in :data:`GROUPS`; columns :data:`METRIC_COLUMNS`.

    ``lists``: one row per served list (``day``, ``request_id``, ``customer_id``,
    ``model_version``, ``fallback``). ``reactions``: one row per reaction with ``request_id``,
    ``feedback_type`` (or ``type``), ``quantity``, ``unit_price`` and ``order_id``; each counts
    on its list's day and group (reactions of unknown lists are ignored). A group is
    ``drifted`` (customer in ``drifted``), ``others`` or ``all``.

    ctr = clicks / impressions; conversion = share of lists with an order; revenue = sum of
    quantity x unit price over purchase lines; aov = revenue / orders (NaN without an order);
    revenue_per_list = revenue / lists; fallback_share = share of fallback lists;
    model_version = the day's most served version (ties: the first by name), same in every
    group. Every group gets a row each day; rates are NaN over no lists (or no impressions).
    """
    if lists.empty:
        return pd.DataFrame({name: [] for name in METRIC_COLUMNS})
    per_list = lists[["day", "request_id", "customer_id", "model_version", "fallback"]].copy()
    per_list["request_id"] = per_list["request_id"].astype(str)
    counts = _per_list_counts(reactions)
    per_list = per_list.merge(counts, how="left", left_on="request_id", right_index=True)
    for name in ("impressions", "clicks", "orders"):
        per_list[name] = per_list[name].fillna(0).astype("int64")
    per_list["revenue"] = per_list["revenue"].fillna(0.0).astype("float64")
    per_list["is_drifted"] = per_list["customer_id"].astype(str).isin(drifted)

    rows = []
    for day, of_day in per_list.groupby("day", sort=True):
        version = _dominant(of_day["model_version"])
        for group in GROUPS:
            if group == "all":
                part = of_day
            else:
                part = of_day[of_day["is_drifted"] == (group == "drifted")]
            rows.append({"day": day, "group": group, **_figures(part), "model_version": version})
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def _per_list_counts(reactions: pd.DataFrame) -> pd.DataFrame:
    """Per request id: impressions, clicks, orders (distinct order ids) and revenue."""
    columns = ["impressions", "clicks", "orders", "revenue"]
    if reactions.empty:
        empty = {"impressions": "int64", "clicks": "int64", "orders": "int64", "revenue": "float64"}
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in empty.items()})
    kind = reactions["feedback_type"] if "feedback_type" in reactions else reactions["type"]
    kind = kind.astype(str).to_numpy()
    frame = pd.DataFrame(
        {
            "request_id": reactions["request_id"].astype(str).to_numpy(),
            "impressions": kind == "impression",
            "clicks": kind == "click",
        }
    )
    purchase = kind == "purchase"
    quantity = pd.to_numeric(reactions["quantity"], errors="coerce").fillna(1).to_numpy(float)
    price = pd.to_numeric(reactions["unit_price"], errors="coerce").fillna(0).to_numpy(float)
    frame["revenue"] = np.where(purchase, quantity * price, 0.0)
    frame["order"] = reactions["order_id"].astype("object").where(purchase, None).to_numpy()
    grouped = frame.groupby("request_id", sort=False)
    out = grouped[["impressions", "clicks", "revenue"]].sum()
    out["orders"] = grouped["order"].nunique()  # nunique skips None
    return out[columns]


def _figures(part: pd.DataFrame) -> dict[str, Any]:
    n_lists = len(part)
    impressions, clicks = int(part["impressions"].sum()), int(part["clicks"].sum())
    orders, revenue = int(part["orders"].sum()), float(part["revenue"].sum())
    return {
        "lists": n_lists,
        "shoppers": int(part["customer_id"].nunique()),
        "impressions": impressions,
        "clicks": clicks,
        "ctr": clicks / impressions if impressions else math.nan,
        "orders": orders,
        "conversion": float((part["orders"] > 0).mean()) if n_lists else math.nan,
        "revenue": revenue,
        "aov": revenue / orders if orders else math.nan,
        "revenue_per_list": revenue / n_lists if n_lists else math.nan,
        "fallback_share": float(part["fallback"].astype(bool).mean()) if n_lists else math.nan,
    }


def _dominant(versions: pd.Series) -> str | None:
    counts = versions.dropna().astype(str).value_counts()
    if counts.empty:
        return None
    top = counts[counts == counts.max()].index
    return str(sorted(top)[0])


# --- Report ---------------------------------------------------------------------------------

_PLOTTED = (
    ("conversion", "Conversion: share of lists that led to an order"),
    ("aov", "Average order value"),
    ("ctr", "Click-through rate (clicks / impressions)"),
    ("revenue_per_list", "Revenue per served list"),
)


def write_report(
    metrics: pd.DataFrame,
    timeline: list[dict[str, Any]],
    path: Path,
    *,
    title: str,
    drift_day: Any = None,
    events_of_note: Sequence[str] | None = DEFAULT_EVENTS_OF_NOTE,
) -> Path:
    """A self-contained HTML page (plotly.js inlined) at ``path``, and its figures as JSON at
    ``path.with_suffix(".json")``; returns ``path``.

    Plots conversion, AOV, CTR and revenue per list per day and group, with a vertical marker
    at ``drift_day`` and at each timeline entry (keys ``day``, ``wall_ts``, ``event``,
    ``detail``) whose event is in ``events_of_note`` (None: every entry); then the timeline and
    the metrics as tables.
    """
    import plotly.graph_objects as go

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    markers = _markers(timeline, drift_day, events_of_note)
    figures = []
    for column, heading in _PLOTTED:
        figure = go.Figure()
        for group in GROUPS:
            part = metrics[metrics["group"] == group] if not metrics.empty else metrics
            figure.add_trace(
                go.Scatter(
                    x=[_x(day) for day in part.get("day", [])],
                    y=[_json_value(v) for v in part.get(column, [])],
                    mode="lines+markers",
                    name=group,
                )
            )
        for x, label in markers:
            figure.add_shape(
                type="line", x0=x, x1=x, y0=0, y1=1, yref="paper", line={"dash": "dash"}
            )
            figure.add_annotation(
                x=x, y=1, yref="paper", text=label, showarrow=False, textangle=-90, xanchor="left"
            )
        figure.update_layout(title=heading, xaxis_title="day", yaxis_title=column)
        figures.append(figure)

    keys = ("day", "wall_ts", "event", "detail")
    timeline_table = table(
        ["day", "wall time", "event", "detail"],
        [[entry.get(key) for key in keys] for entry in timeline],
        cell=_cell,
        css_class="timeline",  # the detail column reads left-aligned
    )
    metric_table = table(
        METRIC_COLUMNS,
        [[row[name] for name in METRIC_COLUMNS] for _, row in metrics.iterrows()],
        cell=_cell,
    )
    body = (
        f"<p>Groups: {escape(', '.join(GROUPS))} (drifted: the preference-shift segments). "
        f"Drift injected on day: {_cell(drift_day)}.</p>{figures_html(*figures)}"
        f"<h2>Timeline</h2>{timeline_table}<h2>Daily metrics</h2>{metric_table}"
    )
    css = ".timeline td:last-child{text-align:left}"
    path.write_text(page(title, body, plotly=True, css=css), encoding="utf-8")
    write_json(metrics, timeline, path.with_suffix(".json"), title=title, drift_day=drift_day)
    return path


def write_json(
    metrics: pd.DataFrame,
    timeline: list[dict[str, Any]],
    path: Path,
    *,
    title: str,
    drift_day: Any = None,
) -> Path:
    """The report's figures as JSON (title, drift day, metrics rows, timeline; NaN -> null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "title": title,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "drift_day": _json_value(drift_day),
        "groups": list(GROUPS),
        "metrics": [
            {name: _json_value(value) for name, value in row.items()}
            for row in metrics.to_dict(orient="records")
        ],
        "timeline": [{str(k): _json_value(v) for k, v in entry.items()} for entry in timeline],
    }
    path.write_text(json.dumps(document, indent=2, allow_nan=False), encoding="utf-8")
    return path


def _markers(
    timeline: list[dict[str, Any]], drift_day: Any, events_of_note: Sequence[str] | None
) -> list[tuple[Any, str]]:
    """(x, label) of the vertical markers, without repeats, in timeline order."""
    out: list[tuple[Any, str]] = []
    if drift_day is not None:
        out.append((_x(drift_day), "drift injected"))
    for entry in timeline:
        event = str(entry.get("event"))
        if entry.get("day") is None or (events_of_note is not None and event not in events_of_note):
            continue
        marker = (_x(entry["day"]), event.replace("_", " "))
        if marker not in out:
            out.append(marker)
    return out


def _x(day: Any) -> Any:
    """A day as an axis value: dates as ISO strings, numbers as they are."""
    if isinstance(day, datetime):  # pandas Timestamps too
        return day.date().isoformat()
    if isinstance(day, date):
        return day.isoformat()
    return _json_value(day)


def _json_value(value: Any) -> Any:
    """JSON-safe: NaN/NA -> None, numpy scalars -> Python, dates -> ISO strings."""
    return json_safe(value)


def _cell(value: Any) -> str:
    return cell(_json_value(value), missing="n/a")
