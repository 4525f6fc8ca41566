"""A/B test statistics: hand-computed fixtures, boundary cases, scipy agreement, a known effect
and a false-positive-rate simulation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recsys_assets.core import constants as c
from recsys_assets.release.ab_statistics import (
    AOV,
    ASSIGNED_AT,
    CONVERSION,
    CUSTOMERS,
    CUSTOMERS_WITH_ORDERS,
    INCONCLUSIVE,
    ORDER_VALUE,
    ORDERS,
    REVENUE,
    REVENUE_PER_CUSTOMER,
    SIGNIFICANT_IMPROVEMENT,
    SIGNIFICANT_REGRESSION,
    SUMMARY_COLUMNS,
    UNDERPOWERED,
    VARIANT,
    analyse_aov_test,
    attributed_orders,
    bootstrap_lift_ci,
    cuped_adjust,
    sample_size_per_variant,
    srm_check,
    variant_summary,
    welch_from_moments,
    welch_test,
)

T0 = pd.Timestamp("2024-01-01")


def _assignments(rows: list[tuple[str, str]], at: pd.Timestamp = T0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            c.USER_ID: [user for user, _ in rows],
            VARIANT: [variant for _, variant in rows],
            ASSIGNED_AT: at,
        }
    )


def _orders(rows: list[tuple[str, str, float, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[c.USER_ID, c.ORDER_ID, ORDER_VALUE, c.EVENT_TS])


def _hand_fixture() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A: u1 (orders 10 and 20), u2 (an order before assignment only), u3 (none);
    B: u4 (orders 15 and 35), u5 (none); u9 is not assigned."""
    assignments = _assignments([("u1", "A"), ("u2", "A"), ("u3", "A"), ("u4", "B"), ("u5", "B")])
    day = pd.Timedelta(days=1)
    orders = _orders(
        [
            ("u1", "o1", 10.0, T0 + day),
            ("u1", "o2", 20.0, T0 + 2 * day),
            ("u2", "o3", 99.0, T0 - day),
            ("u4", "o4", 15.0, T0),  # at the assignment instant: counts
            ("u4", "o5", 35.0, T0 + day),
            ("u9", "o6", 50.0, T0 + day),
        ]
    )
    return assignments, orders


def _experiment(
    rng: np.random.Generator,
    *,
    orders_per_arm: int,
    lift: float,
    sigma: float = 0.6,
    orders_per_customer: int = 2,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Control and treatment, each with orders_per_arm lognormal orders; treatment x (1 + lift)."""
    n_customers = orders_per_arm // orders_per_customer
    users = np.array([f"u{i}" for i in range(2 * n_customers)])
    variants = np.repeat(["control", "treatment"], n_customers)
    assignments = pd.DataFrame({c.USER_ID: users, VARIANT: variants, ASSIGNED_AT: T0})
    order_users = np.repeat(users, orders_per_customer)
    factor = np.where(np.repeat(variants, orders_per_customer) == "treatment", 1.0 + lift, 1.0)
    # Mean of lognormal(mu, sigma) is exp(mu + sigma^2 / 2): control AOV 50.
    values = rng.lognormal(math.log(50.0) - sigma**2 / 2, sigma, order_users.size) * factor
    orders = pd.DataFrame(
        {
            c.USER_ID: order_users,
            c.ORDER_ID: [f"o{i}" for i in range(order_users.size)],
            ORDER_VALUE: values,
            c.EVENT_TS: T0 + pd.Timedelta(hours=1),
        }
    )
    return assignments, orders


# --- variant_summary and attribution -----------------------------------------------------


def test_variant_summary_hand_fixture() -> None:
    assignments, orders = _hand_fixture()
    summary = variant_summary(assignments, orders)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    a, b = summary.loc["A"], summary.loc["B"]
    assert (a[CUSTOMERS], a[CUSTOMERS_WITH_ORDERS], a[ORDERS]) == (3, 1, 2)
    assert a[CONVERSION] == pytest.approx(1 / 3)
    assert a[AOV] == pytest.approx(15.0)
    assert a[REVENUE] == pytest.approx(30.0)
    assert a[REVENUE_PER_CUSTOMER] == pytest.approx(10.0)
    assert (b[CUSTOMERS], b[CUSTOMERS_WITH_ORDERS], b[ORDERS]) == (2, 1, 2)
    assert b[CONVERSION] == pytest.approx(0.5)
    assert b[AOV] == pytest.approx(25.0)
    assert b[REVENUE_PER_CUSTOMER] == pytest.approx(25.0)
    exclusions = summary.attrs["exclusions"]
    assert exclusions["orders_before_assignment"] == 1
    assert exclusions["orders_unassigned"] == 1


def test_variant_without_orders_has_nan_aov_and_zero_revenue() -> None:
    assignments = _assignments([("u1", "A"), ("u2", "B")])
    orders = _orders([("u1", "o1", 10.0, T0)])
    summary = variant_summary(assignments, orders)
    assert summary.loc["B", ORDERS] == 0
    assert summary.loc["B", CONVERSION] == 0.0
    assert math.isnan(summary.loc["B", AOV])
    assert summary.loc["B", REVENUE_PER_CUSTOMER] == 0.0


def test_attribution_counts_every_row_left_out() -> None:
    assignments = pd.DataFrame(
        {
            c.USER_ID: ["u1", "u1", "u2", "u2", "u3", None],
            VARIANT: ["A", "A", "A", "B", "B", "A"],
            ASSIGNED_AT: [T0 + pd.Timedelta(days=1), T0, T0, T0, T0, T0],
        }
    )
    later = T0 + pd.Timedelta(hours=12)
    orders = _orders(
        [
            ("u1", "o1", 5.0, later),  # u1's earliest assignment (T0) counts: kept
            ("u1", "o1", 7.0, later),  # second line of o1: merged into it
            ("u1", None, 3.0, later),  # no order id: an order of its own
            ("u2", "o2", 10.0, later),  # u2 is in A and B: left out
            ("u3", "o3", None, later),  # no value
            ("u4", "o4", 1.0, later),  # unassigned
        ]
    )
    frame = attributed_orders(assignments, orders)
    assert sorted(frame[ORDER_VALUE]) == [3.0, 12.0]
    assert set(frame[VARIANT]) == {"A"}
    assert frame.attrs["exclusions"] == {
        "assignment_rows_incomplete": 1,
        "assignment_rows_repeated": 1,
        "customers_in_several_variants": 1,
        "orders_of_customers_in_several_variants": 1,
        "orders_unassigned": 1,
        "orders_before_assignment": 0,
        "orders_incomplete": 1,
        "order_lines_merged": 1,
    }


def test_keyword_column_names() -> None:
    assignments, orders = _hand_fixture()
    assignments = assignments.rename(columns={c.USER_ID: "customer_id", ASSIGNED_AT: "t0"})
    orders = orders.rename(columns={c.USER_ID: "customer_id", c.EVENT_TS: "ts"})
    summary = variant_summary(
        assignments, orders, col_user="customer_id", col_assigned_at="t0", col_ts="ts"
    )
    assert summary.loc["B", AOV] == pytest.approx(25.0)
    with pytest.raises(KeyError, match="customer_id"):
        variant_summary(assignments, orders)


# --- Welch --------------------------------------------------------------------------------


def test_welch_hand_fixture() -> None:
    # a = [10, 20]: mean 15, var 50; b = [15, 35]: mean 25, var 200.
    # se^2 = 50/2 + 200/2 = 125; t = 10 / sqrt(125); df = 125^2 / (25^2 + 100^2) = 1.470588.
    result = welch_test([10.0, 20.0], [15.0, 35.0])
    assert result["difference"] == pytest.approx(10.0)
    assert result["lift"] == pytest.approx(10 / 15)
    assert result["se"] == pytest.approx(math.sqrt(125))
    assert result["t"] == pytest.approx(10 / math.sqrt(125))
    assert result["df"] == pytest.approx(15625 / 10625)
    q = stats.t.ppf(0.975, 15625 / 10625)
    assert result["ci_low"] == pytest.approx(10 - q * math.sqrt(125))
    assert result["ci_high"] == pytest.approx(10 + q * math.sqrt(125))
    assert result["p_value"] == pytest.approx(2 * stats.t.sf(10 / math.sqrt(125), 15625 / 10625))


@pytest.mark.parametrize("seed", range(5))
def test_welch_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.lognormal(3.0, 0.8, rng.integers(5, 300))
    b = rng.lognormal(3.1, 0.5, rng.integers(5, 300))
    ours = welch_test(a, b, alpha=0.1)
    theirs = stats.ttest_ind(b, a, equal_var=False)
    assert ours["t"] == pytest.approx(theirs.statistic, rel=1e-10)
    assert ours["p_value"] == pytest.approx(theirs.pvalue, rel=1e-8)
    assert ours["df"] == pytest.approx(theirs.df, rel=1e-10)
    ci = theirs.confidence_interval(confidence_level=0.9)
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-8)


def test_welch_identical_samples() -> None:
    sample = [12.0, 30.0, 18.5, 7.0]
    result = welch_test(sample, sample)
    assert result["difference"] == 0.0
    assert result["t"] == 0.0
    assert result["p_value"] == pytest.approx(1.0)
    assert result["ci_low"] < 0 < result["ci_high"]


def test_welch_zero_variance_does_not_divide_by_zero() -> None:
    with np.errstate(all="raise"):
        same = welch_test([5.0, 5.0, 5.0], [5.0, 5.0])
        different = welch_test([5.0, 5.0, 5.0], [6.0, 6.0])
    assert (same["t"], same["p_value"], same["ci_low"], same["ci_high"]) == (0.0, 1.0, 0.0, 0.0)
    assert different["t"] == math.inf
    assert different["p_value"] == 0.0
    assert different["ci_low"] == different["ci_high"] == pytest.approx(1.0)
    one_constant = welch_test([5.0, 5.0, 5.0], [4.0, 6.0])  # df falls to n_b - 1
    assert one_constant["df"] == pytest.approx(1.0)


def test_welch_boundaries() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        welch_test([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        welch_test([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="alpha"):
        welch_test([1.0, 2.0], [1.0, 2.0], alpha=1.5)
    assert welch_test([-1.0, 1.0], [1.0, 2.0])["lift"] is None  # control mean 0


# --- Bootstrap ----------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_handles_boundaries() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.exponential(20, 50), rng.exponential(22, 60)
    assert bootstrap_lift_ci(a, b, seed=7) == bootstrap_lift_ci(a, b, seed=7)
    assert bootstrap_lift_ci(a, b, seed=7) != bootstrap_lift_ci(a, b, seed=8)
    same = bootstrap_lift_ci(a, a, n_boot=500)
    assert same["lift"] == 0.0
    assert same["lift_ci_low"] < 0 < same["lift_ci_high"]
    single = bootstrap_lift_ci([10.0], [12.0], n_boot=100)  # one order each: a point
    assert (single["lift_ci_low"], single["lift_ci_high"]) == pytest.approx((0.2, 0.2))
    zeros = bootstrap_lift_ci([0.0, 0.0, 1.0], [1.0, 2.0, 3.0], n_boot=500)
    assert zeros["lift_undefined_resamples"] > 0
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_lift_ci(a, b, n_boot=0)


def test_bootstrap_and_welch_agree_on_large_samples() -> None:
    rng = np.random.default_rng(3)
    a = rng.lognormal(3.5, 0.7, 6000)
    b = rng.lognormal(3.55, 0.7, 5000)
    welch = welch_test(a, b)
    boot = bootstrap_lift_ci(a, b, n_boot=2000)
    width = welch["ci_high"] - welch["ci_low"]
    assert boot["diff_ci_low"] == pytest.approx(welch["ci_low"], abs=0.05 * width)
    assert boot["diff_ci_high"] == pytest.approx(welch["ci_high"], abs=0.05 * width)
    lift_width = welch["lift_ci_high"] - welch["lift_ci_low"]
    assert boot["lift_ci_low"] == pytest.approx(welch["lift_ci_low"], abs=0.05 * lift_width)
    assert boot["lift_ci_high"] == pytest.approx(welch["lift_ci_high"], abs=0.05 * lift_width)


# --- SRM, sample size, CUPED --------------------------------------------------------------


def test_srm_hand_case_and_scipy() -> None:
    # 60 / 40 against 50 / 50: chi2 = (10^2 + 10^2) / 50 = 4, df 1.
    result = srm_check({"A": 60, "B": 40}, {"A": 0.5, "B": 0.5})
    assert result["chi2"] == pytest.approx(4.0)
    assert result["p_value"] == pytest.approx(stats.chi2.sf(4.0, 1))
    assert not result["mismatch"]  # p = 0.046 is no mismatch at alpha 0.001
    rng = np.random.default_rng(5)
    for _ in range(5):
        counts = rng.integers(50, 5000, 3)
        shares = rng.uniform(1, 3, 3)
        ours = srm_check(
            dict(zip("xyz", counts, strict=True)), dict(zip("xyz", shares, strict=True))
        )
        theirs = stats.chisquare(counts, counts.sum() * shares / shares.sum())
        assert ours["chi2"] == pytest.approx(theirs.statistic, rel=1e-10)
        assert ours["p_value"] == pytest.approx(theirs.pvalue, rel=1e-8, abs=1e-300)


def test_srm_mismatch_and_errors() -> None:
    assert srm_check({"A": 5200, "B": 4800}, {"A": 1, "B": 1})["mismatch"]
    assert not srm_check({"A": 5050, "B": 4950}, {"A": 1, "B": 1})["mismatch"]
    assert srm_check({"A": 100, "B": 0}, {"A": 0.5, "B": 0.5})["mismatch"]
    with pytest.raises(ValueError, match="different variants"):
        srm_check({"A": 1, "B": 2}, {"A": 0.5, "C": 0.5})
    with pytest.raises(ValueError, match="positive"):
        srm_check({"A": 1, "B": 2}, {"A": 0.0, "B": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        srm_check({"A": 0, "B": 0}, {"A": 0.5, "B": 0.5})


def test_sample_size_hand_case() -> None:
    # 2 * (1.959964 + 0.841621)^2 * 1^2 / 0.1^2 = 1569.8 -> 1570.
    assert sample_size_per_variant(1.0, 1.0, 0.1) == 1570
    assert sample_size_per_variant(10.0, 10.0, 0.1) == 1570  # only sd / (mean * mde) matters
    assert sample_size_per_variant(1.0, 1.0, -0.1) == 1570  # a decrease is as hard to see
    assert sample_size_per_variant(1.0, 1.0, 0.05) > 4 * 1569
    assert sample_size_per_variant(1.0, 1.0, 0.1, power=0.9) > 1570
    assert sample_size_per_variant(1.0, 0.0, 0.1) == 2
    with pytest.raises(ValueError, match="baseline_mean"):
        sample_size_per_variant(0.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="power"):
        sample_size_per_variant(1.0, 1.0, 0.1, power=1.0)


def test_cuped_keeps_the_mean_and_reduces_variance() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(50, 10, 2000)  # pre-period spend
    y = 0.8 * x + rng.normal(0, 5, 2000)
    adjusted = cuped_adjust(y, x)
    assert adjusted.mean() == pytest.approx(y.mean())
    assert adjusted.var() < 0.3 * y.var()
    assert np.array_equal(cuped_adjust(y, np.ones_like(y)), y)
    with pytest.raises(ValueError, match="same length"):
        cuped_adjust(y, x[:-1])


# --- The full report ----------------------------------------------------------------------


def test_known_effect_is_detected() -> None:
    assignments, orders = _experiment(np.random.default_rng(2024), orders_per_arm=5000, lift=0.1)
    report = analyse_aov_test(assignments, orders, control="control", treatment="treatment")
    json.dumps(report, allow_nan=False)  # JSON-serialisable, no NaN
    assert report["verdict"] == SIGNIFICANT_IMPROVEMENT
    assert report["p_value"] < 1e-6
    welch, boot = report["aov"]["welch"], report["aov"]["bootstrap"]
    assert welch["lift_ci_low"] < 0.1 < welch["lift_ci_high"]
    assert boot["lift_ci_low"] < 0.1 < boot["lift_ci_high"]
    assert boot["lift_ci_low"] == pytest.approx(welch["lift_ci_low"], abs=0.005)
    assert boot["lift_ci_high"] == pytest.approx(welch["lift_ci_high"], abs=0.005)
    assert report["sample_size"]["reached"]
    assert not report["srm"]["mismatch"]
    assert report["variants"]["treatment"][ORDERS] == 5000


def test_regression_and_inconclusive() -> None:
    rng = np.random.default_rng(7)
    assignments, orders = _experiment(rng, orders_per_arm=5000, lift=-0.1)
    report = analyse_aov_test(assignments, orders, control="control", treatment="treatment")
    assert report["verdict"] == SIGNIFICANT_REGRESSION
    assignments, orders = _experiment(rng, orders_per_arm=5000, lift=0.0)
    report = analyse_aov_test(assignments, orders, control="control", treatment="treatment")
    assert report["verdict"] == INCONCLUSIVE, report["reason"]
    assert "not significant" in report["reason"]


def test_underpowered_cases() -> None:
    rng = np.random.default_rng(8)
    assignments, orders = _experiment(rng, orders_per_arm=200, lift=0.3)
    report = analyse_aov_test(assignments, orders, control="control", treatment="treatment")
    assert report["verdict"] == UNDERPOWERED  # 200 orders < the required size for 5%
    assert not report["sample_size"]["reached"]
    assert "keep the test running" in report["reason"]

    assignments, orders = _hand_fixture()
    no_orders = orders[orders[c.USER_ID] != "u4"]
    report = analyse_aov_test(assignments, no_orders, control="A", treatment="B")
    assert report["verdict"] == UNDERPOWERED
    assert report["p_value"] is None and report["aov"]["welch"] is None
    assert "'B' has 0 order(s)" in report["reason"]
    json.dumps(report, allow_nan=False)
    single = orders[orders[c.ORDER_ID] != "o5"]
    report = analyse_aov_test(assignments, single, control="A", treatment="B")
    assert report["verdict"] == UNDERPOWERED
    assert "'B' has 1 order(s)" in report["reason"]


def test_report_errors_and_srm_warning() -> None:
    assignments, orders = _hand_fixture()
    with pytest.raises(ValueError, match="'C' has no assigned customers"):
        analyse_aov_test(assignments, orders, control="A", treatment="C")
    with pytest.raises(ValueError, match="must differ"):
        analyse_aov_test(assignments, orders, control="A", treatment="A")
    with pytest.raises(ValueError, match="not in expected_shares"):
        analyse_aov_test(
            assignments, orders, control="A", treatment="B", expected_shares={"A": 1.0}
        )
    rng = np.random.default_rng(9)
    assignments, orders = _experiment(rng, orders_per_arm=4000, lift=0.0)
    dropped = assignments.index[assignments[VARIANT] == "treatment"][:300]
    report = analyse_aov_test(
        assignments.drop(dropped), orders, control="control", treatment="treatment"
    )
    assert report["srm"]["mismatch"]
    assert "Sample-ratio mismatch" in report["reason"]
    assert report["exclusions"]["orders_unassigned"] == 600  # the dropped customers' orders
    # With the planned 55 / 45 split the same counts are no mismatch.
    report = analyse_aov_test(
        assignments.drop(dropped),
        orders,
        control="control",
        treatment="treatment",
        expected_shares={"control": 2000, "treatment": 1700},
    )
    assert not report["srm"]["mismatch"]


def test_false_positive_rate_of_aa_tests() -> None:
    """400 A/A experiments on skewed order values: Welch rejects at about alpha."""
    rng = np.random.default_rng(c.SEED)
    n_experiments, n_orders, alpha = 400, 500, 0.05
    a = rng.lognormal(3.5, 0.8, (n_experiments, n_orders))
    b = rng.lognormal(3.5, 0.8, (n_experiments, n_orders))
    result = welch_from_moments(
        a.mean(axis=1),
        a.var(axis=1, ddof=1),
        n_orders,
        b.mean(axis=1),
        b.var(axis=1, ddof=1),
        n_orders,
        alpha=alpha,
    )
    rate = float((result["p_value"] < alpha).mean())
    coverage = float(((result["ci_low"] <= 0) & (result["ci_high"] >= 0)).mean())
    print(f"A/A false-positive rate at alpha {alpha}: {rate:.4f}; CI coverage {coverage:.4f}")
    assert 0.025 <= rate <= 0.08
    assert coverage == pytest.approx(1 - rate)
