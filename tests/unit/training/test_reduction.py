"""Data reduction for retraining: window, decayed order sample, inactive customers, duplicates,
negative down-sampling, feature selection and the incremental ``reduce``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.training.ranker import (
    LABEL,
    QID,
    RankerConfig,
    feature_columns,
    fit_ranker,
    make_generators,
    training_set,
)
from recsys_assets.training.reduction import (
    ReductionConfig,
    cutoff_rows_from,
    downsample_negatives,
    fit_reduced_ranker,
    keep_probability,
    new_cutoffs,
    reduce,
    reduce_history,
    reduced_training_frame,
    select_features,
)
from tests.unit.training.test_ranker import _synthetic

SPLIT = pd.Timestamp("2011-11-01")
CONFIG = ReductionConfig(
    window_days=30, half_life_days=30.0, min_rate=0.0, inactive_days=60, min_orders=2
)


def _events(rows: list[tuple[str, str, str, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[c.USER_ID, c.ITEM_ID, c.EVENT_TS, c.ORDER_ID, c.QUANTITY])
    frame[c.EVENT_TS] = pd.to_datetime(frame[c.EVENT_TS])
    frame[c.EVENT_TYPE] = c.PURCHASE
    return frame


def _history(n_users: int = 6, seed: int = 0) -> pd.DataFrame:
    """Weekly 3-item orders over ~300 days for a few regular customers."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for week in range(43):
            day = SPLIT - pd.Timedelta(days=300 - 7 * week + u % 3)
            items = rng.choice(20, size=3, replace=False)
            for i in items:
                rows.append(
                    (f"u{u}", f"i{i}", str(day + pd.Timedelta(hours=10)), f"o{u}-{week}", 1)
                )
    return _events(rows)


def test_recent_window_kept_in_full_and_old_orders_sampled_whole():
    events = _history()
    reduced, report = reduce_history(events, SPLIT, CONFIG)
    window_start = SPLIT - pd.Timedelta(days=CONFIG.window_days)
    recent = events.loc[(events[c.EVENT_TS] >= window_start) & (events[c.EVENT_TS] < SPLIT)]
    assert len(reduced.loc[reduced[c.EVENT_TS] >= window_start]) == len(recent)
    old = reduced.loc[reduced[c.EVENT_TS] < window_start]
    assert 0 < len(old) < (events[c.EVENT_TS] < window_start).sum()
    # whole baskets: every kept order has all its 3 lines
    assert (reduced.groupby(c.ORDER_ID).size() == 3).all()
    # deterministic with a seed, different with another seed
    again, _ = reduce_history(events, SPLIT, CONFIG)
    pd.testing.assert_frame_equal(reduced, again)
    other, _ = reduce_history(events, SPLIT, ReductionConfig(**{**CONFIG.__dict__, "seed": 7}))
    assert set(other[c.ORDER_ID]) != set(reduced[c.ORDER_ID])
    # report counts
    assert report["input"]["rows"] == len(events)
    assert report["sample"] == {
        "rows": len(reduced),
        "customers": reduced[c.USER_ID].nunique(),
        "items": reduced[c.ITEM_ID].nunique(),
    }
    assert list(report) == ["input", "dedupe", "inactive_customers", "sample"]


def test_keep_probability_decays_and_floors():
    conf = ReductionConfig(window_days=10, half_life_days=5.0, min_rate=0.2)
    p = keep_probability(np.array([0.0, 10.0, 15.0, 20.0, 100.0]), conf)
    np.testing.assert_allclose(p, [1.0, 1.0, 0.5, 0.25, 0.2])


def test_inactive_customers_and_duplicates_dropped():
    events = _events(
        [
            ("old1", "a", "2011-06-01 10:00", "x1", 1),  # one order, long ago: dropped
            ("old2", "a", "2011-06-01 10:00", "y1", 1),  # two orders long ago: kept
            ("old2", "b", "2011-06-08 10:00", "y2", 1),
            ("new", "a", "2011-10-20 09:00", "z1", 2),  # same customer, item, day: merged
            ("new", "a", "2011-10-20 15:00", "z2", 3),
            ("new", "b", "2011-10-20 15:00", "z2", 1),
            ("new", "b", "2011-11-02 15:00", "z3", 1),  # after the split: not kept
        ]
    )
    conf = ReductionConfig(window_days=400, inactive_days=60, min_orders=2)
    reduced, report = reduce_history(events, SPLIT, conf)
    assert sorted(reduced[c.USER_ID].unique()) == ["new", "old2"]
    merged = reduced.loc[(reduced[c.USER_ID] == "new") & (reduced[c.ITEM_ID] == "a")]
    assert len(merged) == 1 and merged[c.QUANTITY].iloc[0] == 5
    assert report["input"] == {"rows": 6, "customers": 3, "items": 2}
    assert report["dedupe"] == {"rows": 5, "customers": 3, "items": 2}
    assert report["inactive_customers"] == {"rows": 4, "customers": 2, "items": 2}
    assert report["sample"]["rows"] == 4


def test_incremental_reduce_equals_reducing_the_union():
    events = _history()
    first_split = SPLIT - pd.Timedelta(days=40)
    before = events.loc[events[c.EVENT_TS] < first_split]
    after = events.loc[events[c.EVENT_TS] >= first_split]
    previous = reduce(None, before, first_split, CONFIG)
    incremental = reduce(previous, after, SPLIT, CONFIG)
    union, _ = reduce_history(events, SPLIT, CONFIG)
    key = [c.EVENT_TS, c.USER_ID, c.ITEM_ID]
    pd.testing.assert_frame_equal(
        incremental.events.sort_values(key).reset_index(drop=True)[union.columns],
        union.sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )
    assert incremental.customer_stats["n_orders"].sum() == events[c.ORDER_ID].nunique()


def test_incremental_difference_for_a_returning_inactive_customer():
    events = _events(
        [
            ("back", "a", "2011-03-01 10:00", "b1", 1),  # inactive at the first split
            ("reg", "a", "2011-09-01 10:00", "r1", 1),
            ("reg", "b", "2011-09-10 10:00", "r2", 1),
            ("back", "b", "2011-10-20 10:00", "b2", 1),  # buys again after it
        ]
    )
    conf = ReductionConfig(window_days=400, inactive_days=60, min_orders=2)
    first_split = pd.Timestamp("2011-10-01")
    previous = reduce(None, events.iloc[:3], first_split, conf)
    assert "back" not in set(previous.events[c.USER_ID])
    incremental = reduce(previous, events.iloc[3:], SPLIT, conf)
    union, _ = reduce_history(events, SPLIT, conf)
    # the union keeps his March row; incrementally only the new one is left
    assert len(union.loc[union[c.USER_ID] == "back"]) == 2
    assert list(incremental.events.loc[incremental.events[c.USER_ID] == "back", c.ORDER_ID]) == [
        "b2"
    ]


def test_downsample_keeps_positives_and_top_negatives():
    frame = pd.DataFrame(
        {
            QID: [0] * 5 + [1] * 2,
            c.ITEM_ID: ["a", "b", "c", "d", "e", "a", "b"],
            LABEL: [0, 1, 0, 0, 0, 1, 0],
            "n_sources": [1, 1, 3, 2, 2, 1, 1],
            "g_rank": [1, 9, 5, 2, 1, 1, 2],
        }
    )
    out = downsample_negatives(frame, 2, ["g"], strategy="top")
    assert list(zip(out[QID], out[c.ITEM_ID], strict=True)) == [
        (0, "b"),
        (0, "c"),
        (0, "e"),
        (1, "a"),
        (1, "b"),
    ]
    assert downsample_negatives(frame, None, ["g"]) is frame
    sampled = downsample_negatives(frame, 2, ["g"], seed=1)
    assert sampled.equals(downsample_negatives(frame, 2, ["g"], seed=1))
    assert (sampled.groupby(QID)[LABEL].sum() == [1, 1]).all() and len(sampled) == 5


def test_select_features_drops_constant_correlated_and_unimportant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    frame = pd.DataFrame(
        {
            "const": 1.0,
            "x": x,
            "x_copy": 2 * x + rng.normal(scale=1e-3, size=200),
            "y": rng.normal(size=200),
            "z": rng.normal(size=200),
            "w": rng.normal(size=200),
        }
    )
    features = list(frame.columns)
    importance = {"x": 1.0, "x_copy": 5.0, "y": 3.0, "z": 2.0, "w": 0.1}
    conf = ReductionConfig(top_features=2, min_features=2)
    kept, report = select_features(frame, features, importance, conf)
    assert report["constant"] == ["const"]
    assert list(report["correlated"]) == ["x"] and report["correlated"]["x"][0] == "x_copy"
    assert kept == ["x_copy", "y"] and report["kept"] == kept
    assert report["low_importance"] == ["z", "w"]
    # without importance: the later of a pair goes, no importance cut
    kept, report = select_features(frame, features, None, conf)
    assert kept == ["x", "y", "z", "w"] and list(report["correlated"]) == ["x_copy"]


# --- Retraining recipe: reduced training frame, previous generators, warm start ----------------

START = pd.Timestamp("2011-01-01")
RANK_SPLIT = START + pd.Timedelta(days=100)
DAY72, DAY86 = START + pd.Timedelta(days=72), START + pd.Timedelta(days=86)
RANKER = RankerConfig(
    candidates=(("repeat", 10), ("popularity", 10), ("item_knn", 10), ("als", 10)),
    als_factors=8,
    knn_k=20,
    cutoffs=(str(DAY72.date()), str(DAY86.date())),
    label_days=14,
    xgb_params={"objective": "rank:ndcg", "eta": 0.3, "max_depth": 3, "tree_method": "hist"},
    num_boost_round=20,
)


@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    """Weekly orders of 30 customers: 3 favourite items (70% each) plus 2 random ones."""
    return _synthetic()


def test_new_cutoffs_are_those_at_or_after_the_previous_split():
    cutoffs = ("2011-10-01", "2011-09-01", "2011-08-01")
    assert new_cutoffs(cutoffs, "2011-10-01") == ["2011-10-01"]
    assert new_cutoffs(cutoffs, pd.Timestamp("2011-09-01", tz="UTC")) == list(cutoffs[:2])
    assert new_cutoffs(cutoffs, "2011-10-02") == []


def test_reduced_training_frame_equals_downsampling_the_full_training_set(shop):
    names = RANKER.generator_names()
    full, _ = training_set(shop, RANK_SPLIT, RANKER)
    expected = downsample_negatives(full, 3, names, seed=5)
    report: dict = {}
    got, tables = reduced_training_frame(
        shop, RANK_SPLIT, RANKER, max_negatives=3, seed=5, report=report
    )
    pd.testing.assert_frame_equal(got[expected.columns], expected)
    assert report == {"candidate_rows": len(full), "training_rows": len(expected)}
    assert set(tables) == {"customer_profile", "item_popularity", "customer_item"}
    # every query keeps its positives and at most 3 negatives
    negatives = (got[LABEL] == 0).groupby(got[QID]).sum()
    assert negatives.max() <= 3
    assert got[LABEL].sum() == full[LABEL].sum()


def test_previous_generators_give_the_same_cutoff_rows(shop):
    """The serving generators of a model trained at day 86 are the generators of the day-86
    cutoff: its rows built from them equal a fresh build."""
    cache: dict = {}
    training_set(shop, RANK_SPLIT, RANKER, cutoff_rows=cache)
    purchases = shop.loc[shop[c.EVENT_TS] < DAY86].astype({c.USER_ID: str, c.ITEM_ID: str})
    gens = {n: g.fit(purchases) for n, g in make_generators(RANKER).items()}
    rows = cutoff_rows_from(gens, shop, str(DAY86.date()), RANK_SPLIT, RANKER)
    pd.testing.assert_frame_equal(rows, cache[DAY86])
    # and reduced_training_frame uses them for that cutoff
    one = dataclasses.replace(RANKER, cutoffs=(str(DAY86.date()),))
    got, _ = reduced_training_frame(
        shop, RANK_SPLIT, one, max_negatives=None, generators={DAY86: gens}
    )
    fresh, _ = training_set(shop, RANK_SPLIT, one)
    pd.testing.assert_frame_equal(got[fresh.columns], fresh)


def test_warm_start_adds_rounds_on_the_new_cutoff_only(shop):
    previous_config = dataclasses.replace(
        RANKER, cutoffs=(str((START + pd.Timedelta(days=58)).date()), str(DAY72.date()))
    )
    previous = fit_ranker(shop, DAY86, previous_config)
    reduction = ReductionConfig(max_negatives=5, warm_rounds=7, warm_eta=0.1)
    ranker = fit_reduced_ranker(shop, RANK_SPLIT, RANKER, reduction=reduction, previous=previous)
    assert ranker.train_stats["warm_start"] is True
    assert ranker.train_stats["cutoffs"] == [str(DAY86.date())]
    # the previous booster's rounds (its own early stopping chose them) plus the warm rounds
    rounds = previous.train_stats["rounds"]
    assert ranker.train_stats["trees"] == rounds + 7
    assert previous.booster.num_boosted_rounds() == rounds  # not modified
    assert ranker.features == previous.features
    assert ranker.split_ts == RANK_SPLIT
    recs = ranker.recommend(sorted(shop[c.USER_ID].unique()), 5)
    assert len(recs) and recs.groupby(c.USER_ID).size().max() <= 5

    # without a previous model: from scratch on every cutoff, the chosen features only
    chosen = feature_columns(RANKER.generator_names())[:10]
    cold = ReductionConfig(max_negatives=5, num_boost_round=4, eta=0.2)
    scratch = fit_reduced_ranker(shop, RANK_SPLIT, RANKER, reduction=cold, features=chosen)
    assert scratch.train_stats["warm_start"] is False
    assert scratch.train_stats["cutoffs"] == [str(DAY72.date()), str(DAY86.date())]
    assert scratch.train_stats["trees"] == 4 and scratch.features == chosen


def test_default_recipe():
    conf = ReductionConfig()
    assert conf.history is False and conf.max_negatives == 30 and conf.negatives == "random"
    assert conf.warm_start and conf.warm_rounds == 100 and conf.warm_eta == pytest.approx(0.05)
    assert conf.num_boost_round == 100 and conf.eta == pytest.approx(0.15)
