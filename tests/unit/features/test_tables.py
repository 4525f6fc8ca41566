"""Feature tables: hand-checked values, the point-in-time rule, and brute-force references."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.features.tables import (
    CUSTOMER_COLUMNS,
    CUSTOMER_ITEM_COLUMNS,
    DEFAULT_FEATURE_VALUES,
    ITEM_COLUMNS,
    customer_features,
    customer_item_features,
    item_features,
    price_band_cuts,
    recency_features,
    request_context_features,
    returns_from_quarantine,
)
from recsys_assets.ingestion.synthetic import SyntheticConfig, generate_events

PROJECT_ROOT = Path(__file__).resolve().parents[3]
UTC = "datetime64[ns, UTC]"


def _events(rows: list[tuple], event_type: str = c.PURCHASE) -> pd.DataFrame:
    """Events from (ts, user, item, quantity, price, order, country) tuples."""
    frame = pd.DataFrame(
        rows,
        columns=[c.EVENT_TS, c.USER_ID, c.ITEM_ID, c.QUANTITY, c.UNIT_PRICE, c.ORDER_ID, c.COUNTRY],
    )
    frame[c.EVENT_TS] = pd.to_datetime(frame[c.EVENT_TS]).astype("datetime64[ns]")
    frame[c.EVENT_TYPE] = event_type
    frame[c.QUANTITY] = frame[c.QUANTITY].astype(np.float64)
    frame[c.UNIT_PRICE] = frame[c.UNIT_PRICE].astype(np.float64)
    text = [c.USER_ID, c.ITEM_ID, c.ORDER_ID, c.COUNTRY, c.EVENT_TYPE]
    return frame.astype(dict.fromkeys(text, "string"))


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _as_of(table: pd.DataFrame, keys: dict[str, str], at: str) -> pd.Series | None:
    """What Feast's as-of join gives at ``at``: the latest row with event_timestamp <= at."""
    rows = table
    for key, value in keys.items():
        rows = rows[rows[key] == value]
    rows = rows[rows[c.FEATURE_TS] <= _ts(at)]
    return None if rows.empty else rows.sort_values(c.FEATURE_TS).iloc[-1]


UK, FR = "United Kingdom", "France"


# --- Customer profile -------------------------------------------------------------------------


def test_customer_with_one_order():
    events = _events(
        [
            ("2011-01-05 10:00", "u1", "A", 2, 1.5, "o1", UK),
            ("2011-01-05 10:00", "u1", "B", 1, 3.0, "o1", UK),
        ]
    )
    out = customer_features(events)
    assert list(out.columns) == list(CUSTOMER_COLUMNS)
    assert len(out) == 1
    row = out.iloc[0]
    assert row[c.USER_ID] == "u1"
    assert row[c.FEATURE_TS] == _ts("2011-01-06") == row[c.CREATED_TS]
    assert row[c.ORDERS_TOTAL] == 1
    assert row[c.UNITS_TOTAL] == pytest.approx(3.0)
    assert row[c.REVENUE_TOTAL] == pytest.approx(6.0)
    assert row[c.AVG_BASKET_VALUE] == pytest.approx(6.0)
    assert row[c.AVG_BASKET_SIZE] == pytest.approx(2.0)
    assert row[c.FIRST_ORDER_TS] == row[c.LAST_ORDER_TS] == _ts("2011-01-05 10:00")
    assert row[c.HOME_COUNTRY] == UK
    assert row[c.CUSTOMER_RETURN_RATE] == 0.0


def test_customer_table_dtypes():
    events = _events([("2011-01-05 10:00", "u1", "A", 2, 1.5, "o1", UK)])
    out = customer_features(events)
    assert out[c.USER_ID].dtype == "string"
    for name in (c.FEATURE_TS, c.CREATED_TS, c.FIRST_ORDER_TS, c.LAST_ORDER_TS):
        assert out[name].dtype == UTC
    assert out[c.ORDERS_TOTAL].dtype == np.int64
    for name in (c.UNITS_TOTAL, c.REVENUE_TOTAL, c.AVG_BASKET_VALUE, c.AVG_BASKET_SIZE):
        assert out[name].dtype == np.float64
    assert out[c.PRICE_BAND].dtype == "string"
    assert out[c.HOME_COUNTRY].dtype == "string"
    assert out[c.CUSTOMER_RETURN_RATE].dtype == np.float64


def test_two_orders_on_one_day_make_one_row():
    events = _events(
        [
            ("2011-01-05 09:00", "u1", "A", 1, 2.0, "o1", UK),
            ("2011-01-05 09:00", "u1", "B", 1, 4.0, "o1", UK),
            ("2011-01-05 17:00", "u1", "A", 3, 2.0, "o2", UK),
        ]
    )
    out = customer_features(events)
    assert len(out) == 1
    row = out.iloc[0]
    assert row[c.ORDERS_TOTAL] == 2
    assert row[c.UNITS_TOTAL] == pytest.approx(5.0)
    assert row[c.REVENUE_TOTAL] == pytest.approx(12.0)
    assert row[c.AVG_BASKET_VALUE] == pytest.approx(6.0)
    assert row[c.AVG_BASKET_SIZE] == pytest.approx(1.5)  # 2 items, then 1
    assert row[c.FIRST_ORDER_TS] == _ts("2011-01-05 09:00")
    assert row[c.LAST_ORDER_TS] == _ts("2011-01-05 17:00")


def test_customer_values_accumulate_over_days():
    events = _events(
        [
            ("2011-01-03 10:00", "u1", "A", 1, 2.0, "o1", UK),
            ("2011-01-07 10:00", "u1", "A", 1, 2.0, "o2", UK),
            ("2011-01-07 10:00", "u1", "B", 2, 1.0, "o2", UK),
            ("2011-01-04 10:00", "u2", "A", 5, 2.0, "o3", FR),
        ]
    )
    out = customer_features(events)
    u1 = out[out[c.USER_ID] == "u1"]
    assert list(u1[c.FEATURE_TS]) == [_ts("2011-01-04"), _ts("2011-01-08")]
    assert list(u1[c.ORDERS_TOTAL]) == [1, 2]
    assert list(u1[c.UNITS_TOTAL]) == pytest.approx([1.0, 4.0])
    assert list(u1[c.REVENUE_TOTAL]) == pytest.approx([2.0, 6.0])
    assert list(u1[c.AVG_BASKET_SIZE]) == pytest.approx([1.0, 1.5])
    assert list(u1[c.FIRST_ORDER_TS]) == [_ts("2011-01-03 10:00")] * 2
    assert list(u1[c.LAST_ORDER_TS]) == [_ts("2011-01-03 10:00"), _ts("2011-01-07 10:00")]
    u2 = out[out[c.USER_ID] == "u2"]
    assert u2[c.HOME_COUNTRY].tolist() == [FR]


def test_lines_without_order_id_are_one_order_per_customer_and_time():
    events = _events(
        [
            ("2011-01-05 09:00", "u1", "A", 1, 1.0, None, UK),
            ("2011-01-05 09:00", "u1", "B", 1, 1.0, None, UK),
            ("2011-01-05 11:00", "u1", "A", 1, 1.0, None, UK),
            ("2011-01-05 09:00", "u2", "A", 1, 1.0, None, UK),
        ]
    )
    out = customer_features(events).set_index(c.USER_ID)
    assert out.loc["u1", c.ORDERS_TOTAL] == 2
    assert out.loc["u1", c.AVG_BASKET_SIZE] == pytest.approx(1.5)
    assert out.loc["u2", c.ORDERS_TOTAL] == 1
    pairs = customer_item_features(events).set_index([c.USER_ID, c.ITEM_ID])
    assert pairs.loc[("u1", "A"), c.TIMES_BOUGHT] == 2


def test_without_prices_revenue_is_missing_and_band_unknown():
    events = _events(
        [
            ("2011-01-05 10:00", "u1", "A", 2, np.nan, "o1", UK),
            ("2011-01-06 10:00", "u1", "B", 1, np.nan, "o2", UK),
        ]
    )
    out = customer_features(events)
    assert out[c.REVENUE_TOTAL].isna().all()
    assert out[c.AVG_BASKET_VALUE].isna().all()
    assert (out[c.PRICE_BAND] == c.PRICE_BAND_UNKNOWN).all()
    assert list(out[c.UNITS_TOTAL]) == pytest.approx([2.0, 3.0])
    assert price_band_cuts(events) is None
    assert item_features(events)[c.ITEM_PRICE].isna().all()


def test_price_band_is_the_band_of_the_customers_median_price():
    cuts = (2.0, 5.0)  # low <= 2 < mid <= 5 < high
    events = _events(
        [
            ("2011-01-03 10:00", "u1", "A", 1, 1.0, "o1", UK),  # low
            ("2011-01-04 10:00", "u1", "B", 1, 10.0, "o2", UK),  # 1, 10: lower median 1
            ("2011-01-05 10:00", "u1", "C", 1, 10.0, "o3", UK),  # 1, 10, 10: median 10
            ("2011-01-03 10:00", "u2", "A", 1, 3.0, "o4", UK),
            ("2011-01-03 10:00", "u2", "B", 1, 2.0, "o4", UK),  # 2, 3: lower median 2 (low)
            ("2011-01-03 10:00", "u3", "A", 1, 4.0, "o5", UK),
        ]
    )
    out = customer_features(events, price_cuts=cuts)
    bands = out.groupby(c.USER_ID)[c.PRICE_BAND].agg(list).to_dict()
    assert bands == {"u1": ["low", "low", "high"], "u2": ["low"], "u3": ["mid"]}


def test_default_price_cuts_are_terciles_of_all_purchase_lines():
    prices = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    events = _events(
        [("2011-01-03 10:00", f"u{i}", "A", 1, p, f"o{i}", UK) for i, p in enumerate(prices)]
    )
    low, high = price_band_cuts(events)
    assert (low, high) == pytest.approx((3.0, 5.0))
    bands = customer_features(events).set_index(c.USER_ID)[c.PRICE_BAND]
    assert bands.tolist() == ["low"] * 3 + ["mid"] * 2 + ["high"] * 2


def test_home_country_is_the_most_frequent_so_far_ties_alphabetical():
    events = _events(
        [
            ("2011-01-03 10:00", "u1", "A", 1, 1.0, "o1", UK),
            ("2011-01-04 10:00", "u1", "A", 1, 1.0, "o2", FR),  # 1-1 tie: France first
            ("2011-01-05 10:00", "u1", "A", 1, 1.0, "o3", UK),
            ("2011-01-05 10:00", "u2", "A", 1, 1.0, "o4", None),
        ]
    )
    out = customer_features(events)
    assert out[out[c.USER_ID] == "u1"][c.HOME_COUNTRY].tolist() == [UK, FR, UK]
    assert out[out[c.USER_ID] == "u2"][c.HOME_COUNTRY].isna().all()


def test_customer_return_rate_with_and_without_returns():
    events = _events(
        [
            ("2011-01-03 10:00", "u1", "A", 1, 1.0, "o1", UK),
            ("2011-01-03 10:00", "u1", "B", 1, 1.0, "o1", UK),
            ("2011-01-10 10:00", "u1", "C", 1, 1.0, "o2", UK),
            ("2011-01-10 10:00", "u1", "D", 1, 1.0, "o2", UK),
            ("2011-01-03 10:00", "u2", "A", 1, 1.0, "o3", UK),
        ]
    )
    returns = _events(
        [
            ("2011-01-05 10:00", "u1", "A", 1, 1.0, "C1", UK),
            ("2011-01-11 10:00", "u1", "B", 1, 1.0, "C2", UK),  # after u1's last purchase day
        ]
    )
    without = customer_features(events)
    assert (without[c.CUSTOMER_RETURN_RATE] == 0.0).all()
    assert (customer_features(events, returns.iloc[:0])[c.CUSTOMER_RETURN_RATE] == 0.0).all()
    rates = customer_features(events, returns).set_index([c.USER_ID, c.FEATURE_TS])
    assert rates.loc[("u1", _ts("2011-01-04")), c.CUSTOMER_RETURN_RATE] == 0.0
    assert rates.loc[("u1", _ts("2011-01-11")), c.CUSTOMER_RETURN_RATE] == pytest.approx(0.25)
    assert rates.loc[("u2", _ts("2011-01-04")), c.CUSTOMER_RETURN_RATE] == 0.0


# --- Point in time ----------------------------------------------------------------------------

LATE = _events(
    [
        ("2011-01-03 10:00", "u1", "A", 1, 2.0, "o1", UK),
        ("2011-01-05 23:59", "u1", "A", 4, 2.0, "o2", UK),
    ]
)


@pytest.mark.parametrize(
    ("table", "keys", "column", "before", "after"),
    [
        (customer_features, {c.USER_ID: "u1"}, c.ORDERS_TOTAL, 1, 2),
        (customer_item_features, {c.USER_ID: "u1", c.ITEM_ID: "A"}, c.UNITS_BOUGHT, 1.0, 5.0),
        (item_features, {c.ITEM_ID: "A"}, c.SALES_7D, 1.0, 2.0),
    ],
)
def test_a_late_purchase_shows_only_once_its_day_has_closed(table, keys, column, before, after):
    out = table(LATE)
    stamps = out[c.FEATURE_TS]
    assert (stamps == stamps.dt.normalize()).all()  # every row is stamped at a midnight
    # just after the purchase, its day has not closed: the value is still the old one
    assert _as_of(out, keys, "2011-01-05 23:59:59")[column] == before
    assert _as_of(out, keys, "2011-01-06 00:00")[column] == after
    assert _as_of(out, keys, "2011-01-03 12:00") is None  # nothing before the first day closed


def test_late_purchase_times_are_in_the_row_of_their_day():
    out = customer_features(LATE)
    row = out[out[c.FEATURE_TS] == _ts("2011-01-06")].iloc[0]
    assert row[c.LAST_ORDER_TS] == _ts("2011-01-05 23:59")
    assert (out[c.LAST_ORDER_TS] < out[c.FEATURE_TS]).all()


def _synthetic(seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic events with varied prices, some orders without id, and some returns."""
    config = SyntheticConfig(n_users=60, n_items=30, days=45, seed=seed)
    events = generate_events(config)
    rng = np.random.default_rng(seed)
    events[c.UNIT_PRICE] = events[c.UNIT_PRICE] * rng.choice([0.8, 1.0, 1.25], size=len(events))
    no_id = rng.random(len(events)) < 0.3
    events.loc[no_id, c.ORDER_ID] = pd.NA
    purchases = events[events[c.EVENT_TYPE] == c.PURCHASE]
    returns = purchases.sample(frac=0.1, random_state=seed).copy()
    returns[c.EVENT_TS] += pd.to_timedelta(rng.integers(0, 5 * 86_400, len(returns)), unit="s")
    returns[c.QUANTITY] = -returns[c.QUANTITY]
    return events, returns


def _compare_rows(expected: pd.Series, actual: pd.Series, columns) -> None:
    for name in columns:
        a, b = expected[name], actual[name]
        if pd.isna(a) or pd.isna(b):
            assert pd.isna(a) and pd.isna(b), name
        elif isinstance(a, float | np.floating):
            assert b == pytest.approx(a, rel=1e-9, abs=1e-9), name
        else:
            assert a == b, name


def _before(frame: pd.DataFrame, stamp: pd.Timestamp) -> pd.DataFrame:
    return frame[frame[c.EVENT_TS] < stamp.tz_localize(None)]


def test_customer_rows_equal_a_recomputation_from_earlier_events_only():
    events, returns = _synthetic()
    cuts = price_band_cuts(events)
    table = customer_features(events, returns, price_cuts=cuts)
    assert table[c.ORDERS_TOTAL].max() > 1
    assert table[c.CUSTOMER_RETURN_RATE].max() > 0
    for _, row in table.sample(25, random_state=1).iterrows():
        stamp = row[c.FEATURE_TS]
        again = customer_features(_before(events, stamp), _before(returns, stamp), price_cuts=cuts)
        latest = again[again[c.USER_ID] == row[c.USER_ID]].iloc[-1]
        assert latest[c.FEATURE_TS] == stamp
        _compare_rows(latest, row, CUSTOMER_COLUMNS)


def test_customer_item_rows_equal_a_recomputation_from_earlier_events_only():
    events, _ = _synthetic()
    table = customer_item_features(events)
    assert table[c.TIMES_BOUGHT].max() > 1
    for _, row in table.sample(25, random_state=2).iterrows():
        stamp = row[c.FEATURE_TS]
        again = customer_item_features(_before(events, stamp))
        pair = (again[c.USER_ID] == row[c.USER_ID]) & (again[c.ITEM_ID] == row[c.ITEM_ID])
        latest = again[pair].iloc[-1]
        assert latest[c.FEATURE_TS] == stamp
        _compare_rows(latest, row, CUSTOMER_ITEM_COLUMNS)


def test_item_rows_equal_a_recomputation_from_earlier_events_only():
    events, returns = _synthetic()
    table = item_features(events, returns)
    for _, row in table.sample(25, random_state=3).iterrows():
        stamp = row[c.FEATURE_TS]
        again = item_features(_before(events, stamp), _before(returns, stamp), end=stamp)
        latest = again[again[c.ITEM_ID] == row[c.ITEM_ID]].iloc[-1]
        assert latest[c.FEATURE_TS] == stamp
        _compare_rows(latest, row, ITEM_COLUMNS)


def _orders(p: pd.DataFrame) -> pd.Series:
    """Order key: (user, order id), or (user, time) without an order id."""
    return p[c.USER_ID] + "|" + p[c.ORDER_ID].fillna("@" + p[c.EVENT_TS].astype(str))


def test_customer_values_match_a_brute_force_reference():
    events, returns = _synthetic(seed=11)
    cuts = price_band_cuts(events)
    table = customer_features(events, returns, price_cuts=cuts)
    purchases = events[events[c.EVENT_TYPE] == c.PURCHASE]
    for _, row in table.sample(40, random_state=4).iterrows():
        p = _before(purchases, row[c.FEATURE_TS])
        p = p[p[c.USER_ID] == row[c.USER_ID]].assign(order=_orders)
        r = _before(returns, row[c.FEATURE_TS])
        prices = np.sort(p[c.UNIT_PRICE].to_numpy())
        median = prices[(len(prices) + 1) // 2 - 1]
        band = "low" if median <= cuts[0] else "high" if median > cuts[1] else "mid"
        countries = p[c.COUNTRY].value_counts()
        home = sorted(countries[countries == countries.max()].index)[0]
        revenue = (p[c.QUANTITY] * p[c.UNIT_PRICE]).sum()
        expected = {
            c.ORDERS_TOTAL: p["order"].nunique(),
            c.UNITS_TOTAL: float(p[c.QUANTITY].sum()),
            c.REVENUE_TOTAL: revenue,
            c.AVG_BASKET_VALUE: revenue / p["order"].nunique(),
            c.AVG_BASKET_SIZE: float(p.groupby("order")[c.ITEM_ID].nunique().mean()),
            c.FIRST_ORDER_TS: p[c.EVENT_TS].min().tz_localize("UTC"),
            c.LAST_ORDER_TS: p[c.EVENT_TS].max().tz_localize("UTC"),
            c.PRICE_BAND: band,
            c.HOME_COUNTRY: home,
            c.CUSTOMER_RETURN_RATE: (r[c.USER_ID] == row[c.USER_ID]).sum() / len(p),
        }
        _compare_rows(pd.Series(expected), row, expected)


def test_item_values_match_a_brute_force_reference():
    events, returns = _synthetic(seed=12)
    table = item_features(events, returns)
    purchases = events[events[c.EVENT_TYPE] == c.PURCHASE].assign(order=_orders)
    purchases = purchases.assign(day=purchases[c.EVENT_TS].dt.normalize())
    assert table[c.REPURCHASE_RATE].max() > 0
    for _, row in table.sample(40, random_state=5).iterrows():
        day = row[c.FEATURE_TS].tz_localize(None) - pd.Timedelta(days=1)
        p = purchases[(purchases[c.ITEM_ID] == row[c.ITEM_ID]) & (purchases["day"] <= day)]

        def last(days: int, p=p, day=day) -> pd.DataFrame:
            return p[p["day"] > day - pd.Timedelta(days=days)]

        s7, s30 = len(last(7)), len(last(30))
        recent = last(90)[c.UNIT_PRICE]
        latest = p[p["day"] == p["day"].max()][c.UNIT_PRICE]
        orders_per_buyer = p.groupby(c.USER_ID)["order"].nunique()
        r = _before(returns, row[c.FEATURE_TS])
        expected = {
            c.SALES_7D: s7,
            c.SALES_30D: s30,
            c.SALES_90D: len(last(90)),
            c.BUYERS_30D: last(30)[c.USER_ID].nunique(),
            c.TREND_7_30: (s7 / 7 + 1e-3) / (s30 / 30 + 1e-3),
            c.ITEM_PRICE: recent.median() if len(recent) else latest.median(),
            c.REPURCHASE_RATE: (orders_per_buyer >= 2).mean(),
            c.ITEM_RETURN_RATE: (r[c.ITEM_ID] == row[c.ITEM_ID]).sum() / len(p),
            c.ITEM_AGE_DAYS: (row[c.FEATURE_TS].tz_localize(None) - p[c.EVENT_TS].min())
            / pd.Timedelta(days=1),
        }
        _compare_rows(pd.Series(expected, dtype=float), row, expected)


# --- Item popularity --------------------------------------------------------------------------


def test_item_table_has_a_row_per_day_from_the_first_sale():
    events = _events(
        [
            ("2011-01-03 10:00", "u1", "A", 1, 1.0, "o1", UK),
            ("2011-01-05 10:00", "u1", "B", 1, 1.0, "o2", UK),
        ]
    )
    views = _events([("2011-01-08 10:00", "u1", "A", 1, 1.0, None, UK)], event_type=c.VIEW)
    out = item_features(pd.concat([events, views], ignore_index=True))
    assert list(out.columns) == list(ITEM_COLUMNS)
    # the data run to 2011-01-08 (a view): A from the 3rd, B from the 5th
    assert out[out[c.ITEM_ID] == "A"][c.FEATURE_TS].tolist() == [
        _ts(f"2011-01-{d:02d}") for d in range(4, 10)
    ]
    assert out[out[c.ITEM_ID] == "B"][c.FEATURE_TS].min() == _ts("2011-01-06")
    assert out[c.CREATED_TS].equals(out[c.FEATURE_TS])
    for name in (c.FEATURE_TS, c.CREATED_TS):
        assert out[name].dtype == UTC
    assert out[c.ITEM_ID].dtype == "string"
    assert (out[list(c.ITEM_FEATURES)].dtypes == np.float64).all()
    a = out[out[c.ITEM_ID] == "A"]
    assert a[c.ITEM_AGE_DAYS].tolist() == pytest.approx([14 / 24 + d for d in range(6)])


def test_a_sale_counts_in_sales_7d_for_seven_snapshots():
    sale_day = pd.Timestamp("2011-01-10")
    events = _events([("2011-01-10 12:00", "u1", "A", 1, 1.0, "o1", UK)])
    out = item_features(events, end=pd.Timestamp("2011-05-01")).set_index(c.FEATURE_TS)

    def stamp(days_after_sale_day: int) -> pd.Timestamp:  # snapshot of day D + n
        return (sale_day + pd.Timedelta(days=days_after_sale_day + 1)).tz_localize("UTC")

    assert out.index.min() == stamp(0)
    for n in range(7):
        assert out.loc[stamp(n), c.SALES_7D] == 1.0
    assert out.loc[stamp(7), c.SALES_7D] == 0.0  # stamped D + 8
    assert out.loc[stamp(29), c.SALES_30D] == 1.0
    assert out.loc[stamp(30), c.SALES_30D] == 0.0
    assert out.loc[stamp(89), c.SALES_90D] == 1.0
    assert out.loc[stamp(90), c.SALES_90D] == 0.0
    assert out.loc[stamp(29), c.BUYERS_30D] == 1.0
    assert out.loc[stamp(30), c.BUYERS_30D] == 0.0
    assert out.index.max() == _ts("2011-05-01")  # the last day before `end`, closed at `end`


def test_end_drops_later_events():
    events = _events(
        [
            ("2011-01-03 10:00", "u1", "A", 1, 1.0, "o1", UK),
            ("2011-01-09 10:00", "u1", "A", 1, 1.0, "o2", UK),
        ]
    )
    out = item_features(events, end=pd.Timestamp("2011-01-06", tz="UTC"))
    assert out[c.FEATURE_TS].max() == _ts("2011-01-06")
    assert (out[c.SALES_7D] == 1.0).all()
    assert item_features(events, end=pd.Timestamp("2011-01-02")).empty


def test_trend_of_a_flat_series_is_one():
    start = pd.Timestamp("2011-01-01 10:00")
    rows = [(start + pd.Timedelta(days=d), "u1", "A", 1, 1.0, f"o{d}", UK) for d in range(60)]
    out = item_features(_events(rows))
    assert out[c.TREND_7_30].iloc[-1] == pytest.approx(1.0)
    assert out[c.TREND_7_30].iloc[29:].to_numpy() == pytest.approx(1.0)
    assert out[c.TREND_7_30].iloc[0] > 1  # one day of sales: rising


def test_buyers_30d_counts_distinct_customers_in_the_window():
    events = _events(
        [
            ("2011-01-01 10:00", "u1", "A", 1, 1.0, "o1", UK),
            ("2011-01-06 10:00", "u1", "A", 1, 1.0, "o2", UK),
            ("2011-01-06 11:00", "u2", "A", 1, 1.0, "o3", UK),
        ]
    )
    out = item_features(events, end=pd.Timestamp("2011-03-01")).set_index(c.FEATURE_TS)
    assert out.loc[_ts("2011-01-02"), c.BUYERS_30D] == 1.0
    assert out.loc[_ts("2011-01-07"), c.BUYERS_30D] == 2.0
    assert out.loc[_ts("2011-01-07"), c.SALES_30D] == 3.0
    assert out.loc[_ts("2011-02-05"), c.BUYERS_30D] == 2.0  # day 01-06 + 29
    assert out.loc[_ts("2011-02-06"), c.BUYERS_30D] == 0.0


def test_repurchase_rate_is_the_share_of_buyers_with_two_orders():
    events = _events(
        [
            ("2011-01-01 10:00", "u1", "A", 1, 1.0, "o1", UK),
            ("2011-01-01 10:00", "u1", "A", 2, 1.0, "o1", UK),  # same order: not a repurchase
            ("2011-01-02 10:00", "u2", "A", 1, 1.0, "o2", UK),
            ("2011-01-04 10:00", "u1", "A", 1, 1.0, "o3", UK),
        ]
    )
    out = item_features(events).set_index(c.FEATURE_TS)[c.REPURCHASE_RATE]
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.5])


def test_item_price_is_the_90_day_median_else_the_latest_price():
    events = _events(
        [
            ("2011-01-01 10:00", "u1", "A", 1, 1.0, "o1", UK),
            ("2011-01-01 11:00", "u2", "A", 1, 2.0, "o2", UK),
            ("2011-01-02 10:00", "u1", "A", 1, 4.0, "o3", UK),
            ("2011-01-02 10:00", "u1", "A", 1, 4.0, "o3", UK),
            ("2011-06-01 10:00", "u1", "A", 1, 7.0, "o4", UK),
        ]
    )
    out = item_features(events).set_index(c.FEATURE_TS)[c.ITEM_PRICE]
    assert out[_ts("2011-01-02")] == pytest.approx(1.5)  # 1, 2
    assert out[_ts("2011-01-03")] == pytest.approx(3.0)  # 1, 2, 4, 4
    assert out[_ts("2011-04-01")] == pytest.approx(3.0)  # day 03-31 = 01-01 + 89: all four
    assert out[_ts("2011-04-02")] == pytest.approx(4.0)  # only the two of 01-02 are left
    assert out[_ts("2011-04-03")] == pytest.approx(4.0)  # none left: the latest price
    assert out[_ts("2011-05-31")] == pytest.approx(4.0)
    assert out[_ts("2011-06-02")] == pytest.approx(7.0)


def test_item_return_rate_with_and_without_returns():
    events = _events(
        [
            ("2011-01-01 10:00", "u1", "A", 1, 1.0, "o1", UK),
            ("2011-01-01 10:00", "u2", "A", 1, 1.0, "o2", UK),
            ("2011-01-04 10:00", "u3", "A", 1, 1.0, "o3", UK),
            ("2011-01-04 10:00", "u3", "A", 1, 1.0, "o3", UK),
        ]
    )
    returns = _events(
        [
            ("2011-01-02 10:00", "u1", "A", 1, 1.0, "C1", UK),
            ("2010-12-20 10:00", "u9", "A", 1, 1.0, "C0", UK),  # before the data: counts at once
            ("2011-01-02 10:00", "u1", "Z", 1, 1.0, "C2", UK),  # never sold: ignored
        ]
    )
    assert (item_features(events)[c.ITEM_RETURN_RATE] == 0.0).all()
    rates = item_features(events, returns).set_index(c.FEATURE_TS)[c.ITEM_RETURN_RATE]
    assert rates.tolist() == pytest.approx([0.5, 1.0, 1.0, 0.5])


# --- Customer-item history --------------------------------------------------------------------


def test_customer_item_history():
    events = _events(
        [
            ("2011-01-03 10:00", "u1", "A", 2, 1.0, "o1", UK),
            ("2011-01-03 10:00", "u1", "A", 1, 1.0, "o1", UK),  # same order, same item
            ("2011-01-03 15:00", "u1", "A", 4, 1.0, "o2", UK),
            ("2011-01-03 15:00", "u1", "B", 1, 1.0, "o2", UK),
            ("2011-01-09 08:00", "u1", "A", 1, 1.0, "o3", UK),
        ]
    )
    out = customer_item_features(events)
    assert list(out.columns) == list(CUSTOMER_ITEM_COLUMNS)
    a = out[out[c.ITEM_ID] == "A"]
    assert a[c.FEATURE_TS].tolist() == [_ts("2011-01-04"), _ts("2011-01-10")]
    assert a[c.TIMES_BOUGHT].tolist() == [2, 3]
    assert a[c.UNITS_BOUGHT].tolist() == pytest.approx([7.0, 8.0])
    assert a[c.LAST_BOUGHT_TS].tolist() == [_ts("2011-01-03 15:00"), _ts("2011-01-09 08:00")]
    assert out[c.TIMES_BOUGHT].dtype == np.int64
    assert out[c.LAST_BOUGHT_TS].dtype == UTC
    assert len(out) == 3


# --- Inputs ------------------------------------------------------------------------------------


def test_only_purchases_count():
    purchases = _events([("2011-01-03 10:00", "u1", "A", 1, 1.0, "o1", UK)])
    views = _events([("2011-01-03 09:00", "u1", "B", 1, 1.0, None, UK)], event_type=c.VIEW)
    carts = _events([("2011-01-03 09:30", "u1", "B", 1, 1.0, None, UK)], c.ADD_TO_CART)
    events = pd.concat([views, carts, purchases], ignore_index=True)
    assert customer_features(events)[c.AVG_BASKET_SIZE].tolist() == [1.0]
    assert set(item_features(events)[c.ITEM_ID]) == {"A"}
    assert set(customer_item_features(events)[c.ITEM_ID]) == {"A"}


def test_rows_without_user_or_item_are_ignored():
    events = _events(
        [
            ("2011-01-03 10:00", "u1", "A", 1, 1.0, "o1", UK),
            ("2011-01-03 10:00", None, "A", 1, 1.0, "o2", UK),
            ("2011-01-03 10:00", "u1", None, 1, 1.0, "o1", UK),
        ]
    )
    assert customer_features(events)[c.UNITS_TOTAL].tolist() == [1.0]
    assert item_features(events)[c.BUYERS_30D].tolist() == [1.0]
    assert customer_item_features(events)[c.UNITS_BOUGHT].tolist() == [1.0]


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        (customer_features, CUSTOMER_COLUMNS),
        (item_features, ITEM_COLUMNS),
        (customer_item_features, CUSTOMER_ITEM_COLUMNS),
    ],
)
def test_no_purchases_give_an_empty_typed_table(table, columns):
    views = _events([("2011-01-03 09:00", "u1", "B", 1, 1.0, None, UK)], event_type=c.VIEW)
    out = table(views)
    assert out.empty
    assert list(out.columns) == list(columns)
    assert out[c.FEATURE_TS].dtype == UTC


@pytest.mark.parametrize("table", [customer_features, item_features, customer_item_features])
def test_timezone_aware_event_times_give_the_same_table(table):
    events, _ = _synthetic()
    aware = events.copy()
    aware[c.EVENT_TS] = aware[c.EVENT_TS].dt.tz_localize("UTC").dt.tz_convert("Europe/Paris")
    pd.testing.assert_frame_equal(table(events), table(aware))


def test_returns_from_quarantine_keeps_returned_products_only():
    quarantined = _events(
        [
            ("2011-01-03 10:00", "u1", "A", -2, 1.0, "C1", UK),
            ("2011-01-03 10:00", None, "A", -1, 1.0, "C2", UK),
            ("2011-01-03 10:00", "u1", "POST", -1, 18.0, "C3", UK),
            ("2011-01-03 10:00", "u1", "A", -2, 1.0, "C1", UK),
            ("2011-01-03 10:00", "u2", "B", 0, 1.0, "4", UK),
        ]
    )
    quarantined[c.REASON] = "x"
    quarantined[c.REASONS] = pd.array(
        [
            "cancellation;non_positive_quantity",
            "missing_user;cancellation;non_positive_quantity",
            "cancellation;non_positive_quantity;non_product_item",
            "cancellation;non_positive_quantity;duplicate",
            "non_positive_quantity",
        ],
        dtype="string",
    )
    out = returns_from_quarantine(quarantined)
    assert len(out) == 1
    assert out.iloc[0][c.USER_ID] == "u1"
    assert out.iloc[0][c.QUANTITY] == 2.0
    assert c.REASONS not in out.columns
    assert set(out.columns) <= set(c.CANONICAL_COLUMNS)


# --- Request-time features --------------------------------------------------------------------


def test_request_context_of_a_known_time():
    ts = pd.Series(pd.to_datetime(["2011-01-08 14:30", "2011-01-10 00:05"]), index=[7, 9])
    out = request_context_features(ts)
    assert out.index.tolist() == [7, 9]
    assert out.to_dict("list") == {
        c.HOUR_OF_DAY: [14, 0],
        c.DAY_OF_WEEK: [5, 0],
        c.IS_WEEKEND: [1, 0],
    }
    assert (out.dtypes == np.int64).all()


def test_request_context_is_timezone_tolerant():
    naive = pd.Series(pd.to_datetime(["2011-01-08 14:30", "2011-01-09 23:30"]))
    aware = pd.Series(pd.to_datetime(["2011-01-08 15:30+01:00", "2011-01-10 00:30+01:00"]))
    objects = pd.Series([pd.Timestamp("2011-01-08 14:30"), pd.Timestamp("2011-01-10 00:30+01")])
    expected = request_context_features(naive)
    pd.testing.assert_frame_equal(request_context_features(aware), expected)
    pd.testing.assert_frame_equal(request_context_features(objects), expected)
    assert expected[c.DAY_OF_WEEK].tolist() == [5, 6]


def test_request_context_refuses_missing_times():
    with pytest.raises(ValueError, match="missing"):
        request_context_features(pd.Series([pd.Timestamp("2011-01-08"), pd.NaT]))


def test_recency_in_fractional_days_and_missing_when_never_bought():
    request = pd.Series(pd.to_datetime(["2011-01-10 12:00", "2011-01-10 12:00"]))
    last_order = pd.Series(pd.to_datetime(["2011-01-08 00:00", None]))
    first_order = pd.Series(pd.to_datetime(["2010-12-31 12:00", None]))
    last_bought = pd.Series([pd.NaT, pd.NaT])
    out = recency_features(request, last_order, first_order, last_bought)
    assert out[c.DAYS_SINCE_LAST_ORDER].iloc[0] == pytest.approx(2.5)
    assert out[c.CUSTOMER_TENURE_DAYS].iloc[0] == pytest.approx(10.0)
    assert out.iloc[1].isna().all()
    assert out[c.DAYS_SINCE_LAST_BOUGHT].isna().all()
    assert (out.dtypes == np.float64).all()


def test_recency_is_timezone_tolerant():
    def series(values, tz=None):
        ts = pd.Series(pd.to_datetime(values))
        return ts.dt.tz_localize("UTC").dt.tz_convert(tz) if tz else ts

    times = (["2011-01-10 12:00"], ["2011-01-08 06:00"], ["2011-01-01"], ["2011-01-09 18:00"])
    naive = recency_features(*(series(t) for t in times))
    aware = recency_features(*(series(t, "US/Eastern") for t in times))
    mixed = recency_features(series(times[0], "Asia/Tokyo"), *(series(t) for t in times[1:]))
    objects = recency_features(*(pd.Series(t, dtype=object) for t in times))
    for other in (aware, mixed, objects):
        pd.testing.assert_frame_equal(other, naive)
    assert naive.iloc[0].tolist() == pytest.approx([2.25, 9.5, 0.75])


def test_request_features_work_on_tables_written_for_feast():
    """The on-demand view gets stored timestamps back as UTC times (from Unix seconds)."""
    events = _events([("2011-01-05 10:00", "u1", "A", 2, 1.5, "o1", UK)])
    row = customer_features(events)
    seconds = (row[c.LAST_ORDER_TS] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    back = pd.to_datetime(seconds, unit="s", utc=True)
    request = pd.Series([pd.Timestamp("2011-01-06 10:00", tz="UTC")])
    out = recency_features(request, back, back, pd.Series([pd.NaT]))
    assert out[c.DAYS_SINCE_LAST_ORDER].tolist() == pytest.approx([1.0])


# --- Names, descriptions, defaults ------------------------------------------------------------


def test_every_column_is_described_and_every_feature_has_a_default():
    tables = CUSTOMER_COLUMNS + ITEM_COLUMNS + CUSTOMER_ITEM_COLUMNS
    request = c.REQUEST_CONTEXT_FEATURES + c.RECENCY_FEATURES
    for name in set(tables + request) - {c.USER_ID, c.ITEM_ID}:
        assert c.FEATURE_DESCRIPTIONS[name].strip(), name
    features = c.CUSTOMER_FEATURES + c.ITEM_FEATURES + c.CUSTOMER_ITEM_FEATURES
    assert set(features + c.RECENCY_FEATURES) <= set(DEFAULT_FEATURE_VALUES)
    assert DEFAULT_FEATURE_VALUES[c.ORDERS_TOTAL] == 0
    assert DEFAULT_FEATURE_VALUES[c.PRICE_BAND] == c.PRICE_BAND_UNKNOWN
    assert np.isnan(DEFAULT_FEATURE_VALUES[c.ITEM_PRICE])
    # the default of an item without sales is what the formulas give for zero sales
    assert DEFAULT_FEATURE_VALUES[c.TREND_7_30] == pytest.approx((0 + 1e-3) / (0 + 1e-3))


def test_feature_names_do_not_collide_across_tables():
    """One feature service joins every table into one row: Feast needs distinct names."""
    names = (
        c.CUSTOMER_FEATURES
        + c.ITEM_FEATURES
        + c.CUSTOMER_ITEM_FEATURES
        + c.REQUEST_CONTEXT_FEATURES
        + c.RECENCY_FEATURES
        + (c.DEVICE, c.COUNTRY)
    )
    assert len(names) == len(set(names))


# --- Full data --------------------------------------------------------------------------------

UCI_SOURCE = PROJECT_ROOT / "data" / "sources" / "online_retail.yaml"


@pytest.mark.slow
@pytest.mark.skipif(not UCI_SOURCE.exists(), reason="UCI Online Retail data not present")
def test_full_uci_data_is_fast():
    from recsys_assets.ingestion.sources import load_events, load_source_spec
    from recsys_assets.ingestion.validation import split_valid_and_quarantined

    spec = load_source_spec(UCI_SOURCE)
    result = split_valid_and_quarantined(load_events(spec), spec)
    returns = returns_from_quarantine(result.quarantined)
    for table, args in (
        (customer_features, (result.valid, returns)),
        (item_features, (result.valid, returns)),
        (customer_item_features, (result.valid,)),
    ):
        start = time.perf_counter()
        out = table(*args)
        assert time.perf_counter() - start < 10, table.__name__
        assert not out.empty
        assert out[c.FEATURE_TS].dtype == UTC


def test_session_context_is_stamped_at_the_event_and_deduplicated():
    from recsys_assets.features.tables import session_context_features

    events = pd.DataFrame(
        {
            c.USER_ID: pd.array(["u1", "u1", "u1", None], dtype="string"),
            c.EVENT_TS: pd.to_datetime(
                ["2011-01-05 10:00", "2011-01-05 10:00", "2011-01-04 09:00", "2011-01-05 11:00"]
            ),
            c.DEVICE: pd.array(["web", "app", "web", "web"], dtype="string"),
            c.COUNTRY: pd.array(["France"] * 4, dtype="string"),
        }
    )
    got = session_context_features(events)
    assert got[c.USER_ID].tolist() == ["u1", "u1"]  # the guest row has no customer
    assert got[c.FEATURE_TS].tolist() == [
        pd.Timestamp("2011-01-04 09:00", tz="UTC"),
        pd.Timestamp("2011-01-05 10:00", tz="UTC"),
    ]
    assert got[c.DEVICE].tolist() == ["web", "app"]  # last of two events at the same time
    assert (got[c.CREATED_TS] == got[c.FEATURE_TS]).all()
