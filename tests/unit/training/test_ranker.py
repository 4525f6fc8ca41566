"""The XGBoost ranker: learnability, qid order, no leakage, determinism, Feast = pandas."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.evaluation.metrics import rank_by_score
from recsys_assets.evaluation.protocol import evaluate, temporal_split
from recsys_assets.features.store import FeatureRepo, write_table
from recsys_assets.features.tables import session_context_features
from recsys_assets.training.ranker import (
    LABEL,
    QID,
    RAW_FEATURES,
    RankerConfig,
    feature_tables,
    fit_ranker,
    training_frame,
    training_set,
    via_feast,
    via_pandas,
)
from tests.conftest import copy_feature_repo

START = pd.Timestamp("2011-01-01")
SPLIT = START + pd.Timedelta(days=100)
CONFIG = RankerConfig(
    candidates=(("repeat", 10), ("popularity", 10), ("item_knn", 10), ("als", 10)),
    als_factors=8,
    knn_k=20,
    cutoffs=(
        str((START + pd.Timedelta(days=72)).date()),
        str((START + pd.Timedelta(days=86)).date()),
    ),
    label_days=14,
    xgb_params={"objective": "rank:ndcg", "eta": 0.3, "max_depth": 3, "tree_method": "hist"},
    num_boost_round=20,
)


def _events(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=[c.USER_ID, c.ITEM_ID, c.EVENT_TS, c.ORDER_ID, c.QUANTITY, c.UNIT_PRICE]
    )
    frame[c.EVENT_TYPE] = c.PURCHASE
    frame[c.COUNTRY] = "United Kingdom"
    frame[c.DEVICE] = "web"
    return frame


def _synthetic(n_users: int = 30, n_items: int = 40, days: int = 120, seed: int = 0):
    """Weekly orders: each customer re-buys 3 favourite items (70% each) plus 2 random ones."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        favourites = rng.choice(n_items, 3, replace=False)
        for day in range(int(rng.integers(0, 7)), days, 7):
            items = set(favourites[rng.random(3) < 0.7]) | set(rng.choice(n_items, 2).tolist())
            ts = START + pd.Timedelta(days=day, hours=10)
            for i in sorted(items):
                rows.append((f"U{u:02d}", f"I{i:02d}", ts, f"O{u}-{day}", 1, 2.0))
    return _events(rows)


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return _synthetic()


@pytest.fixture(scope="module")
def ranker(events):
    return fit_ranker(events, SPLIT, CONFIG)


def test_ranker_beats_random_ordering_of_its_candidates(events, ranker):
    split = temporal_split(events, SPLIT)
    recs = ranker.recommend(split.users, 10)
    assert list(recs.columns) == [c.USER_ID, c.ITEM_ID, c.SCORE, c.RANK]
    assert recs.groupby(c.USER_ID).size().max() <= 10
    cands = ranker.candidates(split.users)[[c.USER_ID, c.ITEM_ID]]
    cands[c.SCORE] = np.random.default_rng(1).random(len(cands))
    random = rank_by_score(cands, col_score=c.SCORE)
    got, chance = evaluate(recs, split)["ndcg"], evaluate(random, split)["ndcg"]
    assert got > chance + 0.15, (got, chance)
    assert ranker.fit_seconds > 0
    importance = ranker.feature_importance()
    assert set(importance) == set(ranker.features) and max(importance.values()) > 0


def test_training_rows_are_sorted_by_query_and_labelled(events):
    frame, _ = training_set(events, SPLIT, CONFIG)
    qid = frame[QID].to_numpy()
    assert (np.diff(qid) >= 0).all()  # sorted, so every query is contiguous
    per_query = frame.groupby(QID)[[c.USER_ID, c.FEATURE_TS]].nunique()
    assert (per_query == 1).all().all()  # one customer at one cutoff per query
    assert set(frame[LABEL].unique()) <= {0.0, 1.0}
    assert (frame.groupby(QID)[LABEL].max() == 1).all()
    assert frame[c.FEATURE_TS].nunique() == 2


def test_no_feature_sees_the_cutoff_day_or_later():
    """Leak trap: events on the cutoff day and later change labels, never features."""
    cutoff = pd.Timestamp("2011-02-01")
    history = [
        ("A", "X", pd.Timestamp("2011-01-10 09:00"), "o1", 1, 1.0),
        ("A", "Y", pd.Timestamp("2011-01-20 09:00"), "o2", 2, 1.0),
        ("B", "X", pd.Timestamp("2011-01-25 09:00"), "o3", 1, 1.0),
        ("B", "Y", pd.Timestamp("2011-01-31 23:59"), "o4", 1, 1.0),  # the day before: visible
        ("A", "X", pd.Timestamp("2011-02-03 09:00"), "o5", 1, 1.0),
        ("B", "X", pd.Timestamp("2011-02-04 09:00"), "o6", 1, 1.0),
    ]
    trap = [
        ("A", "Y", pd.Timestamp("2011-02-01 00:00"), "t1", 5, 9.0),  # on the cutoff instant
        ("A", "Z", pd.Timestamp("2011-02-01 13:00"), "t2", 5, 9.0),  # later on the cutoff day
        ("B", "Y", pd.Timestamp("2011-02-02 08:00"), "t3", 5, 9.0),
    ]
    split = pd.Timestamp("2011-03-01")
    config = dataclasses.replace(
        CONFIG,
        candidates=(("repeat", 5), ("popularity", 5)),
        cutoffs=(str(cutoff.date()),),
        label_days=28,
    )
    clean, _ = training_set(_events(history), split, config)
    leaky, tables = training_set(_events(history + trap), split, config)
    assert clean[LABEL].sum() < leaky[LABEL].sum()  # the trap is in the labels ...
    keys = [c.USER_ID, c.ITEM_ID]
    assert leaky.loc[leaky[c.ITEM_ID] == "Z", "repeat_rank"].isna().all()
    columns = [col for col in clean.columns if col not in (LABEL, QID)]
    joined = clean.merge(leaky, on=keys, suffixes=("", "_leaky"))
    assert len(joined) == len(clean)
    for col in columns:
        if col in keys:
            continue
        a, b = joined[col], joined[f"{col}_leaky"]
        same = (a.astype(object) == b.astype(object)) | (a.isna() & b.isna())
        assert same.all(), col  # ... and in no feature
    # the as-of join itself: A-Y bought the day before only once (2 units), B-Y not yet closed
    rows = pd.DataFrame({c.USER_ID: ["A", "B", "A"], c.ITEM_ID: ["Y", "Y", "Z"]})
    rows[c.FEATURE_TS] = pd.Timestamp(cutoff, tz="UTC")
    got = training_frame(rows, tables=tables)
    assert got[c.TIMES_BOUGHT].tolist()[0] == 1 and got[c.UNITS_BOUGHT].tolist()[0] == 2
    assert got[c.TIMES_BOUGHT].tolist()[1] == 1  # 2011-01-31 closed at the cutoff: visible
    assert np.isnan(got[c.TIMES_BOUGHT].tolist()[2])
    assert got[c.ORDERS_TOTAL].tolist() == [2, 2, 2]


def test_fit_is_deterministic(events, ranker):
    again = fit_ranker(events, SPLIT, CONFIG)
    users = sorted(events[c.USER_ID].unique())
    pd.testing.assert_frame_equal(ranker.recommend(users, 10), again.recommend(users, 10))


def test_feast_and_pandas_as_of_joins_agree(tmp_path):
    events = _synthetic(n_users=6, n_items=8, days=40, seed=3)
    tables = feature_tables(events)
    repo = FeatureRepo(copy_feature_repo(tmp_path / "feature_repo"))
    for name, table in tables.items():
        write_table(table, repo.table_path(name))
    write_table(session_context_features(events), repo.table_path("session_context"))
    repo.apply()
    store = repo.store()
    users = [*sorted(events[c.USER_ID].unique())[:4], "nobody"]
    items = [*sorted(events[c.ITEM_ID].unique())[:4], "nothing"]
    stamps = [
        START,  # before anything closed
        START + pd.Timedelta(days=10),  # exactly on a stamp (midnight)
        START + pd.Timedelta(days=20, hours=5),
        START + pd.Timedelta(days=40 + 9),  # item snapshots older than their 7-day TTL
    ]
    entity = pd.MultiIndex.from_product([users, items, stamps]).to_frame(index=False)
    entity.columns = [c.USER_ID, c.ITEM_ID, c.FEATURE_TS]
    entity[c.FEATURE_TS] = pd.to_datetime(entity[c.FEATURE_TS]).dt.tz_localize("UTC")
    feast = via_feast(store, entity)
    local = via_pandas(tables, entity)
    assert len(feast) == len(local) == len(entity)
    for name in [c.USER_ID, c.ITEM_ID, *RAW_FEATURES]:
        a, b = feast[name], local[name]
        if name in (c.USER_ID, c.ITEM_ID) or a.dtype == object:
            same = (a.astype(object) == b.astype(object)) | (a.isna() & b.isna())
        else:
            same = pd.Series(np.isclose(a, b, equal_nan=True))
        assert same.all(), name
    assert local[c.ORDERS_TOTAL].notna().any() and local[c.SALES_7D].notna().any()
    late = local[c.FEATURE_TS] == stamps[-1].tz_localize("UTC")
    assert late.sum() == len(users) * len(items)
    assert local.loc[late, c.SALES_7D].isna().all()  # TTL applied
    assert local.loc[late, c.ORDERS_TOTAL].notna().any()  # 3650-day TTL: still known
    same_frame = training_frame(entity, store=store)
    pd.testing.assert_frame_equal(
        same_frame[list(RAW_FEATURES)], training_frame(entity, tables=tables)[list(RAW_FEATURES)]
    )


def test_retraining_reuses_closed_cutoffs_and_gets_the_same_training_set(events):
    """Dynamic data management: the candidates and labels of cutoffs whose label window had
    closed at the previous training are reused as they are; the result equals a fresh build."""
    from dataclasses import replace

    from recsys_assets.training.ranker import reusable_cutoffs

    previous_split = SPLIT - pd.Timedelta(days=14)
    earlier = (START + pd.Timedelta(days=58), START + pd.Timedelta(days=72))
    previous = replace(CONFIG, cutoffs=tuple(str(t.date()) for t in earlier))
    cache: dict = {}
    training_set(events, previous_split, previous, cutoff_rows=cache)
    reused = reusable_cutoffs(cache, previous_split, CONFIG.label_days)
    assert set(reused) == set(earlier)  # day 72 + 14 = day 86 = the previous split: closed

    cutoffs = (*earlier, START + pd.Timedelta(days=86))
    now = replace(CONFIG, cutoffs=tuple(str(t.date()) for t in cutoffs))
    incremental, _ = training_set(events, SPLIT, now, cutoff_rows=dict(reused))
    fresh, _ = training_set(events, SPLIT, now)
    pd.testing.assert_frame_equal(incremental, fresh)

    open_window = reusable_cutoffs(cache, previous_split - pd.Timedelta(days=1), 14)
    assert set(open_window) == {earlier[0]}  # day 72's window was still open a day earlier
