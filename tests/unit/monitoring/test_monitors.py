"""Monitoring: window features (point in time), data drift and quality (Evidently), prediction
drift and delayed performance, on tiny hand-checked fixtures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.ingestion.synthetic import SyntheticConfig, generate_events
from recsys_assets.monitoring.monitors import (
    CATEGORICAL_FEATURES,
    MISSING_BY_DESIGN,
    NUMERIC_FEATURES,
    data_drift,
    data_quality,
    delayed_performance,
    item_mix_shift,
    performance_drop,
    prediction_drift,
    window_features,
)

# --- window_features ----------------------------------------------------------------------------


def _shop() -> pd.DataFrame:
    """Two customers, two items; A buys on days 1 and 2 (twice), B on days 2 and 3."""
    rows = [
        # ts, user, item, type, quantity, price, order
        ("2024-01-01 10:00", "A", "X", c.PURCHASE, 2, 1.0, "o1"),
        ("2024-01-02 09:00", "A", "Y", c.PURCHASE, 1, 3.0, "o2"),
        ("2024-01-02 11:00", "B", "X", c.PURCHASE, 5, 1.0, "o4"),
        ("2024-01-02 12:00", "B", "Y", c.VIEW, 1, 3.0, None),  # not a purchase line
        ("2024-01-02 15:00", "A", "X", c.PURCHASE, 1, 1.0, "o3"),
        ("2024-01-03 08:00", "B", "Y", c.PURCHASE, 1, 3.0, "o5"),
        ("2024-01-04 00:00", "A", "Y", c.PURCHASE, 9, 3.0, "o6"),  # at the window's end
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            c.EVENT_TS,
            c.USER_ID,
            c.ITEM_ID,
            c.EVENT_TYPE,
            c.QUANTITY,
            c.UNIT_PRICE,
            c.ORDER_ID,
        ],
    )
    frame[c.EVENT_TS] = pd.to_datetime(frame[c.EVENT_TS])
    frame[c.COUNTRY] = "United Kingdom"
    return frame


def test_window_features_are_point_in_time():
    out = window_features(_shop(), "2024-01-02", "2024-01-04")
    # lines o2 (A, Y), o4 (B, X), o3 (A, X), o5 (B, Y): views and the line at `end` are out
    assert len(out) == 4
    assert list(out[c.QUANTITY]) == [1.0, 5.0, 1.0, 1.0]
    # A's lines on day 2 see only day 1 (order o1), not o2 / o3 of the same day
    assert list(out[c.ORDERS_TOTAL].iloc[[0, 2]]) == [1.0, 1.0]
    assert out[c.UNITS_TOTAL].iloc[2] == 2.0
    # B has no history before day 2; on day 3 B sees o4 of day 2
    assert math.isnan(out[c.ORDERS_TOTAL].iloc[1])
    assert out[c.ORDERS_TOTAL].iloc[3] == 1.0
    # customer-item: A bought X on day 1 (2 units), never Y before; B never Y before day 3
    assert out[c.TIMES_BOUGHT].iloc[2] == 1.0
    assert out[c.UNITS_BOUGHT].iloc[2] == 2.0
    assert math.isnan(out[c.TIMES_BOUGHT].iloc[0])
    assert math.isnan(out[c.TIMES_BOUGHT].iloc[3])
    # item X on day 2 sees only its day-1 line (not B's line of day 2); Y unknown before day 3
    assert list(out[c.SALES_7D].iloc[[1, 2]]) == [1.0, 1.0]
    assert math.isnan(out[c.SALES_7D].iloc[0])
    assert out[c.SALES_7D].iloc[3] == 1.0
    # recency from the line's own time: o3 at day 2 15:00, last order day 1 10:00
    assert out[c.DAYS_SINCE_LAST_ORDER].iloc[2] == pytest.approx(29 / 24)
    # line columns: 2024-01-03 is a Wednesday (2)
    assert out[c.HOUR_OF_DAY].iloc[3] == 8.0
    assert out[c.DAY_OF_WEEK].iloc[3] == 2.0
    assert out[c.UNIT_PRICE].iloc[0] == 3.0


def test_window_features_columns_are_features_only():
    out = window_features(_shop(), "2024-01-02", "2024-01-04")
    assert list(out.columns) == [*NUMERIC_FEATURES, c.COUNTRY]  # no device in the events
    for name in (c.USER_ID, c.ITEM_ID, c.EVENT_TS, c.ORDER_ID, c.FEATURE_TS):
        assert name not in out.columns
    assert all(out[name].dtype == np.float64 for name in NUMERIC_FEATURES)


def test_window_features_empty_window_and_bad_bounds():
    out = window_features(_shop(), "2023-01-01", "2023-02-01")
    assert len(out) == 0
    assert list(out.columns) == [*NUMERIC_FEATURES, c.COUNTRY]
    with pytest.raises(ValueError, match="before its end"):
        window_features(_shop(), "2024-01-04", "2024-01-02")


def test_window_features_keep_bad_lines_for_quality():
    events = _shop()
    events.loc[events[c.ORDER_ID] == "o5", c.UNIT_PRICE] = -3.0
    out = window_features(events, "2024-01-02", "2024-01-04")
    assert out[c.UNIT_PRICE].iloc[3] == -3.0
    assert any("negative" in p for p in data_quality(out).problems)


# --- data_drift ---------------------------------------------------------------------------------


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(shift, 1.0, n),
            "b": rng.normal(0.0, 1.0, n),
            "colour": rng.choice(["red", "green", "blue"], n),
        }
    )


def test_identical_windows_do_not_drift():
    ref = _frame(2_000, 1)
    result = data_drift(ref, ref.copy())
    assert result.drifted_share == 0.0
    assert not result.dataset_drift
    assert result.drifted_columns == []
    assert set(result.columns) == {"a", "b", "colour"}
    assert all(v["score"] == pytest.approx(0.0, abs=1e-12) for v in result.columns.values())


def test_shifted_column_drifts_and_others_do_not():
    result = data_drift(_frame(2_000, 1), _frame(2_000, 2, shift=2.0))
    assert result.drifted_columns == ["a"]
    assert result.columns["a"]["score"] == pytest.approx(2.0, abs=0.15)  # normed Wasserstein
    assert result.columns["a"]["method"].startswith("Wasserstein")
    assert result.columns["a"]["threshold"] == pytest.approx(0.1)
    assert result.columns["colour"]["method"].startswith("Jensen-Shannon")
    assert result.drifted_share == pytest.approx(1 / 3)
    assert not result.dataset_drift  # 1/3 < 0.5
    assert data_drift(
        _frame(2_000, 1), _frame(2_000, 2, shift=2.0), drift_share=0.3
    ).dataset_drift  # 1/3 >= 0.3


def test_sampling_respects_max_rows():
    ref, cur = _frame(3_000, 1), _frame(2_500, 2)
    sampled = data_drift(ref, cur, max_rows=500, columns=["a"])
    assert (sampled.n_reference, sampled.n_current) == (500, 500)
    assert list(sampled.columns) == ["a"]
    assert sampled.columns["a"]["method"] in ("ks", "K-S p_value")  # small samples: p-value test
    full = data_drift(ref, cur, max_rows=None, columns=["a"])
    assert (full.n_reference, full.n_current) == (3_000, 2_500)
    again = data_drift(ref, cur, max_rows=500, columns=["a"])
    assert again == sampled  # seeded: the same sample, the same figures


def test_all_null_column_is_skipped():
    ref, cur = _frame(1_500, 1), _frame(1_500, 2)
    ref["empty"] = np.nan
    cur["empty"] = 1.0
    result = data_drift(ref, cur)
    assert result.skipped_columns == ("empty",)
    assert "empty" not in result.columns
    assert set(result.columns) == {"a", "b", "colour"}


def test_drift_errors_name_the_problem():
    ref = _frame(100, 1)
    with pytest.raises(ValueError, match="current window is empty"):
        data_drift(ref, ref.iloc[:0])
    with pytest.raises(ValueError, match="reference window is empty"):
        data_drift(ref.iloc[:0], ref)
    with pytest.raises(ValueError, match="do not match"):
        data_drift(ref, ref.drop(columns="b"))
    with pytest.raises(ValueError, match=r"\['zzz'\] are missing from the reference"):
        data_drift(ref, ref, columns=["a", "zzz"])
    with pytest.raises(ValueError, match="'colour'"):
        data_drift(ref, ref.assign(colour=1.0))


def test_drift_save_html(tmp_path):
    result = data_drift(_frame(300, 1), _frame(300, 2))
    path = result.save_html(tmp_path / "reports" / "drift.html")  # a Path works too
    assert path.exists() and path.stat().st_size > 1_000
    assert "snapshot" not in repr(result)


# --- data_quality -------------------------------------------------------------------------------


def test_quality_figures_and_clean_frame():
    frame = pd.DataFrame(
        {
            c.UNIT_PRICE: [0.0, 1.0, 2.5, 2.5],
            c.QUANTITY: [1, 2, 0, 0],
            c.COUNTRY: ["UK", "UK", None, "FR"],
        }
    )
    result = data_quality(frame, max_missing_share=0.3)
    assert result.ok and result.problems == ()
    price = result.columns[c.UNIT_PRICE]
    assert price["missing_share"] == 0.0
    assert price["zero_share"] == pytest.approx(0.25)
    assert (price["min"], price["max"], price["distinct"]) == (0.0, 2.5, 3)
    assert result.columns[c.QUANTITY]["zero_share"] == pytest.approx(0.5)
    country = result.columns[c.COUNTRY]
    assert country["missing_share"] == pytest.approx(0.25)
    assert country["distinct"] == 2
    assert math.isnan(country["zero_share"])


def test_quality_finds_broken_feed():
    frame = pd.DataFrame(
        {
            c.UNIT_PRICE: [1.0, -2.0, 3.0, 4.0, 5.0],
            c.QUANTITY: [1, 1, 1, 1, 1],
            "sparse": [1.0, np.nan, np.nan, 4.0, 5.0],  # 40% missing
            "dead": [np.nan] * 5,
        }
    )
    result = data_quality(frame, columns=[*frame.columns, "gone"])
    assert not result.ok
    text = " | ".join(result.problems)
    assert "'unit_price' has 1 negative values (20.0%)" in text
    assert "'sparse' is 40.0% missing (more than the allowed 20.0%)" in text
    assert "'dead' is entirely null" in text
    assert "'gone' is missing" in text
    assert len(result.problems) == 4
    assert data_quality(frame[["sparse"]], missing_ok=["sparse"], expected_non_negative=()).ok


def test_quality_flags_non_numeric_price_and_empty_frame():
    frame = pd.DataFrame({c.UNIT_PRICE: ["1.0", "2.0"], c.QUANTITY: [1, 2]})
    problems = data_quality(frame).problems
    assert problems == ("column 'unit_price' has dtype object where a numeric dtype is expected",)
    assert "the frame has no rows" in data_quality(frame.iloc[:0]).problems


def test_quality_of_synthetic_window_is_clean(tmp_path):
    events = generate_events(SyntheticConfig(n_users=200, n_items=100, days=60))
    window = window_features(events, "2024-02-01", "2024-03-01")
    assert len(window) > 300
    assert list(window.columns) == [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
    result = data_quality(window, missing_ok=MISSING_BY_DESIGN)
    assert result.ok, result.problems
    flagged = data_quality(window).problems  # without missing_ok: the sparse pair features
    assert any(f"{c.TIMES_BOUGHT!r} is" in p for p in flagged)
    path = result.save_html(str(tmp_path / "quality.html"))
    assert path.stat().st_size > 1_000


# --- prediction_drift ---------------------------------------------------------------------------


def _served(items: list[list[str]], scores: list[list[float]], fallback=None) -> pd.DataFrame:
    n = len(items)
    return pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
            "request_id": [f"r{i}" for i in range(n)],
            "customer_id": [f"C{i}" for i in range(n)],
            "model_version": "v1",
            "variant": "control",
            "items": items,
            "scores": scores,
            "fallback_reason": fallback if fallback is not None else [None] * n,
        }
    )


def test_prediction_drift_same_windows():
    served = _served([["a", "b"], ["a", "c"]], [[4.0, 3.0], [2.0, 1.0]])
    result = prediction_drift(served, served.copy(), k=2)
    assert result.js_distance == pytest.approx(0.0, abs=1e-9)
    assert result.ks_statistic == 0.0
    assert result.wasserstein_normed == 0.0
    assert not result.drifted
    assert (result.n_reference, result.n_current) == (2, 2)


def test_prediction_drift_disjoint_items_and_shifted_scores():
    ref = _served([["a", "b"], ["a", "c"]], [[4.0, 3.0], [2.0, 1.0]])
    cur = _served([["x", "y"], ["z", "y"]], [[8.0, 7.0], [6.0, 5.0]])
    result = prediction_drift(ref, cur, k=2)
    assert result.js_distance == pytest.approx(1.0)
    assert result.ks_statistic == pytest.approx(1.0)
    # Wasserstein 4 over the reference scores' std (population) sqrt(1.25)
    assert result.wasserstein_normed == pytest.approx(4 / math.sqrt(1.25))
    assert result.drifted


def test_prediction_drift_by_hand_top_k_and_fallbacks():
    # only the top 2 count: "q" is third
    ref = _served([["a", "b", "q"], ["a", "c"]], [[1.0, 1.0, 9.0], [1.0, 1.0]])
    cur = _served(
        [["a", "b"], ["a", "b"], ["a", "b"], ["a", "b"]],
        [[1.0, 1.0]] * 4,
        fallback=[None, "unknown_customer", None, None],
    )
    result = prediction_drift(ref, cur, k=2)
    # p = (a .5, b .25, c .25), q = (a .5, b .5, c 0), m = (a .5, b .375, c .125)
    kl_p = 0.25 * math.log2(0.25 / 0.375) + 0.25 * math.log2(0.25 / 0.125)
    kl_q = 0.5 * math.log2(0.5 / 0.375)
    assert result.js_distance == pytest.approx(math.sqrt((kl_p + kl_q) / 2))
    assert result.drifted == (result.js_distance > 0.3)
    assert result.ks_statistic == 0.0  # the 9.0 of "q" is out of the top 2
    assert result.fallback_rate_reference == 0.0
    assert result.fallback_rate_current == pytest.approx(0.25)


def test_prediction_drift_same_windows_are_judged():
    served = _served([["a", "b"], ["a", "c"]], [[4.0, 3.0], [2.0, 1.0]])
    result = prediction_drift(served, served.copy(), k=2)
    assert result.judged and result.reason is None


def test_prediction_drift_empty_window_is_not_judged_not_calm():
    served = _served([["a"]], [[1.0]])
    result = prediction_drift(served, served.iloc[:0])
    assert not result.judged and not result.drifted
    assert result.reason == "the current window has no served requests"
    assert math.isnan(result.js_distance) and math.isnan(result.ks_statistic)  # not 0.0
    result = prediction_drift(_served([[]], [[]]), served)
    assert not result.judged
    assert "the reference window served no items" in result.reason
    assert math.isnan(result.js_distance)
    with pytest.raises(ValueError, match="lacks columns"):
        prediction_drift(served.drop(columns=["scores"]), served)


def test_prediction_drift_without_scores_is_not_judged_unless_the_items_drifted():
    ref = _served([["a", "b"]], [[float("nan"), float("nan")]])
    same = prediction_drift(ref, ref.copy(), k=2)
    assert not same.judged and math.isnan(same.ks_statistic)
    assert same.reason == "a window has no finite served score"
    other = prediction_drift(ref, _served([["x", "y"]], [[float("nan")] * 2]), k=2)
    assert other.drifted and other.judged  # the items alone show the drift


# --- delayed_performance ------------------------------------------------------------------------


def _lists() -> pd.DataFrame:
    served = _served(
        [["x", "y", "z"], ["x", "y"], ["q", "r"], ["x", "y"]],
        [[3.0, 2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [2.0, 1.0]],
    )
    served["ts"] = pd.to_datetime(
        ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-09"]
    ).tz_localize("UTC")
    served["customer_id"] = ["A", "B", "C", "A"]
    return served


def _bought() -> pd.DataFrame:
    rows = [
        ("A", "x", "2023-12-31 12:00"),  # before list 0: not a response to it
        ("A", "x", "2024-01-03 00:00"),  # list 0: hit
        ("A", "z", "2024-01-04 00:00"),  # list 0: bought, but z is 3rd (k = 2)
        ("A", "y", "2024-01-08 00:00:01"),  # one second past list 0's horizon
        ("B", "w", "2024-01-05 00:00"),  # list 1: bought, not recommended
        ("B", "v", "2024-01-06 00:00"),  # list 1: bought, not recommended
        ("B", "x", "2024-01-09 00:00"),  # list 1: hit exactly at the horizon's end
        ("D", "x", "2024-01-10 00:00"),  # latest purchase: list 2's horizon just elapsed
    ]
    frame = pd.DataFrame(rows, columns=[c.USER_ID, c.ITEM_ID, c.EVENT_TS])
    frame[c.EVENT_TS] = pd.to_datetime(frame[c.EVENT_TS], format="ISO8601")  # naive, as events
    return frame


def test_delayed_performance_by_hand():
    got = delayed_performance(_lists(), _bought(), k=2, horizon_days=7)
    # lists 0, 1, 2 count (list 3's horizon ends 2024-01-16, after the latest purchase)
    assert got["lists"] == 3
    assert got["lists_with_purchase"] == 2  # C bought nothing
    assert got["hit_rate"] == pytest.approx(2 / 3)
    assert got["hit_rate_with_purchase"] == pytest.approx(1.0)
    assert got["precision"] == pytest.approx(2 / (3 * 2))
    # list 0: x of {x, z}; list 1: x of {w, v, x}
    assert got["recall"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_delayed_performance_nothing_elapsed():
    got = delayed_performance(_lists(), _bought().iloc[:2], k=2)
    assert got["lists"] == 0
    assert math.isnan(got["hit_rate"])
    assert got["judged"] is False
    assert got["reason"] == "no served list's 7-day horizon has elapsed yet"
    assert delayed_performance(_lists(), _bought(), k=2)["judged"] is True
    assert delayed_performance(_lists(), _bought().iloc[:0], k=2)["reason"] == (
        "no purchase to score the served lists on"
    )


def test_performance_drop():
    assert performance_drop(0.3, 0.4).drop == pytest.approx(0.25)
    assert performance_drop(0.5, 0.4).drop == pytest.approx(-0.25)
    assert performance_drop(0.3, 0.4).judged


@pytest.mark.parametrize(
    ("observed", "expected", "why"),
    [
        (0.1, 0.0, "the reference figure is 0"),  # used to read as a 0 drop
        (float("nan"), 0.4, "the live figure is unknown"),
        (0.3, float("nan"), "the reference figure is unknown"),
    ],
)
def test_performance_drop_that_cannot_be_computed_is_not_judged(observed, expected, why):
    drop = performance_drop(observed, expected)
    assert not drop.judged
    assert math.isnan(drop.drop)
    assert drop.reason.startswith(why)


# --- item mix ------------------------------------------------------------------------------------


def test_item_mix_disjoint_windows_are_at_distance_one():
    shift = item_mix_shift(pd.Series(["a", "a"]), pd.Series(["b", "b"]))
    assert shift.distance == pytest.approx(1.0)
    assert (shift.n_reference, shift.n_current) == (2, 2)


def test_item_mix_same_shop_is_only_chance_apart():
    rng = np.random.default_rng(3)
    weights = rng.dirichlet(np.ones(200))
    reference = pd.Series(rng.choice(200, size=4_000, p=weights))
    current = pd.Series(rng.choice(200, size=300, p=weights))
    shift = item_mix_shift(reference, current)
    assert shift.distance > 0.3  # far apart by sampling alone ...
    assert abs(shift.excess) < 0.03  # ... and no further than chance
    assert shift.pvalue > 0.05


def test_item_mix_a_turn_to_a_few_items_stands_out():
    rng = np.random.default_rng(4)
    reference = pd.Series(rng.integers(0, 200, size=4_000))
    current = pd.Series(np.concatenate([rng.integers(0, 200, 200), rng.integers(0, 20, 100)]))
    shift = item_mix_shift(reference, current)
    assert shift.excess > 0.05
    assert shift.pvalue < 0.01


def test_item_mix_needs_both_windows():
    shift = item_mix_shift(pd.Series(["a"]), pd.Series([], dtype=str))
    assert not shift.judged
    assert "current 0" in shift.reason
    assert all(math.isnan(x) for x in (shift.distance, shift.expected, shift.excess, shift.pvalue))
    assert item_mix_shift(pd.Series(["a", "a"]), pd.Series(["b", "b"])).judged


def test_js_distance_of_empty_windows_is_nan_not_zero():
    from recsys_assets.monitoring.monitors import _js_from_counts

    counts = np.array([[0.0, 0.0], [1.0, 1.0]])
    got = _js_from_counts(counts, np.array([[0.0, 0.0], [1.0, 1.0]]))
    assert math.isnan(got[0])  # no item on either side: unknown, not "the same mix"
    assert got[1] == pytest.approx(0.0)
    assert math.isnan(_js_from_counts(counts[:1], counts[1:])[0])
