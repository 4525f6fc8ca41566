"""Feature-view TTLs derived from the purchases: hand-checked spans and cadences, the override,
the TTL file the Feast repository reads, and the pandas join that training uses under them."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from recsys_assets.config.settings import FEATURE_VIEWS, FeatureSettings
from recsys_assets.core import constants as c
from recsys_assets.features import tables as f
from recsys_assets.features.store import expired, to_feast_table
from recsys_assets.features.ttl import (
    DEFAULT_TTL_DAYS,
    derive_ttls,
    read_ttls,
    table_ttls,
    ttl_days,
    write_ttls,
)

DEFAULTS = {view: timedelta(days=days) for view, days in DEFAULT_TTL_DAYS.items()}


def _events(times, users=None, items=None) -> pd.DataFrame:
    """Purchase lines at ``times``: a new customer each line unless ``users`` is given."""
    ts = pd.to_datetime(pd.Series(times)).astype("datetime64[ns]")
    n = len(ts)
    frame = pd.DataFrame(
        {
            c.EVENT_TS: ts,
            c.USER_ID: users or [f"u{i}" for i in range(n)],
            c.ITEM_ID: items or [f"i{i % 3}" for i in range(n)],
            c.QUANTITY: np.ones(n),
            c.UNIT_PRICE: np.full(n, 2.5),
            c.ORDER_ID: [f"o{i}" for i in range(n)],
            c.COUNTRY: "France",
            c.EVENT_TYPE: c.PURCHASE,
        }
    )
    text = [c.USER_ID, c.ITEM_ID, c.ORDER_ID, c.COUNTRY, c.EVENT_TYPE]
    return frame.astype(dict.fromkeys(text, "string"))


def _tables(events: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {
        "customer_profile": to_feast_table(f.customer_features(events)),
        "item_popularity": to_feast_table(f.item_features(events)),
        "customer_item": to_feast_table(f.customer_item_features(events)),
    }


# A decade of sparse history: one purchase on the first of every month, 2000-01 .. 2011-01,
# each by a customer never seen again (most customers of a ratings export are seen once).
DECADE = pd.date_range("2000-01-01", "2011-01-01", freq="MS") + pd.Timedelta(hours=10)


def test_a_sparse_decade_keeps_every_customer_and_a_monthly_item_cadence():
    ttls = derive_ttls(DECADE)
    # span: 2000-01-01 to the close of 2011-01-01 = 11 * 365 + 3 leap days + 1 = 4,019 days;
    # twice that is 8,038 days, 22.02 years: 23 whole years
    assert ttl_days(ttls)["customer_profile"] == ttl_days(ttls)["customer_item"] == 23 * 365
    # the last year's purchase days 2010-02-01 .. 2011-01-01: gaps 28, 30 or 31 days, whose
    # 0.95 quantile (sorted, position 9.5 of 0..10) is 31
    assert ttl_days(ttls)["item_popularity"] == 31
    assert ttl_days(ttls)["session_context"] == 1
    # the first customer's row (stamped at the close of 2000-01-01) at the data's end: kept
    first = pd.Timestamp("2000-01-02", tz="UTC").timestamp()
    end = pd.Timestamp("2011-01-02", tz="UTC")
    assert not expired([first], end, ttls["customer_profile"])[0]
    assert expired([first], end, DEFAULTS["customer_profile"])[0]  # the fixed 3,650 days lost it


def test_a_six_week_daily_export_keeps_todays_ttls():
    times = pd.date_range("2024-01-01 09:30", periods=42, freq="D")
    assert derive_ttls(times) == DEFAULTS


def test_uci_like_daily_trading_keeps_todays_ttls():
    """A year of trading six days a week with a twelve-day Christmas break (UCI Online Retail:
    305 trading days, gaps of 1 and 2 days, one of 12): 3,650 days, 7 days."""
    days = pd.date_range("2010-12-01", "2011-12-09", freq="D")
    trading = days[(days.dayofweek != 5) & ~((days > "2010-12-23") & (days < "2011-01-04"))]
    gaps = np.diff(trading.values).astype("timedelta64[D]").astype(int)
    assert gaps.max() == 12 and np.quantile(gaps, 0.95) <= 2
    assert derive_ttls(trading + pd.Timedelta(hours=12)) == DEFAULTS


def test_a_shop_that_sells_every_ten_days_keeps_its_snapshot_ten_days():
    times = pd.date_range("2020-01-01", periods=40, freq="10D")
    assert ttl_days(derive_ttls(times))["item_popularity"] == 10
    assert ttl_days(derive_ttls(times))["customer_profile"] == 3650  # 390 days: a short export


def test_the_cadence_is_the_last_years_and_a_snapshot_never_outlives_a_year():
    sparse_then_daily = DECADE.append(pd.date_range("2011-01-02", "2011-12-31", freq="D"))
    assert ttl_days(derive_ttls(sparse_then_daily))["item_popularity"] == 7  # daily now
    two_days = pd.to_datetime(["2000-01-10", "2011-01-10"])  # one gap of 11 years
    assert ttl_days(derive_ttls(two_days))["item_popularity"] == 365


def test_no_purchases_give_the_defaults():
    assert derive_ttls([]) == DEFAULTS
    assert derive_ttls(pd.Series([pd.NaT])) == DEFAULTS
    assert table_ttls({}) == DEFAULTS


def test_order_and_time_zone_do_not_matter_and_end_extends_the_span():
    shuffled = pd.Series(DECADE).sample(frac=1.0, random_state=0)
    assert derive_ttls(shuffled) == derive_ttls(DECADE) == derive_ttls(DECADE.tz_localize("UTC"))
    later = derive_ttls(DECADE, end="2016-01-01")  # the data ends five years later: 16 years
    assert ttl_days(later)["customer_profile"] == 33 * 365  # 2 * 5,844 days = 32.02 years


def test_an_override_replaces_the_derived_value_of_that_view_only():
    ttls = derive_ttls(DECADE, overrides={"item_popularity": 14, "customer_profile": 3650})
    assert ttl_days(ttls) == {
        "customer_profile": 3650,
        "item_popularity": 14,
        "customer_item": 23 * 365,
        "session_context": 1,
    }
    with pytest.raises(ValueError, match="unknown view 'items'"):
        derive_ttls(DECADE, overrides={"items": 14})
    with pytest.raises(ValueError, match="must be in"):
        derive_ttls(DECADE, overrides={"item_popularity": 0})
    with pytest.raises(ValueError, match="number of days"):
        derive_ttls(DECADE, overrides={"item_popularity": "14"})


def test_the_tables_give_the_ttls_of_the_purchases_behind_them():
    events = _events(DECADE)
    tables = _tables(events)
    end = tables["item_popularity"][c.FEATURE_TS].max()  # the close of the data's last day
    assert end == pd.Timestamp("2011-01-02", tz="UTC")
    assert table_ttls(tables) == derive_ttls(events[c.EVENT_TS], end=end) == derive_ttls(DECADE)
    assert table_ttls(tables, {"customer_item": 30})["customer_item"] == timedelta(days=30)
    six_weeks = _events(pd.date_range("2024-01-01 09:30", periods=42, freq="D"))
    assert table_ttls(_tables(six_weeks)) == DEFAULTS


def test_the_ttl_file_round_trips_and_defaults_where_absent(tmp_path):
    path = tmp_path / "data" / "view_ttls.json"
    assert read_ttls(path) == DEFAULTS  # no file: today's fixed values
    ttls = derive_ttls(DECADE)
    write_ttls(path, ttls)
    assert json.loads(path.read_text())["ttl_days"]["customer_profile"] == 23 * 365
    assert read_ttls(path) == ttls
    path.write_text(json.dumps({"ttl_days": {"item_popularity": 9}}))
    assert read_ttls(path) == DEFAULTS | {"item_popularity": timedelta(days=9)}
    path.write_text(json.dumps({"ttl_days": {"nope": 9}}))
    with pytest.raises(ValueError, match="unknown view 'nope'"):
        read_ttls(path)


def test_the_setting_names_the_views_the_ttls_are_derived_for():
    assert set(FEATURE_VIEWS) == set(DEFAULT_TTL_DAYS)
    assert FeatureSettings().ttl_days == {}
    assert FeatureSettings(ttl_days={"item_popularity": 14}).ttl_days == {"item_popularity": 14}
    with pytest.raises(ValueError, match="unknown view 'items'"):
        FeatureSettings(ttl_days={"items": 14})
    with pytest.raises(ValueError, match="positive number of days"):
        FeatureSettings(ttl_days={"item_popularity": -1})
    with pytest.raises(ValueError, match="must map views to days"):
        FeatureSettings(ttl_days=[14])


def test_the_training_join_keeps_a_customer_seen_once_a_decade_ago():
    """The ranker's pandas point-in-time join derives the TTLs from its tables: a customer
    who bought once in 2000 is known at the end of 2011, unless the TTL is set shorter."""
    from recsys_assets.training.ranker import via_pandas

    events = _events(DECADE)
    tables = _tables(events)
    at = pd.Timestamp("2011-01-02", tz="UTC")
    rows = pd.DataFrame({c.USER_ID: ["u0", "u132"], c.ITEM_ID: ["i0", "i0"], c.FEATURE_TS: at})
    got = via_pandas(tables, rows)
    assert got[c.ORDERS_TOTAL].tolist() == [1.0, 1.0]  # 2000-01-01 and 2011-01-01: both known
    assert got[c.TIMES_BOUGHT].tolist() == [1.0, 1.0]  # both bought i0
    assert got[c.SALES_90D].notna().all()
    short = via_pandas(tables, rows, derive_ttls(DECADE, overrides={"customer_profile": 3650}))
    assert np.isnan(short[c.ORDERS_TOTAL][0]) and short[c.ORDERS_TOTAL][1] == 1.0
