"""Feature tables for the Feast feature store: pure, typed, vectorised pandas/numpy.

Input is ``validated_events`` (canonical columns); only purchases count. Every table follows
one point-in-time rule, so a training row never sees the future:

- values are computed from whole days: the row for day ``D`` uses only events with
  ``event_ts < D + 1 day``;
- its ``event_timestamp`` is ``D + 1 day`` at 00:00 UTC (the moment the day closed and the
  values became known), and ``created_ts`` equals it (Feast breaks ties on it).

Feast's as-of join then gives a training row at time ``t`` only events of days that closed
before ``t``. Event times are timezone-naive in the source and taken as UTC; every timestamp
written here is ``datetime64[ns, UTC]``.

Tables:

- :func:`customer_features`: one row per customer and day they bought (change points,
  cumulative); serving reads the latest.
- :func:`item_features`: a daily snapshot per item from its first sale on, because windowed
  popularity changes on days without sales too.
- :func:`customer_item_features`: one row per customer, item and day the customer bought it.

Recency and tenure are not stored: the tables keep first/last purchase times and
:func:`recency_features` turns them into days at request time, so they never go stale.
:func:`request_context_features` and :func:`recency_features` are what a Feast on-demand
feature view calls.

An order is ``(user_id, order_id)``; a purchase line without an order id is its own order
together with the customer's other lines of the same ``event_ts``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from recsys_assets.core import constants as c

__all__ = [
    "CUSTOMER_COLUMNS",
    "CUSTOMER_ITEM_COLUMNS",
    "DEFAULT_FEATURE_VALUES",
    "ITEM_COLUMNS",
    "customer_features",
    "customer_item_features",
    "item_features",
    "price_band_cuts",
    "recency_features",
    "request_context_features",
    "returns_from_quarantine",
]

# Values for an unknown customer, item or pair (defined next to the names, re-exported here).
DEFAULT_FEATURE_VALUES: dict[str, object] = c.DEFAULT_FEATURE_VALUES

CUSTOMER_COLUMNS: tuple[str, ...] = (c.USER_ID, c.FEATURE_TS, c.CREATED_TS, *c.CUSTOMER_FEATURES)
ITEM_COLUMNS: tuple[str, ...] = (c.ITEM_ID, c.FEATURE_TS, c.CREATED_TS, *c.ITEM_FEATURES)
CUSTOMER_ITEM_COLUMNS: tuple[str, ...] = (
    c.USER_ID,
    c.ITEM_ID,
    c.FEATURE_TS,
    c.CREATED_TS,
    *c.CUSTOMER_ITEM_FEATURES,
)

WINDOWS_DAYS = (7, 30, 90)  # sales_7d, sales_30d, sales_90d
BUYERS_WINDOW_DAYS = 30
PRICE_WINDOW_DAYS = 90
TREND_SMOOTHING = 1e-3  # added to both daily rates of trend_7_30: no sales reads as flat (1.0)
# Quarantine reasons a return may carry besides "cancellation": any other (no user, not a
# product, duplicate, ...) would have kept the row out of the purchases too.
RETURN_REASONS = frozenset({"cancellation", "non_positive_quantity"})

_UTC = "datetime64[ns, UTC]"
_DAY_NS = 86_400 * 10**9
_DTYPES: dict[str, str] = {
    c.USER_ID: "string",
    c.ITEM_ID: "string",
    c.FEATURE_TS: _UTC,
    c.CREATED_TS: _UTC,
    c.ORDERS_TOTAL: "int64",
    c.UNITS_TOTAL: "float64",
    c.REVENUE_TOTAL: "float64",
    c.AVG_BASKET_VALUE: "float64",
    c.AVG_BASKET_SIZE: "float64",
    c.FIRST_ORDER_TS: _UTC,
    c.LAST_ORDER_TS: _UTC,
    c.PRICE_BAND: "string",
    c.HOME_COUNTRY: "string",
    c.CUSTOMER_RETURN_RATE: "float64",
    c.SALES_7D: "float64",
    c.SALES_30D: "float64",
    c.SALES_90D: "float64",
    c.BUYERS_30D: "float64",
    c.TREND_7_30: "float64",
    c.ITEM_PRICE: "float64",
    c.REPURCHASE_RATE: "float64",
    c.ITEM_RETURN_RATE: "float64",
    c.ITEM_AGE_DAYS: "float64",
    c.TIMES_BOUGHT: "int64",
    c.UNITS_BOUGHT: "float64",
    c.LAST_BOUGHT_TS: _UTC,
}


# --- Customer profile -------------------------------------------------------------------------


def customer_features(
    events: pd.DataFrame,
    returns: pd.DataFrame | None = None,
    *,
    price_cuts: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """One row per (customer, day they bought), each value cumulative to the end of that day.

    Columns :data:`CUSTOMER_COLUMNS` (the RFM profile a ranker personalises with):

    - ``orders_total`` (frequency), ``units_total`` (volume);
    - ``revenue_total``, ``avg_basket_value`` (monetary value; NaN without prices);
    - ``avg_basket_size``: distinct items per order (a bulk buyer vs a single-item shopper);
    - ``first_order_ts``, ``last_order_ts``: recency and tenure are derived from them at
      request time (:func:`recency_features`), so they never go stale;
    - ``price_band``: the band of the customer's median purchased unit price (the lower median
      of their purchase lines) among ``price_cuts``, by default :func:`price_band_cuts` of
      ``events`` (terciles of all purchase lines passed in; pass fixed cuts to band another run
      the same way); "unknown" without prices. Matches customers to items they can afford;
    - ``home_country``: most frequent country so far (ties: alphabetical);
    - ``customer_return_rate``: returned lines (rows of ``returns``, e.g.
      :func:`returns_from_quarantine`, on or before the day) over purchased lines so far; it
      moves only on days the customer buys, and may exceed 1 when returns predate the data.
    """
    p = _Purchases.of(events)
    if p.n == 0:
        return _empty(CUSTOMER_COLUMNS)
    user, users = _codes(p.user)
    # user-days, sorted by (user, day): the rows of the table
    span = int(p.day.max() - p.day.min()) + 1
    ud_key, line_ud = np.unique(user * span + (p.day - p.day.min()), return_inverse=True)
    ud_user = ud_key // span
    ud_day = ud_key % span + p.day.min()
    n = ud_key.size

    def per_day(index: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(index, weights=weights, minlength=n).astype(np.float64)

    def so_far(values: np.ndarray) -> np.ndarray:  # cumulative within each customer
        return pd.Series(values).groupby(ud_user).cumsum().to_numpy()

    lines = so_far(per_day(line_ud))
    units = so_far(per_day(line_ud, p.quantity))
    priced = ~np.isnan(p.price)
    priced_lines = so_far(per_day(line_ud[priced]))
    spent = so_far(per_day(line_ud[priced], p.quantity[priced] * p.price[priced]))
    revenue = np.where(priced_lines > 0, spent, np.nan)
    # an order counts from the day of its first line; so does an (order, item) pair
    orders = so_far(per_day(_first_group(p.order, line_ud)))
    pairs = so_far(per_day(_first_group(_pair_codes(p.order, p.item), line_ud)))

    first_ts = np.full(users.size, np.iinfo(np.int64).max)
    np.minimum.at(first_ts, user, p.ts)
    last_ts = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last_ts, line_ud, p.ts)  # days only grow: the day's latest is the latest so far

    cuts = _terciles(p.price) if price_cuts is None else price_cuts
    band = _price_band(p, line_ud, priced, cuts, so_far)
    returned = _returns_to_date(returns, users, ud_user, ud_day, by=c.USER_ID)

    stamp = _stamps(ud_day)
    out = {
        c.USER_ID: users[ud_user],
        c.FEATURE_TS: stamp,
        c.CREATED_TS: stamp,
        c.ORDERS_TOTAL: orders.astype(np.int64),
        c.UNITS_TOTAL: units,
        c.REVENUE_TOTAL: revenue,
        c.AVG_BASKET_VALUE: revenue / orders,
        c.AVG_BASKET_SIZE: pairs / orders,
        c.FIRST_ORDER_TS: _utc_from_ns(first_ts[ud_user]),
        c.LAST_ORDER_TS: _utc_from_ns(last_ts),
        c.PRICE_BAND: band,
        c.HOME_COUNTRY: _home_country(p, line_ud, ud_user),
        c.CUSTOMER_RETURN_RATE: returned / lines,
    }
    return _frame(out, CUSTOMER_COLUMNS)


def price_band_cuts(events: pd.DataFrame) -> tuple[float, float] | None:
    """Terciles (1/3 and 2/3 quantiles) of the unit prices of all purchase lines; None without
    prices. A price ``<= low cut`` is "low", ``> high cut`` is "high", anything between "mid"."""
    return _terciles(_Purchases.of(events).price)


def _terciles(price: np.ndarray) -> tuple[float, float] | None:
    price = price[~np.isnan(price)]
    if price.size == 0:
        return None
    low, high = np.quantile(price, [1 / 3, 2 / 3])
    return float(low), float(high)


def _price_band(
    p: _Purchases,
    line_ud: np.ndarray,
    priced: np.ndarray,
    cuts: tuple[float, float] | None,
    so_far: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Band of each customer's lower median line price so far, from counts per band.

    With ``n`` priced lines so far, the lower median is the ``k = ceil(n / 2)``-th smallest: it
    is low when at least ``k`` lines are low, high when more than ``n - k`` lines are high.
    """
    n = line_ud.max() + 1
    band = np.full(n, c.PRICE_BAND_UNKNOWN, dtype=object)
    if cuts is None or not priced.any():
        return band
    low_cut, high_cut = cuts
    ud, price = line_ud[priced], p.price[priced]
    total = so_far(np.bincount(ud, minlength=n).astype(np.float64))
    low = so_far(np.bincount(ud[price <= low_cut], minlength=n).astype(np.float64))
    high = so_far(np.bincount(ud[price > high_cut], minlength=n).astype(np.float64))
    k = np.ceil(total / 2)
    band[total > 0] = c.PRICE_BAND_MID
    band[(total > 0) & (high >= total - k + 1)] = c.PRICE_BAND_HIGH
    band[(total > 0) & (low >= k)] = c.PRICE_BAND_LOW
    return band


def _home_country(p: _Purchases, line_ud: np.ndarray, ud_user: np.ndarray) -> np.ndarray:
    """The country of most purchase lines so far per user-day (ties: alphabetical; else null)."""
    out = np.full(ud_user.size, None, dtype=object)
    known = p.country.notna().to_numpy()
    if not known.any():
        return out
    country, names = _codes(p.country[known])
    counts = (
        pd.DataFrame({"ud": line_ud[known], "country": country})
        .groupby(["ud", "country"])
        .size()
        .rename("n")
        .reset_index()
    )
    counts["user"] = ud_user[counts["ud"].to_numpy()]
    # every (user, country) pair on every day of that user, so counts carry over
    days = pd.DataFrame({"user": ud_user, "ud": np.arange(ud_user.size)})
    grid = counts[["user", "country"]].drop_duplicates().merge(days, on="user")
    grid = grid.merge(counts[["ud", "country", "n"]], on=["ud", "country"], how="left")
    grid = grid.sort_values(["user", "country", "ud"], kind="stable")
    grid["n"] = grid["n"].fillna(0).groupby([grid["user"], grid["country"]]).cumsum()
    grid = grid[grid["n"] > 0].sort_values(["ud", "n", "country"], ascending=[True, False, True])
    best = grid.drop_duplicates("ud")
    out[best["ud"].to_numpy()] = names[best["country"].to_numpy()]
    return out


# --- Item popularity --------------------------------------------------------------------------


def item_features(
    events: pd.DataFrame,
    returns: pd.DataFrame | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Daily snapshots: one row per (item, day) from the item's first sale day through the last
    day of ``events`` (any event type), or through the last day that has closed by ``end``
    (exclusive; a midnight ``end`` gives the day before it; later events are ignored).

    Columns :data:`ITEM_COLUMNS` (what sells, and how well, independent of the customer):

    - ``sales_7d``, ``sales_30d``, ``sales_90d``: purchase lines of the item in days
      D-6..D, D-29..D, D-89..D (popularity at three speeds);
    - ``buyers_30d``: distinct customers in D-29..D (broad appeal vs a few bulk buyers);
    - ``trend_7_30``: ``(sales_7d/7 + 0.001) / (sales_30d/30 + 0.001)``, 1.0 flat (rising or
      fading items);
    - ``unit_price``: median line price of the last 90 days, else the latest known price;
    - ``repurchase_rate``: share of the buyers so far who bought it in 2+ orders (staples);
    - ``item_return_rate``: returned lines over sold lines so far (disappointing items);
    - ``age_days``: days from the first sale to the snapshot (novelty, cold start).

    Computed on an items x days matrix with cumulative sums: every window costs the same.
    """
    p = _Purchases.of(events)
    if p.n == 0:
        return _empty(ITEM_COLUMNS)
    base = int(p.day.min())
    last = _last_day(events) if end is None else _day_of(end) - 1
    if last < base:
        return _empty(ITEM_COLUMNS)
    p = p.subset(p.day <= last)
    nd = last - base + 1
    item, items = _codes(p.item)
    ni = items.size
    day = p.day - base

    def matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int = ni) -> np.ndarray:
        flat = np.bincount(rows * nd + cols, minlength=n_rows * nd)
        return flat.reshape(n_rows, nd).astype(np.float64)

    sold = np.cumsum(matrix(item, day), axis=1)  # purchase lines so far
    sales = {w: _window(sold, w) for w in WINDOWS_DAYS}
    user, _ = _codes(p.user)
    buyers = _distinct_in_window(item, user, day, ni, nd, BUYERS_WINDOW_DAYS)

    # buyers so far, and those with a second order: days of each (item, user)'s 1st and 2nd order
    pair_day = pd.DataFrame({"item": item, "user": user, "order": p.order, "day": day})
    pair_day = pair_day.groupby(["item", "user", "order"], sort=False)["day"].min().reset_index()
    pair_day = pair_day.sort_values(["item", "user", "day"], kind="stable")
    rank = pair_day.groupby(["item", "user"], sort=False).cumcount().to_numpy()
    pi, pd_ = pair_day["item"].to_numpy(), pair_day["day"].to_numpy()
    buyers_so_far = np.cumsum(matrix(pi[rank == 0], pd_[rank == 0]), axis=1)
    repeaters = np.cumsum(matrix(pi[rank == 1], pd_[rank == 1]), axis=1)

    returned = np.zeros((ni, nd))
    r = _returns_of(returns, c.ITEM_ID)
    if r is not None:
        r_item = pd.Index(items).get_indexer(r[c.ITEM_ID].to_numpy(dtype=object))
        r_day = _days(_naive_ns(r[c.EVENT_TS])) - base
        keep = (r_item >= 0) & (r_day < nd)
        returned = np.cumsum(matrix(r_item[keep], np.maximum(r_day[keep], 0)), axis=1)

    price = _window_median_price(item, day, p.price, ni, nd)

    first_ts = np.full(ni, np.iinfo(np.int64).max)
    np.minimum.at(first_ts, item, p.ts)
    first_day = np.full(ni, nd)
    np.minimum.at(first_day, item, day)
    rows = np.arange(nd)[None, :] >= first_day[:, None]  # from the first sale day on
    row_item, row_day = np.nonzero(rows)
    stamp_ns = (base + row_day + 1).astype(np.int64) * _DAY_NS
    stamp = _utc_from_ns(stamp_ns)
    s7, s30 = sales[7][rows], sales[30][rows]
    out = {
        c.ITEM_ID: items[row_item],
        c.FEATURE_TS: stamp,
        c.CREATED_TS: stamp,
        c.SALES_7D: s7,
        c.SALES_30D: s30,
        c.SALES_90D: sales[90][rows],
        c.BUYERS_30D: buyers[rows],
        c.TREND_7_30: (s7 / 7 + TREND_SMOOTHING) / (s30 / 30 + TREND_SMOOTHING),
        c.ITEM_PRICE: price[rows],
        c.REPURCHASE_RATE: repeaters[rows] / buyers_so_far[rows],
        c.ITEM_RETURN_RATE: returned[rows] / sold[rows],
        c.ITEM_AGE_DAYS: (stamp_ns - first_ts[row_item]) / _DAY_NS,
    }
    return _frame(out, ITEM_COLUMNS)


def _window(cumulative: np.ndarray, days: int) -> np.ndarray:
    """Sums over the last ``days`` days (D-days+1 .. D) from cumulative sums along axis 1."""
    out = cumulative.copy()
    out[:, days:] -= cumulative[:, :-days]
    return out


def _distinct_in_window(
    item: np.ndarray, user: np.ndarray, day: np.ndarray, ni: int, nd: int, days: int
) -> np.ndarray:
    """Distinct users per (item, day) with a purchase in days D-days+1 .. D.

    A purchase on day d keeps its buyer counted on [d, d + days); the union of a buyer's
    intervals is the disjoint union of [d_k, min(d_k + days, d_k+1)), added as +1/-1 steps.
    """
    nu = int(user.max()) + 1
    key = np.unique((item.astype(np.int64) * nu + user) * nd + day)
    who, d = key // nd, key % nd
    nxt = np.r_[d[1:], nd]
    nxt[:-1][who[1:] != who[:-1]] = nd
    stop = np.minimum(d + days, nxt)
    it = who // nu
    steps = np.bincount(it * (nd + 1) + d, minlength=ni * (nd + 1))
    steps = steps - np.bincount(it * (nd + 1) + stop, minlength=ni * (nd + 1))
    return np.cumsum(steps.reshape(ni, nd + 1)[:, :nd], axis=1).astype(np.float64)


def _window_median_price(
    item: np.ndarray, day: np.ndarray, price: np.ndarray, ni: int, nd: int
) -> np.ndarray:
    """Median line price per (item, day) over the last 90 days, else the latest known price.

    Lines are grouped into (item, price) pairs sorted by item then price; windowed counts per
    pair and day, summed along the pairs of an item, give each price's rank range, and a
    sorted search finds the pairs holding the two middle ranks.
    """
    out = np.full((ni, nd), np.nan)
    priced = ~np.isnan(price)
    if not priced.any():
        return out
    item, day, price = item[priced], day[priced], price[priced]
    order = np.lexsort((price, item))
    item_s, price_s = item[order], price[order]
    new_pair = np.r_[True, (item_s[1:] != item_s[:-1]) | (price_s[1:] != price_s[:-1])]
    pair = np.empty(item.size, dtype=np.int64)
    pair[order] = np.cumsum(new_pair) - 1
    pair_item, pair_price = item_s[new_pair], price_s[new_pair]
    n_pairs = pair_item.size

    counts = np.bincount(pair * nd + day, minlength=n_pairs * nd).reshape(n_pairs, nd)
    counts = np.cumsum(counts, axis=1)
    counts[:, PRICE_WINDOW_DAYS:] -= counts[:, :-PRICE_WINDOW_DAYS].copy()
    # cumulative over the pairs of each item (pairs of one item are contiguous)
    rank = np.cumsum(counts, axis=0)
    item_first = np.flatnonzero(np.r_[True, pair_item[1:] != pair_item[:-1]])
    item_last = np.r_[item_first[1:], n_pairs] - 1
    before = np.vstack([np.zeros((1, nd), dtype=rank.dtype), rank])[item_first]  # ni_priced x nd
    rank -= np.repeat(before, np.diff(np.r_[item_first, n_pairs]), axis=0)
    total = np.zeros((ni, nd), dtype=np.int64)
    total[pair_item[item_first]] = rank[item_last]

    # day-major sorted keys: day * big2 + item * big + rank (rank < big)
    big = int(rank.max()) + 2
    big2 = ni * big
    keys = (
        np.arange(nd, dtype=np.int64)[:, None] * big2
        + pair_item[None, :].astype(np.int64) * big
        + rank.T
    ).ravel()
    qi, qd = np.nonzero(total > 0)
    t = total[qi, qd]

    def kth(k: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(keys, qd.astype(np.int64) * big2 + qi.astype(np.int64) * big + k)
        return pair_price[pos % n_pairs]

    out[qi, qd] = (kth((t + 1) // 2) + kth(t // 2 + 1)) / 2

    # fallback: the median price of the latest day with priced sales, carried forward
    daily = pd.Series(price).groupby(item.astype(np.int64) * nd + day).median()
    latest = np.full(ni * nd, np.nan)
    latest[daily.index.to_numpy()] = daily.to_numpy()
    latest = _ffill_rows(latest.reshape(ni, nd))
    return np.where(total > 0, out, latest)


def _ffill_rows(values: np.ndarray) -> np.ndarray:
    """Carry the last non-NaN value forward along axis 1."""
    idx = np.where(np.isnan(values), 0, np.arange(values.shape[1])[None, :])
    np.maximum.accumulate(idx, axis=1, out=idx)
    return np.take_along_axis(values, idx, axis=1)


# --- Customer-item history --------------------------------------------------------------------


def customer_item_features(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (customer, item, day the customer bought the item), cumulative to that day.

    Columns :data:`CUSTOMER_ITEM_COLUMNS`: how many orders contained the item
    (``times_bought``), how many units (``units_bought``) and when it was last bought; repeat
    purchase is learnable from them, and days since last bought is derived at request time.
    """
    p = _Purchases.of(events)
    if p.n == 0:
        return _empty(CUSTOMER_ITEM_COLUMNS)
    user, users = _codes(p.user)
    item, items = _codes(p.item)
    base = int(p.day.min())
    span = int(p.day.max()) - base + 1
    pair = user.astype(np.int64) * items.size + item
    key, line_row = np.unique(pair * span + (p.day - base), return_inverse=True)
    n = key.size
    row_pair, row_day = key // span, key % span + base

    def so_far(values: np.ndarray) -> np.ndarray:
        return pd.Series(values).groupby(row_pair).cumsum().to_numpy()

    first_row = _first_group(_pair_codes(p.order, p.item), line_row)
    times = so_far(np.bincount(first_row, minlength=n).astype(np.float64))
    units = so_far(np.bincount(line_row, weights=p.quantity, minlength=n))
    last_ts = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last_ts, line_row, p.ts)
    stamp = _stamps(row_day)
    out = {
        c.USER_ID: users[row_pair // items.size],
        c.ITEM_ID: items[row_pair % items.size],
        c.FEATURE_TS: stamp,
        c.CREATED_TS: stamp,
        c.TIMES_BOUGHT: times.astype(np.int64),
        c.UNITS_BOUGHT: units,
        c.LAST_BOUGHT_TS: _utc_from_ns(last_ts),
    }
    return _frame(out, CUSTOMER_ITEM_COLUMNS)


# --- Returns ----------------------------------------------------------------------------------


def returns_from_quarantine(quarantined: pd.DataFrame) -> pd.DataFrame:
    """Returns as canonical events: the quarantined cancellations with a user and an item.

    A row counts when "cancellation" is among its ``reasons`` and nothing else is wrong with it
    but its negative quantity (:data:`RETURN_REASONS`): a cancelled postage, fee or discount
    line, a duplicate or a guest's row is not a returned product. Quantities become positive.
    """
    codes = quarantined[c.REASONS].astype("string").fillna("").reset_index(drop=True)
    codes = codes.str.split(";").explode()
    cancelled = (codes == "cancellation").groupby(level=0).any().to_numpy(dtype=bool)
    nothing_else = codes.isin([*RETURN_REASONS, ""]).groupby(level=0).all().to_numpy(dtype=bool)
    keep = cancelled & nothing_else
    keep &= quarantined[c.USER_ID].notna().to_numpy() & quarantined[c.ITEM_ID].notna().to_numpy()
    columns = [col for col in c.CANONICAL_COLUMNS if col in quarantined.columns]
    out = quarantined.loc[keep, columns].reset_index(drop=True)
    if c.QUANTITY in out.columns:
        out[c.QUANTITY] = out[c.QUANTITY].abs()
    return out


def _returns_of(returns: pd.DataFrame | None, key: str) -> pd.DataFrame | None:
    """Return rows with a key and a time, or None when there are none."""
    if returns is None or len(returns) == 0:
        return None
    r = returns[returns[key].notna().to_numpy() & returns[c.EVENT_TS].notna().to_numpy()]
    return r if len(r) else None


def _returns_to_date(
    returns: pd.DataFrame | None,
    keys: np.ndarray,
    row_key: np.ndarray,
    row_day: np.ndarray,
    by: str,
) -> np.ndarray:
    """Return rows per table row: those of the row's key on or before the row's day."""
    out = np.zeros(row_key.size)
    r = _returns_of(returns, by)
    if r is None:
        return out
    r_key = pd.Index(keys).get_indexer(r[by].to_numpy(dtype=object))
    r_day = _days(_naive_ns(r[c.EVENT_TS]))
    known = r_key >= 0
    r_key, r_day = r_key[known], r_day[known]
    if r_key.size == 0:
        return out
    low = int(min(r_day.min(), row_day.min()))
    span = int(max(r_day.max(), row_day.max())) - low + 2
    sorted_keys = np.sort(r_key * span + (r_day - low))
    upto = np.searchsorted(sorted_keys, row_key * span + (row_day - low), side="right")
    start = np.searchsorted(sorted_keys, row_key * span, side="left")
    return (upto - start).astype(np.float64)


# --- Session context (Feast push source) ----------------------------------------------------


def session_context_features(events: pd.DataFrame) -> pd.DataFrame:
    """Device and country of every customer event, stamped at the event's own time.

    Context is not a daily aggregate: the serving path pushes it as requests arrive, and for
    training the event log gives the context each event happened in. One row per customer and
    timestamp (the last event's context wins when several share a time).
    """
    known = events[events[c.USER_ID].notna()]
    frame = pd.DataFrame(
        {
            c.USER_ID: known[c.USER_ID].astype("string").to_numpy(),
            c.FEATURE_TS: _utc_series(known[c.EVENT_TS]).to_numpy(),
            c.DEVICE: known[c.DEVICE].astype("string").to_numpy(),
            c.COUNTRY: known[c.COUNTRY].astype("string").to_numpy(),
        }
    )
    frame = frame.drop_duplicates([c.USER_ID, c.FEATURE_TS], keep="last")
    frame[c.CREATED_TS] = frame[c.FEATURE_TS]
    order = [c.USER_ID, c.FEATURE_TS, c.CREATED_TS, c.DEVICE, c.COUNTRY]
    return frame[order].sort_values([c.USER_ID, c.FEATURE_TS]).reset_index(drop=True)


# --- Request-time features (Feast on-demand feature view) ------------------------------------


def request_context_features(request_ts: pd.Series) -> pd.DataFrame:
    """Hour of day (0-23), day of week (Monday = 0) and weekend flag (0/1) of each request.

    Shopping differs by time of day and weekday. Naive timestamps are taken as UTC, aware ones
    are converted to UTC. A missing request time is an error: there is nothing to default to.
    """
    ts = _utc_series(request_ts)
    if ts.isna().any():
        raise ValueError("request_context_features: request timestamps must not be missing")
    dow = ts.dt.dayofweek.to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            c.HOUR_OF_DAY: ts.dt.hour.to_numpy(dtype=np.int64),
            c.DAY_OF_WEEK: dow,
            c.IS_WEEKEND: (dow >= 5).astype(np.int64),
        },
        index=request_ts.index,
    )


def recency_features(
    request_ts: pd.Series,
    last_order_ts: pd.Series,
    first_order_ts: pd.Series,
    last_bought_ts: pd.Series,
) -> pd.DataFrame:
    """Days (fractional) from the latest purchase, the first purchase (tenure) and the latest
    purchase of the item to each request; NaN where a time is missing (never bought).

    Computed at request time so they never go stale between feature refreshes. The series are
    matched by position; naive timestamps are taken as UTC.
    """
    request = _utc_series(request_ts)

    def days_since(ts: pd.Series) -> np.ndarray:
        other = _utc_series(ts)
        if len(other) != len(request):
            raise ValueError("recency_features: all series must have the request's length")
        return ((request - other) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)

    return pd.DataFrame(
        {
            c.DAYS_SINCE_LAST_ORDER: days_since(last_order_ts),
            c.CUSTOMER_TENURE_DAYS: days_since(first_order_ts),
            c.DAYS_SINCE_LAST_BOUGHT: days_since(last_bought_ts),
        },
        index=request_ts.index,
    ).astype(np.float64)


def _utc_series(values: pd.Series) -> pd.Series:
    """Timestamps as a ``datetime64[ns, UTC]`` series with a 0..n-1 index (naive = UTC)."""
    series = pd.Series(values).reset_index(drop=True)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        out = series.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(series.dtype):
        out = series.dt.tz_localize("UTC")
    else:  # objects: Timestamps (naive or aware), datetimes, strings, None
        out = pd.Series([pd.NaT if pd.isna(v) else _utc_timestamp(v) for v in series], dtype=_UTC)
    return out.astype(_UTC)


def _utc_timestamp(value: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# --- Shared helpers ---------------------------------------------------------------------------


class _Purchases:
    """The purchase lines of an event frame as numpy arrays (times naive UTC, ns)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.n = len(frame)
        self.user = frame[c.USER_ID]
        self.item = frame[c.ITEM_ID]
        self.ts = _naive_ns(frame[c.EVENT_TS])
        self.day = _days(self.ts)
        self.quantity = _float_column(frame, c.QUANTITY, 1.0)
        self.price = _float_column(frame, c.UNIT_PRICE, np.nan)
        self.country = (
            frame[c.COUNTRY] if c.COUNTRY in frame else pd.Series(pd.NA, index=frame.index)
        )
        self.order = _order_codes(frame, self.ts)

    @classmethod
    def of(cls, events: pd.DataFrame) -> _Purchases:
        """Purchase rows (all rows without an event type column) with a user, item and time."""
        keep = np.ones(len(events), dtype=bool)
        if c.EVENT_TYPE in events:
            keep &= (events[c.EVENT_TYPE] == c.PURCHASE).fillna(False).to_numpy(dtype=bool)
        for name in (c.USER_ID, c.ITEM_ID, c.EVENT_TS):
            keep &= events[name].notna().to_numpy()
        return cls(events[keep].reset_index(drop=True))

    def subset(self, mask: np.ndarray) -> _Purchases:
        if mask.all():
            return self
        return _Purchases(self.frame[mask].reset_index(drop=True))


def _order_codes(frame: pd.DataFrame, ts: np.ndarray) -> np.ndarray:
    """An integer per order: (user, order_id), or (user, event_ts) where the order id is null."""
    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64)
    order = frame[c.ORDER_ID] if c.ORDER_ID in frame else pd.Series(pd.NA, index=frame.index)
    has = order.notna().to_numpy()
    order_code = pd.factorize(order)[0]
    keys = pd.DataFrame(
        {
            "user": pd.factorize(frame[c.USER_ID])[0],
            "order": np.where(has, order_code, -1),
            "ts": np.where(has, 0, ts),
        }
    )
    return keys.groupby(["user", "order", "ts"], sort=False).ngroup().to_numpy(dtype=np.int64)


def _pair_codes(order: np.ndarray, item: pd.Series) -> np.ndarray:
    """An integer per (order, item)."""
    item_code = pd.factorize(item)[0].astype(np.int64)
    return pd.factorize(order.astype(np.int64) * (int(item_code.max()) + 1) + item_code)[0]


def _first_group(key: np.ndarray, group: np.ndarray) -> np.ndarray:
    """For each distinct key, the smallest ``group`` among its lines (where it first appears)."""
    first = np.full(int(key.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, key, group)
    return first[first != np.iinfo(np.int64).max]


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Sorted integer codes and the distinct values (object array of str)."""
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _float_column(frame: pd.DataFrame, name: str, default: float) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), default)
    return pd.to_numeric(frame[name]).to_numpy(dtype=np.float64, na_value=np.nan)


def _naive_ns(ts: pd.Series) -> np.ndarray:
    """Event times as int64 ns since the epoch, in UTC (naive times are taken as UTC)."""
    ts = pd.Series(ts)
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _days(ns: np.ndarray) -> np.ndarray:
    """Day numbers (days since 1970-01-01) of int64 ns times."""
    return np.floor_divide(ns, _DAY_NS).astype(np.int64)


def _day_of(ts: pd.Timestamp) -> int:
    """Day number of the day holding ``ts`` (naive = UTC)."""
    ts = pd.Timestamp(ts)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.value // _DAY_NS)


def _last_day(events: pd.DataFrame) -> int:
    return int(_days(_naive_ns(events[c.EVENT_TS].dropna())).max())


def _stamps(day: np.ndarray) -> pd.DatetimeIndex:
    """event_timestamp of rows for days ``day``: the next midnight, UTC."""
    return _utc_from_ns((day.astype(np.int64) + 1) * _DAY_NS)


def _utc_from_ns(ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC")


def _frame(columns: dict[str, object], order: tuple[str, ...]) -> pd.DataFrame:
    out = pd.DataFrame({name: columns[name] for name in order})
    return out.astype({name: _DTYPES[name] for name in order})


def _empty(order: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=_DTYPES[name]) for name in order})
