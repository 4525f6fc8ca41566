"""Candidate generators: the shared contract, determinism and hand-checked orders."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.training.candidates import (
    OUTPUT_COLUMNS,
    CandidateGenerator,
    CoClustering,
    ImplicitALS,
    ImplicitBPR,
    ItemKNN,
    Popularity,
    RepeatPurchase,
    RepeatThenPopular,
)


def _purchases(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """Purchases from (ts, user, item, order) tuples."""
    frame = pd.DataFrame(rows, columns=[c.EVENT_TS, c.USER_ID, c.ITEM_ID, c.ORDER_ID])
    frame[c.EVENT_TS] = pd.to_datetime(frame[c.EVENT_TS]).astype("datetime64[ns]")
    frame[c.EVENT_TYPE] = c.PURCHASE
    return frame.astype({col: "string" for col in (c.USER_ID, c.ITEM_ID, c.ORDER_ID)})


def _random_train(seed: int = 0) -> pd.DataFrame:
    """12 customers, 10 items, 2-4 orders each of 1-3 items (a fixed random draw)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(12):
        for o in range(int(rng.integers(2, 5))):
            day = pd.Timestamp("2011-01-01") + pd.Timedelta(days=int(rng.integers(0, 60)))
            for item in rng.choice(10, size=int(rng.integers(1, 4)), replace=False):
                rows.append((str(day), f"u{u:02d}", f"i{item}", f"u{u}o{o}"))
    return _purchases(rows)


GENERATORS: dict[str, Callable[[], CandidateGenerator]] = {
    "popularity": Popularity,
    "popularity_decayed": lambda: Popularity(half_life_days=7),
    "repeat": RepeatPurchase,
    "repeat_then_popular": RepeatThenPopular,
    "als": lambda: ImplicitALS(factors=4, iterations=3, seed=3),
    "bpr": lambda: ImplicitBPR(factors=4, iterations=5, seed=3),
    "knn_bm25": lambda: ItemKNN("bm25", k=5),
    "knn_cosine": lambda: ItemKNN("cosine", k=5),
    "coclustering": lambda: CoClustering(n_clusters=2, seed=3),
}


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return _random_train()


@pytest.mark.parametrize("make", GENERATORS.values(), ids=GENERATORS.keys())
def test_generator_contract(make: Callable[[], CandidateGenerator], train) -> None:
    model = make().fit(train)
    assert model.fit_seconds >= 0 and math.isfinite(model.fit_seconds)
    users = ["u03", "u00", "u03", "u07"]  # a repeat is served once
    recs = model.recommend(users, n=5)
    assert tuple(recs.columns) == OUTPUT_COLUMNS
    assert recs[c.RANK].dtype == np.int64 and recs[c.SCORE].dtype == np.float64
    assert set(recs[c.USER_ID]) <= {"u00", "u03", "u07"}
    assert set(recs[c.ITEM_ID]) <= set(train[c.ITEM_ID])
    assert set(model.catalogue) == set(train[c.ITEM_ID])
    for _, group in recs.groupby(c.USER_ID):
        assert group[c.RANK].tolist() == list(range(1, len(group) + 1))
        assert group[c.ITEM_ID].is_unique
        assert group[c.SCORE].is_monotonic_decreasing
        assert len(group) <= 5
    # Same settings, same seed: the same lists.
    again = make().fit(train).recommend(users, n=5)
    pd.testing.assert_frame_equal(recs, again)


@pytest.mark.parametrize(
    "name", ["popularity", "repeat_then_popular", "als", "bpr", "knn_bm25", "coclustering"]
)
def test_full_lists_and_no_filtering_of_bought_items(name: str, train) -> None:
    model = GENERATORS[name]().fit(train)
    recs = model.recommend(["u00"], n=10)  # the whole catalogue of 10 items
    if name != "knn_bm25":  # kNN lists only items similar to something bought
        assert len(recs) == 10
    bought = set(train.loc[train[c.USER_ID] == "u00", c.ITEM_ID])
    assert bought <= set(recs[c.ITEM_ID])  # items bought before are not filtered out


def test_unknown_users(train) -> None:
    popular = Popularity().fit(train).recommend(["nobody"], n=3)
    assert popular[c.USER_ID].tolist() == ["nobody"] * 3
    assert RepeatPurchase().fit(train).recommend(["nobody"], n=3).empty
    assert ImplicitALS(factors=4, iterations=1).fit(train).recommend(["nobody"], n=3).empty
    assert len(CoClustering(n_clusters=2).fit(train).recommend(["nobody"], n=3)) == 3


def test_bad_arguments(train) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        Popularity().recommend(["u00"], n=3)
    with pytest.raises(ValueError, match="n must be"):
        Popularity().fit(train).recommend(["u00"], n=0)
    with pytest.raises(ValueError, match="similarity"):
        ItemKNN("jaccard")
    with pytest.raises(ValueError, match="half_life_days"):
        Popularity(half_life_days=0)


# u1: A in two orders, B once (1 Oct), C once (10 Oct, more recent than B).
# Others: D in 3 orders, E in 2, so overall: D 3, A 2, E 2, B 1, C 1 (ties by item id).
HAND = [
    ("2011-10-01", "u1", "A", "o1"),
    ("2011-10-01", "u1", "B", "o1"),
    ("2011-10-05", "u1", "A", "o2"),
    ("2011-10-10", "u1", "C", "o3"),
    ("2011-10-02", "u2", "D", "o4"),
    ("2011-10-02", "u2", "E", "o4"),
    ("2011-10-03", "u3", "D", "o5"),
    ("2011-10-03", "u3", "E", "o5"),
    ("2011-10-04", "u4", "D", "o6"),
    ("2011-10-04", "u4", "D", "o6"),  # a repeated line in one order counts once
]


def _lists(recs: pd.DataFrame) -> dict[str, list[str]]:
    return {u: g.sort_values(c.RANK)[c.ITEM_ID].tolist() for u, g in recs.groupby(c.USER_ID)}


def test_repeat_then_popular_by_hand() -> None:
    model = RepeatThenPopular().fit(_purchases(HAND))
    lists = _lists(model.recommend(["u1", "u2", "u9"], n=5))
    assert lists["u1"] == ["A", "C", "B", "D", "E"]  # repeats (C more recent), then popular
    assert lists["u2"] == ["D", "E", "A", "B", "C"]  # D, E tie on orders and time: by id
    assert lists["u9"] == ["D", "A", "E", "B", "C"]  # unknown: popular only
    by_id = RepeatThenPopular(recency_ties=False).fit(_purchases(HAND))
    assert _lists(by_id.recommend(["u1"], n=4))["u1"] == ["A", "B", "C", "D"]
    assert _lists(RepeatPurchase().fit(_purchases(HAND)).recommend(["u1"], n=5)) == {
        "u1": ["A", "C", "B"]
    }


def test_popularity_decay_by_hand() -> None:
    # X: one order on the last training day (weight 1). Y: three orders 60 days earlier,
    # 0.5 ** (60 / 30) = 0.25 each, 0.75 in all: plain counts prefer Y, decayed ones X.
    rows = [("2011-10-31", "a", "X", "o1")] + [
        ("2011-09-01", f"b{i}", "Y", f"p{i}") for i in range(3)
    ]
    plain = Popularity().fit(_purchases(rows)).recommend(["z"], n=2)
    assert plain[c.ITEM_ID].tolist() == ["Y", "X"]
    assert plain[c.SCORE].tolist() == [3.0, 1.0]
    decayed = Popularity(half_life_days=30).fit(_purchases(rows)).recommend(["z"], n=2)
    assert decayed[c.ITEM_ID].tolist() == ["X", "Y"]
    assert decayed[c.SCORE].to_numpy() == pytest.approx([1.0, 0.75])


def test_knn_scores_follow_the_users_items() -> None:
    # Items P and Q are always bought together, R alone: a buyer of P gets Q before R.
    rows = [(f"2011-10-0{i}", f"u{i}", item, f"o{i}") for i in range(1, 4) for item in "PQ"]
    rows += [("2011-10-05", "u5", "R", "o5"), ("2011-10-06", "u6", "P", "o6")]
    for similarity in ("bm25", "cosine"):
        recs = ItemKNN(similarity, k=3).fit(_purchases(rows)).recommend(["u6"], n=3)
        assert recs[c.ITEM_ID].tolist()[:2] in (["P", "Q"], ["Q", "P"])
        assert "R" not in set(recs[c.ITEM_ID])
