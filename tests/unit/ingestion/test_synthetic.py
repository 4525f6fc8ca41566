"""The synthetic event generator: shape, determinism, funnel logic and injected drift."""

from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import pandas as pd
import pytest
import yaml

from recsys_assets.core import constants as c
from recsys_assets.ingestion.synthetic import (
    CATALOGUE_COLUMNS,
    CATEGORY,
    EVENT_COLUMNS,
    LAUNCH_TS,
    NewItems,
    PreferenceShift,
    SeasonalBoost,
    SyntheticConfig,
    category_names,
    generate_events,
    item_catalogue,
    user_segment,
)

SHIFT_DATE = pd.Timestamp("2024-02-15")
BOOST_START, BOOST_END = pd.Timestamp("2024-03-01"), pd.Timestamp("2024-03-15")
LAUNCH = pd.Timestamp("2024-02-01")

SHIFT = PreferenceShift(
    target_categories=("Garden",), start=date(2024, 2, 15), strength=0.6, user_fraction=0.4
)
BOOST = SeasonalBoost(category="Christmas", start="2024-03-01", end="2024-03-15", factor=4.0)
NEW = NewItems(category="Toys", launch="2024-02-01", n_items=6, popularity=3.0)
DRIFTED = SyntheticConfig(preference_shifts=(SHIFT,), seasonal_boosts=(BOOST,), new_items=(NEW,))


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return generate_events(SyntheticConfig())


@pytest.fixture(scope="module")
def drifted() -> pd.DataFrame:
    """Events of the drifted config with each item's true category attached."""
    catalogue = item_catalogue(DRIFTED)[[c.ITEM_ID, CATEGORY]]
    return generate_events(DRIFTED).merge(catalogue, on=c.ITEM_ID, how="left", validate="m:1")


def _share(frame: pd.DataFrame, category: str) -> float:
    assert len(frame) > 300, "too few events for a share"
    return float((frame[CATEGORY] == category).mean())


# --- Shape and determinism ------------------------------------------------------------------


def test_default_config_is_a_small_realistic_shop(events: pd.DataFrame) -> None:
    counts = events[c.EVENT_TYPE].value_counts()
    assert 20_000 < len(events) < 200_000
    assert counts[c.VIEW] > counts[c.ADD_TO_CART] > counts[c.PURCHASE] > 1_000
    assert events[c.USER_ID].nunique() > 400  # of 500 users, nearly all are active
    assert events[c.ITEM_ID].nunique() > 250  # of 300 items
    assert events[c.USER_ID].str.fullmatch(r"U\d{5}").all()
    assert events[c.ITEM_ID].str.fullmatch(r"I\d{5}").all()
    ts = events[c.EVENT_TS]
    assert ts.is_monotonic_increasing
    assert ts.min() >= pd.Timestamp("2024-01-01") and ts.max() < pd.Timestamp("2024-03-31")
    # most sessions are in the daytime, and the UK dominates
    assert ts.dt.hour.between(8, 22).mean() > 0.85
    assert (events[c.COUNTRY] == "United Kingdom").mean() > 0.7
    # the quarantine's duplicate rule would drop exact repeats: there are none
    assert not events.duplicated().any()


def test_columns_and_dtypes(events: pd.DataFrame) -> None:
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert events[c.EVENT_TS].dtype == np.dtype("datetime64[ns]")
    assert events[c.QUANTITY].dtype == np.dtype("int64")
    assert events[c.UNIT_PRICE].dtype == np.dtype("float64")
    text = [c.USER_ID, c.ITEM_ID, c.EVENT_TYPE, c.ORDER_ID, c.DESCRIPTION, c.COUNTRY, c.DEVICE]
    for column in text:
        assert isinstance(events[column].dtype, pd.StringDtype), column
    assert not events.drop(columns=[c.ORDER_ID]).isna().any().any()
    assert set(events[c.EVENT_TYPE].unique()) == set(c.EVENT_TYPES)
    assert (events[c.QUANTITY] >= 1).all() and (events[c.UNIT_PRICE] > 0).all()
    assert (events.loc[events[c.EVENT_TYPE] == c.VIEW, c.QUANTITY] == 1).all()
    config = SyntheticConfig()
    assert set(events[c.COUNTRY].unique()) <= {name for name, _ in config.countries}
    assert set(events[c.DEVICE].unique()) == {name for name, _ in config.devices}


def test_same_config_same_frame_other_seed_other_frame() -> None:
    config = SyntheticConfig(n_users=120, n_items=80, days=30)
    first = generate_events(config)
    pd.testing.assert_frame_equal(first, generate_events(config))
    pd.testing.assert_frame_equal(item_catalogue(config), item_catalogue(config))
    other = generate_events(dataclasses.replace(config, seed=config.seed + 1))
    assert not first.equals(other)
    assert not item_catalogue(config).equals(
        item_catalogue(dataclasses.replace(config, seed=config.seed + 1))
    )


def test_no_sessions_gives_an_empty_frame_with_the_same_schema(events: pd.DataFrame) -> None:
    empty = generate_events(SyntheticConfig(sessions_per_user_per_week=0))
    assert empty.empty
    pd.testing.assert_series_equal(empty.dtypes, events.dtypes)


def test_events_agree_with_the_catalogue(events: pd.DataFrame) -> None:
    catalogue = item_catalogue(SyntheticConfig())
    assert list(catalogue.columns) == list(CATALOGUE_COLUMNS)
    assert catalogue[c.ITEM_ID].is_unique and len(catalogue) == 300
    assert set(catalogue[CATEGORY]) == set(category_names(SyntheticConfig()))
    assert catalogue[c.UNIT_PRICE].between(0.5, 50.0).all()
    assert (catalogue[c.UNIT_PRICE] == catalogue[c.UNIT_PRICE].round(2)).all()
    joined = events.merge(catalogue, on=c.ITEM_ID, how="left", suffixes=("", "_true"))
    assert (joined[c.UNIT_PRICE] == joined[f"{c.UNIT_PRICE}_true"]).all()
    number = joined[c.ITEM_ID].str.slice(1).astype(int).astype(str)
    assert (joined[c.DESCRIPTION] == joined[CATEGORY] + " item " + number).all()


# --- Funnel ---------------------------------------------------------------------------------


def test_only_purchases_have_order_ids_one_per_checkout(events: pd.DataFrame) -> None:
    is_purchase = events[c.EVENT_TYPE] == c.PURCHASE
    assert events.loc[~is_purchase, c.ORDER_ID].isna().all()
    purchases = events[is_purchase]
    assert purchases[c.ORDER_ID].str.fullmatch(r"S\d{6}").all()
    per_order = purchases.groupby(c.ORDER_ID).agg(
        users=(c.USER_ID, "nunique"), times=(c.EVENT_TS, "nunique"), lines=(c.ITEM_ID, "size")
    )
    assert (per_order["users"] == 1).all() and (per_order["times"] == 1).all()
    assert not purchases.duplicated([c.ORDER_ID, c.ITEM_ID]).any()
    assert per_order["lines"].max() > 1  # baskets, not only single lines
    # order ids count up with time
    first_seen = purchases.drop_duplicates(c.ORDER_ID)[c.ORDER_ID]
    assert first_seen.is_monotonic_increasing


def _previous(later: pd.DataFrame, earlier: pd.DataFrame) -> pd.DataFrame:
    """For each row of ``later``: the latest ``earlier`` row of that user and item before it."""
    keys = [c.USER_ID, c.ITEM_ID]
    return pd.merge_asof(
        later.sort_values(c.EVENT_TS),
        earlier[[*keys, c.EVENT_TS, c.QUANTITY]].rename(columns={c.EVENT_TS: "before_ts"}),
        left_on=c.EVENT_TS,
        right_on="before_ts",
        by=keys,
        allow_exact_matches=False,
        suffixes=("", "_before"),
    )


def test_view_before_add_to_cart_before_purchase(events: pd.DataFrame) -> None:
    by_type = {kind: events[events[c.EVENT_TYPE] == kind] for kind in c.EVENT_TYPES}
    bought = _previous(by_type[c.PURCHASE], by_type[c.ADD_TO_CART])
    assert bought["before_ts"].notna().all()  # every purchase line was in the cart first
    gap = bought[c.EVENT_TS] - bought["before_ts"]
    assert gap.max() < pd.Timedelta(hours=2)  # ... in the same session
    assert (bought[c.QUANTITY] == bought[f"{c.QUANTITY}_before"]).all()
    carted = _previous(by_type[c.ADD_TO_CART], by_type[c.VIEW])
    assert carted["before_ts"].notna().all()  # every add_to_cart follows a view of the item
    assert (carted[c.EVENT_TS] - carted["before_ts"]).max() < pd.Timedelta(hours=1)


# --- Drift ----------------------------------------------------------------------------------


def test_new_items_appear_only_after_launch(drifted: pd.DataFrame) -> None:
    catalogue = item_catalogue(DRIFTED)
    new = catalogue[catalogue[LAUNCH_TS] > pd.Timestamp("2024-01-01")]
    assert len(new) == NEW.n_items and (new[LAUNCH_TS] == LAUNCH).all()
    assert (new[CATEGORY] == NEW.category).all()
    assert list(new[c.ITEM_ID]) == [f"I{i:05d}" for i in range(301, 307)]  # after the base ids
    on_new = drifted[drifted[c.ITEM_ID].isin(new[c.ITEM_ID])]
    assert on_new[c.EVENT_TS].min() >= LAUNCH
    assert set(on_new[c.ITEM_ID]) == set(new[c.ITEM_ID])  # every new item is seen
    assert (on_new[c.EVENT_TYPE] == c.PURCHASE).any()
    # adding items leaves the base catalogue as it was
    base = item_catalogue(SyntheticConfig())
    pd.testing.assert_frame_equal(catalogue.iloc[: len(base)], base)


@pytest.mark.parametrize(("kind", "margin"), [(c.VIEW, 0.3), (c.PURCHASE, 0.25)])
def test_preference_shift_moves_the_segment_not_the_control(
    drifted: pd.DataFrame, kind: str, margin: float
) -> None:
    segment = user_segment(DRIFTED, SHIFT)
    assert len(segment) == round(SHIFT.user_fraction * DRIFTED.n_users)
    rows = drifted[drifted[c.EVENT_TYPE] == kind]
    in_segment = rows[c.USER_ID].isin(segment)
    after = rows[c.EVENT_TS] >= SHIFT_DATE

    def change(group: pd.Series) -> float:
        return _share(rows[group & after], "Garden") - _share(rows[group & ~after], "Garden")

    assert change(in_segment) > margin
    assert abs(change(~in_segment)) < 0.05
    assert segment == user_segment(DRIFTED, SHIFT)  # the ground truth is stable across calls


def test_country_segment_is_the_users_living_there() -> None:
    shift = PreferenceShift(
        target_categories=("Kitchen",), start="2024-02-01", country="Germany", user_fraction=1.0
    )
    config = SyntheticConfig(preference_shifts=(shift,))
    frame = generate_events(config)
    segment = user_segment(config, shift)
    assert 5 < len(segment) < 100  # ~5% of 500 users live in Germany
    in_segment = frame[c.USER_ID].isin(segment)
    assert (frame.loc[in_segment, c.COUNTRY] == "Germany").mean() > 0.9
    assert (frame.loc[~in_segment, c.COUNTRY] == "Germany").mean() < 0.02


def test_seasonal_boost_raises_the_category_inside_its_window(drifted: pd.DataFrame) -> None:
    views = drifted[drifted[c.EVENT_TYPE] == c.VIEW]
    inside = views[c.EVENT_TS].between(BOOST_START, BOOST_END, inclusive="left")
    assert _share(views[inside], "Christmas") > 1.5 * _share(views[~inside], "Christmas")
    # without the boost the same window is ordinary
    catalogue = item_catalogue(SyntheticConfig())[[c.ITEM_ID, CATEGORY]]
    plain = generate_events(SyntheticConfig()).merge(catalogue, on=c.ITEM_ID)
    plain = plain[plain[c.EVENT_TYPE] == c.VIEW]
    plain_inside = plain[c.EVENT_TS].between(BOOST_START, BOOST_END, inclusive="left")
    ratio = _share(plain[plain_inside], "Christmas") / _share(plain[~plain_inside], "Christmas")
    assert 0.8 < ratio < 1.2


# --- Settings -------------------------------------------------------------------------------

SETTINGS = {
    "n_users": 200,
    "n_items": 100,
    "start": "2024-01-01",
    "days": 60,
    "seed": 7,
    "countries": {"United Kingdom": 0.9, "France": 0.1},
    "price_range": [1.0, 20.0],
    "preference_shifts": [
        {"target_categories": ["Garden", "Toys"], "start": "2024-02-01", "strength": 0.5}
    ],
    "seasonal_boosts": [
        {"category": "Christmas", "start": "2024-01-10", "end": "2024-01-20", "factor": 2}
    ],
    "new_items": [{"category": "Toys", "launch": "2024-01-15", "n_items": 4}],
}


def test_from_dict_builds_the_nested_knobs_and_round_trips() -> None:
    config = SyntheticConfig.from_dict(SETTINGS)
    assert config == SyntheticConfig(
        n_users=200,
        n_items=100,
        start=date(2024, 1, 1),
        days=60,
        seed=7,
        countries=(("United Kingdom", 0.9), ("France", 0.1)),
        price_range=(1.0, 20.0),
        preference_shifts=(
            PreferenceShift(
                target_categories=("Garden", "Toys"), start=date(2024, 2, 1), strength=0.5
            ),
        ),
        seasonal_boosts=(
            SeasonalBoost(
                category="Christmas", start=date(2024, 1, 10), end=date(2024, 1, 20), factor=2.0
            ),
        ),
        new_items=(NewItems(category="Toys", launch=date(2024, 1, 15), n_items=4),),
    )
    assert SyntheticConfig.from_dict(config.to_dict()) == config
    assert SyntheticConfig.from_dict(DRIFTED.to_dict()) == DRIFTED
    assert SyntheticConfig.from_dict({}) == SyntheticConfig()
    assert yaml.safe_load(yaml.safe_dump(config.to_dict())) == config.to_dict()


def test_from_dict_takes_yaml_dates() -> None:
    raw = yaml.safe_load(
        "start: 2024-03-01\nnew_items:\n  - {category: Kitchen, launch: 2024-03-10, n_items: 2}\n"
    )
    config = SyntheticConfig.from_dict(raw)
    assert config.start == date(2024, 3, 1) and config.new_items[0].launch == date(2024, 3, 10)
    assert config.end == date(2024, 5, 30)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"n_users": 10, "colour": "red"}, "'colour'"),
        ({"preference_shifts": [{"start": "2024-02-01", "target_categories": ["Garden"],
                                 "strenght": 0.5}]}, "'strenght'"),
        ({"seasonal_boosts": [{"category": "Xmas", "start": "2024-01-01", "end": "2024-01-09"}]},
         "'Xmas'"),
        ({"new_items": [{"category": "Toys"}]}, "'launch'"),
        ({"start": "2024-13-01"}, "start"),
        ({"n_users": 0}, "n_users"),
        ({"price_range": [5, 1]}, "price_range"),
        ({"preference_shifts": [{"start": "2024-02-01", "target_categories": ["Garden"],
                                 "country": "Atlantis"}]}, "'Atlantis'"),
    ],
)  # fmt: skip
def test_from_dict_rejects_bad_settings_naming_them(settings: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SyntheticConfig.from_dict(settings)


def test_unknown_nested_key_names_its_knob() -> None:
    bad = {"new_items": [{"category": "Toys", "launch": "2024-02-01", "size": 3}]}
    with pytest.raises(ValueError, match=r"'size' in new_items\[0\]"):
        SyntheticConfig.from_dict(bad)


def test_more_categories_than_names_and_fewer_items_than_categories() -> None:
    config = SyntheticConfig(n_users=50, n_items=5, n_categories=14, days=14)
    names = category_names(config)
    assert len(names) == 14 and names[-1] == "Category 14" and len(set(names)) == 14
    frame = generate_events(config)
    assert len(frame) > 0
    assert set(frame[c.ITEM_ID]) <= set(item_catalogue(config)[c.ITEM_ID])
