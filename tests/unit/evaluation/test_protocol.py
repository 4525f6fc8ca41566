"""The evaluation protocol: split semantics, fallback split, segments, hand-checked scores."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.evaluation.metrics import per_user_metrics
from recsys_assets.evaluation.protocol import (
    DEFAULT_SPLIT,
    EDGE_LARGE_BASKET,
    EDGE_ONE_ORDER,
    EDGE_UNSEEN_ITEMS,
    LARGE_BASKET_QUANTILE,
    NO_PRICES,
    ONE_ORDER,
    REPEAT,
    REST,
    SEGMENT_COUNTRY,
    SEGMENT_ORDERS,
    UK,
    UNKNOWN,
    Split,
    bootstrap_by_segment,
    bootstrap_ndcg,
    edge_case_summaries,
    evaluate,
    temporal_split,
    user_segments,
    validation_split,
)

D2 = 1 / math.log2(3)  # discount of rank 2

COLUMNS = [
    c.EVENT_TS,
    c.USER_ID,
    c.ITEM_ID,
    c.QUANTITY,
    c.UNIT_PRICE,
    c.ORDER_ID,
    c.COUNTRY,
    c.EVENT_TYPE,
]


def _events(rows: list[tuple]) -> pd.DataFrame:
    """Events from (ts, user, item, quantity, price, order, country[, event type]) tuples."""
    rows = [row if len(row) == 8 else (*row, c.PURCHASE) for row in rows]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame[c.EVENT_TS] = pd.to_datetime(frame[c.EVENT_TS]).astype("datetime64[ns]")
    frame = frame.astype({c.QUANTITY: np.float64, c.UNIT_PRICE: np.float64})
    text = [c.USER_ID, c.ITEM_ID, c.ORDER_ID, c.COUNTRY, c.EVENT_TYPE]
    return frame.astype(dict.fromkeys(text, "string"))


GB, FR = "United Kingdom", "France"

# u1: two training orders (UK), buys A twice and C in the test period (A re-bought).
# u2: one training order (France), buys B (re-bought) and D (new item) in the test period.
# u3: training only; u4: test only (neither is evaluated).
# A view (item E) and a zero-quantity line (item F) must be filtered out.
ROWS = [
    ("2011-10-01 10:00", "u1", "A", 1, 1.5, "o1", GB),
    ("2011-10-01 10:00", "u1", "B", 1, 4.0, "o1", GB),
    ("2011-10-15 09:00", "u1", "A", 2, 1.5, "o2", GB),
    ("2011-10-20 12:00", "u2", "B", 1, 4.0, "o4", FR),
    ("2011-09-01 08:00", "u3", "C", 1, 2.0, "o6", GB),
    ("2011-09-02 08:00", "u3", "E", 1, 2.0, None, GB, c.VIEW),
    ("2011-09-03 08:00", "u3", "F", 0, 2.0, "o8", GB),
    ("2011-11-05 11:00", "u1", "A", 2, 1.5, "o3", GB),
    ("2011-11-05 11:00", "u1", "C", 1, 2.0, "o3", GB),
    ("2011-11-06 11:00", "u1", "C", 1, 2.0, "o9", GB),
    ("2011-11-10 15:00", "u2", "B", 1, 4.0, "o5", FR),
    ("2011-11-10 15:00", "u2", "D", 3, 1.0, "o5", FR),
    ("2011-11-02 10:00", "u4", "A", 1, 1.5, "o7", GB),
]


@pytest.fixture
def split():
    return temporal_split(_events(ROWS), DEFAULT_SPLIT)


def test_split_keeps_customers_of_both_periods_and_distinct_test_items(split) -> None:
    assert split.users.tolist() == ["u1", "u2"]
    assert split.split_ts == pd.Timestamp("2011-11-01")
    pairs = list(split.relevant.itertuples(index=False, name=None))
    assert pairs == [("u1", "A"), ("u1", "C"), ("u2", "B"), ("u2", "D")]
    # Re-bought items stay relevant (not filtered); D is relevant though not in the catalogue.
    assert split.catalogue.tolist() == ["A", "B", "C"]
    # Training keeps every customer's purchases (u3 too) but not the view or the 0 quantity.
    assert sorted(split.train[c.USER_ID].unique()) == ["u1", "u2", "u3"]
    assert set(split.train[c.ITEM_ID]) == {"A", "B", "C"}
    assert (split.train[c.EVENT_TS] < split.split_ts).all()
    # The test lines are the evaluated customers' only (u4 is left out).
    assert sorted(split.test[c.USER_ID].unique()) == ["u1", "u2"]
    assert len(split.test) == 5
    assert split.has_prices
    assert "1 of them items not in the training catalogue" in split.description
    assert "2 customers with a purchase in both periods" in split.description
    assert "not purchases" in split.description and "quantity" in split.description


def test_product_pattern_only_filters_when_given() -> None:
    rows = [*ROWS, ("2011-10-02 10:00", "u1", "POST", 1, 18.0, "o1", GB)]
    assert "POST" in temporal_split(_events(rows), DEFAULT_SPLIT).catalogue
    split = temporal_split(_events(rows), DEFAULT_SPLIT, product_pattern=r"^[A-Z]$")
    assert "POST" not in split.catalogue
    assert "not matching" in split.description


def test_split_outside_the_data_falls_back_to_the_last_tenth() -> None:
    days = pd.date_range("2020-01-01", periods=11, freq="D")
    rows = [(str(day), user, "X", 1, 1.0, f"{user}{i}", GB) for i, day in enumerate(days)
            for user in ("a", "b")]  # fmt: skip
    split = temporal_split(_events(rows))  # no split date configured
    assert split.split_ts == pd.Timestamp("2020-01-10")  # 10 days x 0.9 after the start
    assert split.test[c.EVENT_TS].min() == pd.Timestamp("2020-01-10")
    assert split.users.tolist() == ["a", "b"]
    assert split.description.count("no split date configured") == 1
    assert "last 10% of the time range" in split.description
    outside = temporal_split(_events(rows), DEFAULT_SPLIT)  # 2011-11-01 is before the data
    assert outside.split_ts == pd.Timestamp("2020-01-10")
    assert "split date 2011-11-01 00:00:00 is outside the data's time range" in outside.description
    assert temporal_split(_events(rows), "2030-01-01").split_ts == pd.Timestamp("2020-01-10")


def test_no_prices_are_said_and_make_revenue_unavailable() -> None:
    events = _events(ROWS).drop(columns=[c.UNIT_PRICE])
    split = temporal_split(events, DEFAULT_SPLIT)
    assert not split.has_prices
    assert NO_PRICES in split.description
    recs = pd.DataFrame({c.USER_ID: ["u1"], c.ITEM_ID: ["A"], c.RANK: [1]})
    revenue = evaluate(recs, split)["revenue"]
    assert revenue["available"] is False and math.isnan(revenue["total"])
    null_prices = temporal_split(_events(ROWS).assign(**{c.UNIT_PRICE: np.nan}), DEFAULT_SPLIT)
    assert NO_PRICES in null_prices.description


def test_segments_by_training_orders_and_most_frequent_country(split) -> None:
    segments = user_segments(split).set_index(c.USER_ID)
    assert segments.loc["u1", SEGMENT_ORDERS] == REPEAT  # orders o1 and o2
    assert segments.loc["u2", SEGMENT_ORDERS] == ONE_ORDER
    assert segments.loc["u1", SEGMENT_COUNTRY] == UK
    assert segments.loc["u2", SEGMENT_COUNTRY] == REST


def test_segments_without_orders_or_countries() -> None:
    events = _events(ROWS).drop(columns=[c.ORDER_ID, c.COUNTRY, c.EVENT_TYPE, c.QUANTITY])
    segments = user_segments(temporal_split(events, DEFAULT_SPLIT)).set_index(c.USER_ID)
    # Without order ids an order is an instant: u1 bought at two instants in training.
    assert segments.loc["u1", SEGMENT_ORDERS] == REPEAT
    assert segments.loc["u2", SEGMENT_ORDERS] == ONE_ORDER
    assert set(segments[SEGMENT_COUNTRY]) == {UNKNOWN}


def test_most_frequent_country_ties_go_alphabetically() -> None:
    rows = [
        ("2011-10-01", "u", "A", 1, 1.0, "o1", GB),
        ("2011-10-02", "u", "B", 1, 1.0, "o2", FR),
        ("2011-11-02", "u", "A", 1, 1.0, "o3", GB),
    ]
    segments = user_segments(temporal_split(_events(rows), DEFAULT_SPLIT))
    assert segments[SEGMENT_COUNTRY].tolist() == [REST]  # France < United Kingdom


def _recs(lists: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(u, item, rank) for u, items in lists.items() for rank, item in enumerate(items, 1)]
    return pd.DataFrame(rows, columns=[c.USER_ID, c.ITEM_ID, c.RANK])


def test_evaluate_on_a_hand_computed_case(split) -> None:
    # k = 2. u1 (relevant A, C): A hit at 1, B miss. u2 (relevant B, D): A miss, B hit at 2.
    # u3 is not evaluated: its list must not count (it would add C to the coverage).
    recs = _recs({"u1": ["A", "B", "C"], "u2": ["A", "B"], "u3": ["C"]})
    result = evaluate(recs, split, k=2, ks=(1, 2))
    idcg = 1 + D2
    assert result["n_users"] == 2
    assert result["ndcg"] == pytest.approx((1 / idcg + D2 / idcg) / 2)  # = 0.5
    assert result["ndcg"] == pytest.approx(0.5)
    assert result["map"] == pytest.approx((1 / 2 + (1 / 2) / 2) / 2)
    assert result["recall"] == pytest.approx(0.5)
    assert result["precision"] == pytest.approx(0.5)
    assert result["hit_rate"] == pytest.approx(1.0)
    assert result["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert result["coverage"] == pytest.approx(2 / 3)  # A, B of A, B, C
    # Revenue: u1 spent 2 x 1.5 on A, u2 1 x 4.0 on B (D, 3.0, was not recommended).
    assert result["revenue"]["total"] == pytest.approx(7.0)
    assert result["revenue"]["per_user_mean"] == pytest.approx(3.5)
    at_k = {row["k"]: row for row in result["at_k"]}
    assert at_k[1]["hit_rate"] == pytest.approx(0.5) and at_k[1]["coverage"] == pytest.approx(1 / 3)
    assert at_k[2]["ndcg"] == pytest.approx(result["ndcg"])
    orders = result["segments"][SEGMENT_ORDERS]
    assert orders[REPEAT]["ndcg"] == pytest.approx(1 / idcg) and orders[REPEAT]["n_users"] == 1
    assert orders[ONE_ORDER]["ndcg"] == pytest.approx(D2 / idcg)
    country = result["segments"][SEGMENT_COUNTRY]
    assert country[UK]["mrr"] == pytest.approx(1.0) and country[REST]["mrr"] == pytest.approx(0.5)
    assert len(result["per_user"]) == 2


def test_evaluate_ranks_scores_and_scores_missing_users_as_zero(split) -> None:
    recs = pd.DataFrame({c.USER_ID: ["u1", "u1"], c.ITEM_ID: ["B", "A"], c.SCORE: [0.1, 0.9]})
    result = evaluate(recs, split, k=1, ks=(1,))
    assert result["n_users"] == 2  # u2 has no list: evaluated, scores 0
    assert result["hit_rate"] == pytest.approx(0.5)


def test_bootstrap_is_seeded_and_brackets_the_mean(split) -> None:
    per_user = per_user_metrics(_recs({"u1": ["A", "B"], "u2": ["A", "B"]}), split.relevant, k=2)
    first, again = bootstrap_ndcg(per_user, n=50, seed=1), bootstrap_ndcg(per_user, n=50, seed=1)
    assert first == again
    assert first["point"] == pytest.approx(0.5)
    assert first["p5"] <= first["mean"] <= first["p95"]
    assert first["std"] > 0 and first["n_users"] == 2 and first["n_resamples"] == 50
    flat = bootstrap_ndcg(per_user.assign(ndcg=0.3), n=20)
    assert flat["std"] == pytest.approx(0.0) and flat["p5"] == pytest.approx(0.3)
    assert math.isnan(bootstrap_ndcg(per_user.iloc[:0])["mean"])


def test_evaluate_reports_robustness_beside_accuracy(split) -> None:
    # k = 2, as in the hand-computed case: u1 (repeat) NDCG 1 / idcg, u2 (one order) D2 / idcg.
    recs = _recs({"u1": ["A", "B", "C"], "u2": ["A", "B"]})
    result = evaluate(recs, split, k=2, ks=(2,), n_bootstrap=30, seed=3)
    idcg = 1 + D2
    by_segment = result["bootstrap_by_segment"]
    assert set(by_segment[SEGMENT_ORDERS]) == {ONE_ORDER, REPEAT}
    assert set(by_segment[SEGMENT_COUNTRY]) == {UK, REST}
    repeat = by_segment[SEGMENT_ORDERS][REPEAT]
    assert repeat["n_users"] == 1 and repeat["n_resamples"] == 30
    assert repeat["mean"] == pytest.approx(1 / idcg) and repeat["std"] == pytest.approx(0.0)
    edges = result["edge_cases"]
    assert edges[EDGE_ONE_ORDER]["n_users"] == 1
    assert edges[EDGE_ONE_ORDER]["ndcg"] == pytest.approx(D2 / idcg)
    # Both customers have 2 relevant items: the threshold is 2 and both are "large".
    large = edges[EDGE_LARGE_BASKET]
    assert large["threshold"] == 2 and large["n_users"] == 2
    assert large["share_of_users"] == pytest.approx(1.0)
    assert large["quantile"] == LARGE_BASKET_QUANTILE
    # Pairs (u1 A), (u1 C), (u2 B), (u2 D): D is not in the catalogue A, B, C.
    unseen = edges[EDGE_UNSEEN_ITEMS]
    assert unseen["n_pairs"] == 4 and unseen["n_unseen_pairs"] == 1
    assert unseen["unseen_share"] == pytest.approx(0.25)
    assert unseen["pooled_recall_ceiling"] == pytest.approx(0.75)
    assert unseen["recall_ceiling"] == pytest.approx((2 / 2 + 1 / 2) / 2)
    assert unseen["recall_ceiling_at_k"] == pytest.approx((2 / 2 + 1 / 2) / 2)
    assert unseen["n_users"] == 1  # u2 only: recall 1/2 (B hit, D impossible)
    assert unseen["recall"] == pytest.approx(0.5) and unseen["ndcg"] == pytest.approx(D2 / idcg)
    at_1 = evaluate(recs, split, k=1, ks=(1,))["edge_cases"][EDGE_UNSEEN_ITEMS]
    assert at_1["recall_ceiling_at_k"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert at_1["recall_ceiling"] == pytest.approx(0.75)


def _synthetic(n_relevant: list[int], orders: list[str], unseen_item: bool = False):
    """A hand-made split whose customer i has n_relevant[i] relevant items, and its tables."""
    users = [f"u{i:02d}" for i in range(len(n_relevant))]
    pairs = [(u, f"I{j}") for u, n in zip(users, n_relevant, strict=True) for j in range(n)]
    relevant = pd.DataFrame(pairs, columns=[c.USER_ID, c.ITEM_ID])
    catalogue = np.array(sorted(set(relevant[c.ITEM_ID]) - ({"I0"} if unseen_item else set())))
    split = Split(
        train=pd.DataFrame(columns=[c.USER_ID, c.ITEM_ID]),
        test=pd.DataFrame(columns=[c.USER_ID, c.ITEM_ID]),
        relevant=relevant,
        catalogue=catalogue.astype(object),
        users=np.array(users, dtype=object),
        split_ts=pd.Timestamp("2011-11-01"),
        description="synthetic",
    )
    recs = _recs({u: ["I0", "I1"] for u in users})
    per_user = per_user_metrics(recs, relevant, k=2)
    segments = pd.DataFrame(
        {c.USER_ID: users, SEGMENT_ORDERS: orders, SEGMENT_COUNTRY: [UK] * len(users)}
    )
    return split, per_user, segments


def test_large_basket_threshold_is_the_higher_95th_percentile() -> None:
    # 20 customers with 1..20 items: position 0.95 x 19 = 18.05 -> "higher" = 20, one customer.
    split, per_user, segments = _synthetic(list(range(1, 21)), [REPEAT] * 20)
    large = edge_case_summaries(per_user, split, segments)[EDGE_LARGE_BASKET]
    assert large["threshold"] == 20 and large["n_users"] == 1
    assert large["share_of_users"] == pytest.approx(0.05)
    assert large["recall"] == pytest.approx(2 / 20)  # I0 and I1 hit
    # Ties at the threshold are all in: 6 customers, position 4.75 -> the 6th value, 5.
    split, per_user, segments = _synthetic([1, 1, 1, 1, 5, 5], [REPEAT] * 6)
    large = edge_case_summaries(per_user, split, segments)[EDGE_LARGE_BASKET]
    assert large["threshold"] == 5 and large["n_users"] == 2
    assert large["share_of_users"] == pytest.approx(2 / 6)


def test_unseen_share_and_recall_ceiling_by_hand() -> None:
    # Items I0 is unseen; customers hold {I0}, {I0, I1}, {I0, I1, I2, I3}: 7 pairs, 3 unseen.
    split, per_user, segments = _synthetic([1, 2, 4], [REPEAT] * 3, unseen_item=True)
    unseen = edge_case_summaries(per_user, split, segments, k=2)[EDGE_UNSEEN_ITEMS]
    assert unseen["n_pairs"] == 7 and unseen["n_unseen_pairs"] == 3
    assert unseen["unseen_share"] == pytest.approx(3 / 7)
    assert unseen["pooled_recall_ceiling"] == pytest.approx(4 / 7)
    assert unseen["recall_ceiling"] == pytest.approx((0 / 1 + 1 / 2 + 3 / 4) / 3)
    assert unseen["recall_ceiling_at_k"] == pytest.approx((0 + 1 / 2 + 2 / 4) / 3)
    assert unseen["n_users"] == 3  # every customer has I0


def test_empty_groups_give_zero_users_and_nan_means() -> None:
    split, per_user, segments = _synthetic([1, 2, 3], [REPEAT] * 3)  # nobody one-order, no unseen
    edges = edge_case_summaries(per_user, split, segments)
    assert edges[EDGE_ONE_ORDER]["n_users"] == 0 and math.isnan(edges[EDGE_ONE_ORDER]["ndcg"])
    unseen = edges[EDGE_UNSEEN_ITEMS]
    assert unseen["n_users"] == 0 and math.isnan(unseen["recall"])
    assert unseen["unseen_share"] == 0.0 and unseen["recall_ceiling"] == pytest.approx(1.0)
    empty = edge_case_summaries(per_user.iloc[:0], split, segments)
    for group in empty.values():
        assert group["n_users"] == 0 and math.isnan(group["ndcg"])
    assert math.isnan(empty[EDGE_LARGE_BASKET]["threshold"])
    assert empty[EDGE_UNSEEN_ITEMS]["n_pairs"] == 0
    assert math.isnan(empty[EDGE_UNSEEN_ITEMS]["unseen_share"])
    by_segment = bootstrap_by_segment(per_user.iloc[:0], segments)
    assert by_segment == {SEGMENT_ORDERS: {}, SEGMENT_COUNTRY: {}}


def test_bootstrap_by_segment_is_seeded_and_matches_bootstrap_ndcg_per_segment() -> None:
    orders = [ONE_ORDER, REPEAT] * 5
    _, per_user, segments = _synthetic([1] * 10, orders)
    per_user = per_user.assign(ndcg=np.linspace(0.0, 0.9, 10))  # spread to resample
    first = bootstrap_by_segment(per_user, segments, n=40, seed=7)
    assert first == bootstrap_by_segment(per_user, segments, n=40, seed=7)
    assert first != bootstrap_by_segment(per_user, segments, n=40, seed=8)
    one = first[SEGMENT_ORDERS][ONE_ORDER]
    rows = per_user[c.USER_ID].isin(segments.loc[segments[SEGMENT_ORDERS] == ONE_ORDER, c.USER_ID])
    assert one == bootstrap_ndcg(per_user.loc[rows], n=40, seed=7)
    assert one["n_users"] == 5 and one["p5"] <= one["mean"] <= one["p95"] and one["std"] > 0
    assert first[SEGMENT_COUNTRY][UK]["n_users"] == 10


def test_the_validation_period_has_the_test_periods_length_just_before_it():
    day = pd.Timestamp("2024-01-01")
    rows = [  # customers a and b buy on days 0, 10, 20 and 30
        {c.USER_ID: u, c.ITEM_ID: f"i{d}", c.EVENT_TS: day + pd.Timedelta(days=d),
         c.EVENT_TYPE: c.PURCHASE, c.QUANTITY: 1}
        for u in ("a", "b") for d in (0, 10, 20, 30)
    ]  # fmt: skip
    split = temporal_split(pd.DataFrame(rows), day + pd.Timedelta(days=25))
    assert split.end_ts == day + pd.Timedelta(days=30)
    assert split.test_days == pytest.approx(5.0)
    validation = validation_split(split)
    # test period 5 days: validation from day 20 on, trained on days 0 and 10
    assert validation.split_ts == day + pd.Timedelta(days=20)
    assert sorted(validation.train[c.ITEM_ID].unique()) == ["i0", "i10"]
    assert sorted(validation.relevant[c.ITEM_ID].unique()) == ["i20"]
    assert list(validation.users) == ["a", "b"]
    assert validation.description.startswith("validation (inside the training period)")
    assert "i30" not in set(validation.train[c.ITEM_ID]) | set(validation.test[c.ITEM_ID])
