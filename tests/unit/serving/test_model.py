"""The online ranking path: same scores as the offline ranker, fallbacks, business filters."""

from __future__ import annotations

import inspect
import sqlite3

import pandas as pd
import pytest
import redis.exceptions
from google.protobuf.message import DecodeError

from recsys_assets.core import constants as c
from recsys_assets.evaluation.protocol import evaluate, temporal_split
from recsys_assets.serving.model import (
    FALLBACK_FEATURES_UNAVAILABLE,
    FALLBACK_UNKNOWN_CUSTOMER,
    FEATURE_STORE_ERRORS,
    CandidateIndex,
    FeastOnlineReader,
    FeatureReader,
    TableReader,
    build_serving_model,
    build_simple_serving_model,
    evaluate_on_split,
    recommend,
)
from recsys_assets.training.baselines import make_simple_model
from recsys_assets.training.ranker import fit_ranker
from tests.unit.training.test_ranker import CONFIG, SPLIT, _synthetic


@pytest.fixture(scope="module")
def fitted():
    events = _synthetic(n_users=20, n_items=30, days=110, seed=5)
    events[c.DESCRIPTION] = "name of " + events[c.ITEM_ID]
    ranker = fit_ranker(events, SPLIT, CONFIG)
    train = events.loc[events[c.EVENT_TS] < SPLIT]
    model = build_serving_model(ranker, train, version="v-test", fallback_n=5)
    return ranker, model, train


class BrokenReader:
    """A reader whose online store is down: ``error`` is what the store raised."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error if error is not None else ConnectionError("online store down")

    def read(self, customer_id, items, as_of, bought=None):
        raise self.error


class BuggyReader:
    """A reader with a bug of its own (not the store's): the error must not be hidden."""

    def read(self, customer_id, items, as_of, bought=None):
        raise TypeError("read() got an unexpected keyword argument")


def test_candidate_index_slices_each_customer():
    frame = pd.DataFrame(
        {
            c.USER_ID: ["b", "a", "b", "a", "a"],
            c.ITEM_ID: ["x", "y", "y", "x", "z"],
            "g_score": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    index = CandidateIndex.from_frame(frame)
    items, scores = index.lookup("a")
    assert items.tolist() == ["x", "y", "z"]
    assert scores[:, 0].tolist() == [4.0, 2.0, 5.0]
    assert index.lookup("b")[0].tolist() == ["x", "y"]
    assert len(index.lookup("nobody")[0]) == 0
    assert "a" in index and "nobody" not in index and len(index) == 2


def test_serving_scores_equal_the_offline_rankers(fitted):
    ranker, model, train = fitted
    reader = TableReader(ranker.tables)
    customers = sorted(train[c.USER_ID].unique())[:5]
    offline = ranker.score(customers, as_of=SPLIT)
    for customer in customers:
        got = recommend(model, reader, customer, k=50, as_of=SPLIT)
        assert not got.fallback
        expected = offline.loc[offline[c.USER_ID] == customer].set_index(c.ITEM_ID)[c.SCORE]
        assert len(got.items) == len(expected)
        assert got.scores == pytest.approx(expected.loc[got.items].tolist(), rel=1e-6)
        assert got.scores == sorted(got.scores, reverse=True)
        assert got.names == [f"name of {i}" for i in got.items]


def test_unknown_customer_gets_the_popular_list_flagged(fitted):
    _, model, _ = fitted
    got = recommend(model, TableReader({}), "never-seen", k=3)
    assert got.fallback and got.fallback_reason == FALLBACK_UNKNOWN_CUSTOMER
    assert got.items == [i for i, _ in model.popular[:3]]
    assert got.model_version == "v-test"


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("no such table: recsys_customer_profile"),
        sqlite3.DatabaseError("file is not a database"),
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        ConnectionRefusedError(111, "Connection refused"),
        DecodeError("Error parsing message"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_feature_store_failure_serves_the_fallback(fitted, error):
    _, model, train = fitted
    customer = train[c.USER_ID].iloc[0]
    assert isinstance(error, FEATURE_STORE_ERRORS)
    got = recommend(model, BrokenReader(error), customer, k=4)
    assert got.fallback and got.fallback_reason == FALLBACK_FEATURES_UNAVAILABLE
    assert len(got.items) == 4


def test_a_bug_in_the_feature_read_raises_instead_of_serving_the_fallback(fitted):
    _, model, train = fitted
    customer = train[c.USER_ID].iloc[0]
    with pytest.raises(TypeError, match="unexpected keyword"):
        recommend(model, BuggyReader(), customer, k=4)


class OldSignatureReader:
    def read(self, customer_id, items, as_of):  # the serving path passes `bought` too
        return {}


def test_a_reader_with_the_wrong_signature_fails_loudly(fitted):
    _, model, train = fitted
    with pytest.raises(TypeError, match="positional argument"):
        recommend(model, OldSignatureReader(), train[c.USER_ID].iloc[0], k=4)


@pytest.mark.parametrize("reader", [BrokenReader, BuggyReader, TableReader, FeastOnlineReader])
def test_readers_take_the_arguments_the_serving_path_passes(reader):
    expected = list(inspect.signature(FeatureReader.read).parameters)
    assert list(inspect.signature(reader.read).parameters) == expected


def test_exclusions_and_recent_purchases_are_filtered(fitted):
    ranker, model, train = fitted
    reader = TableReader(ranker.tables)
    customer = train[c.USER_ID].iloc[0]
    first = recommend(model, reader, customer, k=5, as_of=SPLIT)
    again = recommend(model, reader, customer, k=5, as_of=SPLIT, exclude=first.items[:2])
    assert not set(first.items[:2]) & set(again.items)
    assert again.items[:3] == first.items[2:5]
    fresh = recommend(model, reader, customer, k=50, as_of=SPLIT, exclude_bought_within_days=14)
    bought = train.loc[
        (train[c.USER_ID] == customer) & (train[c.EVENT_TS] >= SPLIT - pd.Timedelta(days=14))
    ]
    assert not set(bought[c.ITEM_ID]) & set(fresh.items)
    assert fresh.items  # older favourites and new items remain


def test_k_larger_than_the_candidates_returns_them_all(fitted):
    ranker, model, train = fitted
    customer = train[c.USER_ID].iloc[0]
    n = len(model.candidates.lookup(customer)[0])
    got = recommend(model, TableReader(ranker.tables), customer, k=n + 10, as_of=SPLIT)
    assert len(got.items) == n == len(set(got.items))


def test_items_that_are_not_products_are_never_served(fitted):
    ranker, model, train = fitted
    customer = train[c.USER_ID].iloc[0]
    blocked = recommend(model, TableReader(ranker.tables), customer, k=3, as_of=SPLIT).items[0]
    narrowed = build_serving_model(
        ranker, train, version="v-narrow", product_pattern=rf"^(?!{blocked}$)", fallback_n=50
    )
    got = recommend(narrowed, TableReader(ranker.tables), customer, k=50, as_of=SPLIT)
    assert got.items and blocked not in got.items
    assert blocked not in [i for i, _ in narrowed.popular]
    cold = recommend(narrowed, TableReader({}), "never-seen", k=50)
    assert blocked not in cold.items


def test_re_evaluation_on_a_split_reproduces_the_rankers_own_figures(fitted):
    ranker, model, _ = fitted
    events = _synthetic(n_users=20, n_items=30, days=110, seed=5)
    split = temporal_split(events, SPLIT)
    own = evaluate(ranker.recommend(list(split.users), n=c.CANDIDATES_N), split)
    again = evaluate_on_split(model, split)
    assert again["n_users"] == own["n_users"] > 0
    assert again["ndcg"] == pytest.approx(own["ndcg"])
    assert again["recall"] == pytest.approx(own["recall"])


def test_a_simple_model_is_served_in_its_own_order(fitted):
    ranker, _, train = fitted
    simple = build_simple_serving_model(
        "repeat_then_popular", train, version="v-simple", fallback_n=5
    )
    assert simple.booster is None and simple.model_kind == "repeat_then_popular"
    own = make_simple_model("repeat_then_popular").fit(train)
    customer = sorted(simple.candidates.offsets)[0]
    expected = own.recommend([customer], n=5)
    got = recommend(simple, TableReader(ranker.tables), customer, k=5, as_of=SPLIT)
    assert not got.fallback
    assert got.items == list(expected[c.ITEM_ID].astype(str))
    assert got.scores == pytest.approx(list(expected[c.SCORE]))
    cold = recommend(simple, TableReader({}), "never-seen", k=3)
    assert cold.fallback and cold.fallback_reason == FALLBACK_UNKNOWN_CUSTOMER


def test_a_simple_model_is_re_evaluated_as_it_was_first_evaluated(fitted):
    _, _, train = fitted
    events = train.copy()
    split = temporal_split(events, events[c.EVENT_TS].max() - pd.Timedelta(days=14))
    simple = build_simple_serving_model("popularity", train, version="v-simple")
    own = make_simple_model("popularity").fit(split.train)
    direct = evaluate(own.recommend(list(split.users), n=c.CANDIDATES_N), split)
    again = evaluate_on_split(simple, split)
    assert again["ndcg"] == pytest.approx(direct["ndcg"])
    assert set(again["per_user_ndcg"]) == set(split.users)
