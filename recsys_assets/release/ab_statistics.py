"""Statistics of A/B tests on average order value (AOV): pure, typed, numpy/pandas/scipy.

Inputs are two tables:

- an **assignment log**, one row per customer and variant: ``user_id``, ``variant`` and
  ``assigned_at`` (when the customer first saw the variant);
- **orders**: ``user_id``, ``order_id``, ``order_value`` and ``event_ts``.

Column names are keyword arguments with defaults (as in Microsoft Recommenders' metric
functions), from :mod:`recsys_assets.core.constants` where a name exists there, else from the
constants at the top of this module.

Attribution (:func:`attributed_orders`), never silent: every row left out is counted in
``frame.attrs["exclusions"]`` and in the report of :func:`analyse_aov_test`:

- a customer assigned to two or more variants is contaminated: left out with all their orders;
- repeated assignment rows of one customer and variant keep the earliest ``assigned_at``;
- orders of customers not in the assignment log, orders placed before the customer's
  assignment, and orders without a value or a timestamp are left out;
- rows sharing a customer and ``order_id`` are lines of one order: their values are summed.

The figures (formulas and verdict rules in ``docs/ab-testing.md``):

- :func:`variant_summary`: customers, converting customers, orders, conversion, AOV and
  revenue per assigned customer, per variant;
- :func:`welch_test`: Welch's unequal-variance t test of a difference of means, with its CI and
  a delta-method CI of the relative lift; :func:`welch_from_moments` is the same arithmetic,
  vectorised over many experiments;
- :func:`bootstrap_lift_ci`: seeded percentile bootstrap CIs of the relative lift and the
  difference;
- :func:`srm_check`: chi-square sample-ratio-mismatch test of the assignment counts;
- :func:`sample_size_per_variant`: orders per variant needed to detect a relative effect;
- :func:`cuped_adjust`: CUPED variance reduction with a pre-experiment covariate;
- :func:`analyse_aov_test`: all of it, as a JSON-serialisable report with a plain verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from recsys_assets.core import constants as c
from recsys_assets.core.jsonable import json_safe

# Column names that recsys_assets.core.constants does not define.
VARIANT = "variant"  # the variant a customer was assigned to
ASSIGNED_AT = "assigned_at"  # when the customer was assigned (first exposure)
ORDER_VALUE = "order_value"  # money of one order (source currency)

# Columns of variant_summary's frame (index: the variant).
CUSTOMERS = "customers"
CUSTOMERS_WITH_ORDERS = "customers_with_orders"
ORDERS = "orders"
CONVERSION = "conversion"
AOV = "aov"
REVENUE = "revenue"
REVENUE_PER_CUSTOMER = "revenue_per_customer"
SUMMARY_COLUMNS: tuple[str, ...] = (
    CUSTOMERS,
    CUSTOMERS_WITH_ORDERS,
    ORDERS,
    CONVERSION,
    AOV,
    REVENUE,
    REVENUE_PER_CUSTOMER,
)

# Verdicts of analyse_aov_test.
SIGNIFICANT_IMPROVEMENT = "significant improvement"
SIGNIFICANT_REGRESSION = "significant regression"
INCONCLUSIVE = "inconclusive"
UNDERPOWERED = "underpowered"
VERDICTS: tuple[str, ...] = (
    SIGNIFICANT_IMPROVEMENT,
    SIGNIFICANT_REGRESSION,
    INCONCLUSIVE,
    UNDERPOWERED,
)

# Keys of the exclusion counts (attrs["exclusions"] of attributed_orders / variant_summary).
EXCLUSION_KEYS: tuple[str, ...] = (
    "assignment_rows_incomplete",  # assignment rows without a customer or a variant
    "assignment_rows_repeated",  # extra rows of a customer already assigned to that variant
    "customers_in_several_variants",  # contaminated customers, left out
    "orders_of_customers_in_several_variants",
    "orders_unassigned",  # customer not in the assignment log
    "orders_before_assignment",
    "orders_incomplete",  # no value or no timestamp
    "order_lines_merged",  # rows folded into an order with the same customer and order id
)

_BOOT_CHUNK_ELEMENTS = 2_000_000  # resampled values held in memory at once by the bootstrap


def _require(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise KeyError(f"{name} lacks column(s) {missing}; it has {list(frame.columns)}")


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {alpha!r}")
    return float(alpha)


def _sample(values: Any, name: str, minimum: int) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if array.size < minimum:
        raise ValueError(f"{name} needs at least {minimum} observation(s), got {array.size}")
    return array


def _float(value: Any) -> float | None:
    """A Python float, or None for NaN / infinity (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """Numpy scalars to Python, NaN / inf to None, tuples to lists, recursively."""
    return json_safe(value)


# --- Attribution and the per-variant summary ----------------------------------------------


def _customers(
    assignments: pd.DataFrame,
    exclusions: dict[str, int],
    *,
    col_user: str,
    col_variant: str,
    col_assigned_at: str,
) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per validly assigned customer (user, variant, earliest assignment time), and
    the customers assigned to several variants."""
    _require(assignments, (col_user, col_variant, col_assigned_at), "assignments")
    frame = assignments[[col_user, col_variant, col_assigned_at]]
    complete = frame[col_user].notna() & frame[col_variant].notna()
    exclusions["assignment_rows_incomplete"] = int((~complete).sum())
    frame = frame.loc[complete].copy()
    frame[col_assigned_at] = pd.to_datetime(frame[col_assigned_at])
    first = frame.groupby([col_user, col_variant], sort=False, as_index=False)[
        col_assigned_at
    ].min()
    exclusions["assignment_rows_repeated"] = len(frame) - len(first)
    n_variants = first.groupby(col_user, sort=False)[col_variant].transform("size")
    contaminated = first.loc[n_variants > 1, col_user].unique()
    exclusions["customers_in_several_variants"] = len(contaminated)
    return first.loc[n_variants == 1].reset_index(drop=True), contaminated


def _attribute(
    assignments: pd.DataFrame,
    orders: pd.DataFrame,
    *,
    col_user: str = c.USER_ID,
    col_variant: str = VARIANT,
    col_assigned_at: str = ASSIGNED_AT,
    col_order: str = c.ORDER_ID,
    col_value: str = ORDER_VALUE,
    col_ts: str = c.EVENT_TS,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """(attributed orders, assigned customers, exclusion counts): see attributed_orders."""
    exclusions = dict.fromkeys(EXCLUSION_KEYS, 0)
    customers, contaminated = _customers(
        assignments,
        exclusions,
        col_user=col_user,
        col_variant=col_variant,
        col_assigned_at=col_assigned_at,
    )
    _require(orders, (col_user, col_order, col_value, col_ts), "orders")
    frame = orders[[col_user, col_order, col_value, col_ts]].copy()
    frame[col_ts] = pd.to_datetime(frame[col_ts])
    incomplete = frame[col_value].isna() | frame[col_ts].isna() | frame[col_user].isna()
    exclusions["orders_incomplete"] = int(incomplete.sum())
    frame = frame.loc[~incomplete]

    # Lines of one order (same customer and order id) become one order; rows without an order
    # id are each an order of their own.
    has_id = frame[col_order].notna()
    merged = frame.loc[has_id].groupby([col_user, col_order], sort=False, as_index=False)
    merged = merged.agg(**{col_value: (col_value, "sum"), col_ts: (col_ts, "min")})
    exclusions["order_lines_merged"] = int(has_id.sum()) - len(merged)
    frame = pd.concat([merged, frame.loc[~has_id]], ignore_index=True)

    in_several = frame[col_user].isin(contaminated)
    exclusions["orders_of_customers_in_several_variants"] = int(in_several.sum())
    frame = frame.loc[~in_several]

    joined = frame.merge(customers, on=col_user, how="left")
    unassigned = joined[col_variant].isna()
    exclusions["orders_unassigned"] = int(unassigned.sum())
    joined = joined.loc[~unassigned]
    before = joined[col_ts] < joined[col_assigned_at]
    exclusions["orders_before_assignment"] = int(before.sum())
    joined = joined.loc[~before].reset_index(drop=True)
    joined[col_value] = joined[col_value].astype(float)
    return joined, customers[[col_user, col_variant]], exclusions


def attributed_orders(
    assignments: pd.DataFrame,
    orders: pd.DataFrame,
    *,
    col_user: str = c.USER_ID,
    col_variant: str = VARIANT,
    col_assigned_at: str = ASSIGNED_AT,
    col_order: str = c.ORDER_ID,
    col_value: str = ORDER_VALUE,
    col_ts: str = c.EVENT_TS,
) -> pd.DataFrame:
    """The orders that count in the test, one row per order, with the customer's variant.

    Orders are attributed to the variant the customer was assigned to, from the assignment
    on; the rows left out (see the module docstring) are counted in ``attrs["exclusions"]`` so
    that a report can say how much of the data the figures do not cover.
    """
    joined, _, exclusions = _attribute(
        assignments,
        orders,
        col_user=col_user,
        col_variant=col_variant,
        col_assigned_at=col_assigned_at,
        col_order=col_order,
        col_value=col_value,
        col_ts=col_ts,
    )
    joined.attrs["exclusions"] = exclusions
    return joined


def _summary(
    customers: pd.DataFrame,
    attributed: pd.DataFrame,
    *,
    col_user: str,
    col_variant: str,
    col_value: str,
) -> pd.DataFrame:
    n_customers = customers.groupby(col_variant).size()
    per_variant = attributed.groupby(col_variant)
    summary = pd.DataFrame({CUSTOMERS: n_customers})
    summary[CUSTOMERS_WITH_ORDERS] = per_variant[col_user].nunique()
    summary[ORDERS] = per_variant.size()
    summary[REVENUE] = per_variant[col_value].sum()
    summary = summary.fillna({CUSTOMERS_WITH_ORDERS: 0, ORDERS: 0, REVENUE: 0.0})
    summary[[CUSTOMERS, CUSTOMERS_WITH_ORDERS, ORDERS]] = summary[
        [CUSTOMERS, CUSTOMERS_WITH_ORDERS, ORDERS]
    ].astype(int)
    summary[CONVERSION] = summary[CUSTOMERS_WITH_ORDERS] / summary[CUSTOMERS]
    orders = summary[ORDERS].where(summary[ORDERS] > 0)  # AOV of a variant without orders: NaN
    summary[AOV] = summary[REVENUE] / orders
    summary[REVENUE_PER_CUSTOMER] = summary[REVENUE] / summary[CUSTOMERS]
    summary.index.name = col_variant
    return summary[list(SUMMARY_COLUMNS)]


def variant_summary(
    assignments: pd.DataFrame,
    orders: pd.DataFrame,
    *,
    col_user: str = c.USER_ID,
    col_variant: str = VARIANT,
    col_assigned_at: str = ASSIGNED_AT,
    col_order: str = c.ORDER_ID,
    col_value: str = ORDER_VALUE,
    col_ts: str = c.EVENT_TS,
) -> pd.DataFrame:
    """Per variant: customers, customers_with_orders, orders, conversion, aov, revenue and
    revenue_per_customer.

    ``conversion`` is the share of assigned customers with at least one order, ``aov`` the mean
    order value (NaN for a variant without orders), ``revenue_per_customer`` the revenue over
    *all* assigned customers (zeros included), so it combines conversion and AOV. Every variant
    of the assignment log has a row; ``attrs["exclusions"]`` counts the rows left out.
    """
    attributed, customers, exclusions = _attribute(
        assignments,
        orders,
        col_user=col_user,
        col_variant=col_variant,
        col_assigned_at=col_assigned_at,
        col_order=col_order,
        col_value=col_value,
        col_ts=col_ts,
    )
    summary = _summary(
        customers,
        attributed,
        col_user=col_user,
        col_variant=col_variant,
        col_value=col_value,
    )
    summary.attrs["exclusions"] = exclusions
    return summary


# --- Welch's t test -----------------------------------------------------------------------


def welch_from_moments(
    mean_a: Any,
    var_a: Any,
    n_a: Any,
    mean_b: Any,
    var_b: Any,
    n_b: Any,
    *,
    alpha: float = 0.05,
) -> dict[str, np.ndarray]:
    """Welch's t test from the samples' means, unbiased variances and sizes (broadcasting).

    Vectorised so that thousands of simulated experiments cost one call. Two zero-variance
    samples have a standard error of 0: t is 0 (equal means, p = 1) or +-inf (p = 0), the
    degrees of freedom fall back to ``n_a + n_b - 2`` and the CI collapses to the difference.
    """
    alpha = _check_alpha(alpha)
    mean_a, var_a, n_a, mean_b, var_b, n_b = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (mean_a, var_a, n_a, mean_b, var_b, n_b))
    )
    se2_a, se2_b = var_a / n_a, var_b / n_b
    se2 = se2_a + se2_b
    se = np.sqrt(se2)
    diff = mean_b - mean_a
    zero = se2 == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(zero, np.where(diff == 0, 0.0, np.sign(diff) * np.inf), diff / se)
        df = np.where(zero, n_a + n_b - 2, se2**2 / (se2_a**2 / (n_a - 1) + se2_b**2 / (n_b - 1)))
        p_value = 2.0 * stats.t.sf(np.abs(t), df)
        q = stats.t.ppf(1.0 - alpha / 2.0, df)
        half = q * se
        # Relative lift b / a - 1 and its delta-method standard error (control mean random too).
        lift = np.where(mean_a != 0, diff / mean_a, np.nan)
        se_lift = np.sqrt(se2_b / mean_a**2 + mean_b**2 * se2_a / mean_a**4)
        half_lift = np.where(mean_a != 0, q * se_lift, np.nan)
    return {
        "difference": diff,
        "lift": lift,
        "se": se,
        "t": t,
        "df": df,
        "p_value": p_value,
        "ci_low": diff - half,
        "ci_high": diff + half,
        "lift_ci_low": lift - half_lift,
        "lift_ci_high": lift + half_lift,
    }


def welch_test(a: Any, b: Any, *, alpha: float = 0.05) -> dict[str, float | int | None]:
    """Welch's two-sided t test of ``mean(b) - mean(a)`` (b: treatment, a: control).

    Welch, not Student: order values of two variants rarely share a variance, and Welch keeps
    its false-positive rate when they do not. Returns the difference, the relative ``lift``
    (``mean_b / mean_a - 1``; None when ``mean_a`` is 0), t, the Welch-Satterthwaite ``df``,
    the p-value, the (1 - alpha) CI of the difference and a delta-method CI of the lift.
    """
    a = _sample(a, "sample a", 2)
    b = _sample(b, "sample b", 2)
    result = welch_from_moments(
        a.mean(), a.var(ddof=1), a.size, b.mean(), b.var(ddof=1), b.size, alpha=alpha
    )
    report: dict[str, float | int | None] = {
        "n_a": int(a.size),
        "n_b": int(b.size),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "sd_a": float(a.std(ddof=1)),
        "sd_b": float(b.std(ddof=1)),
        "alpha": alpha,
    }
    for key, value in result.items():
        if key in ("t", "p_value"):  # +-inf t is meaningful (zero variance, different means)
            report[key] = float(value)
        else:
            report[key] = _float(value)
    return report


# --- Bootstrap ----------------------------------------------------------------------------


def _boot_means(
    values: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int
) -> np.ndarray:
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        index = rng.integers(0, values.size, size=(stop - start, values.size))
        means[start:stop] = values[index].mean(axis=1)
    return means


def bootstrap_lift_ci(
    a: Any, b: Any, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = c.SEED
) -> dict[str, float | int | None]:
    """Seeded percentile bootstrap CIs of the relative lift ``mean_b / mean_a - 1`` and of
    the difference ``mean_b - mean_a``.

    A check on Welch that assumes no normality: each arm is resampled with replacement on its
    own (vectorised, in chunks of at most ~2M values). Resamples whose control mean is 0 have
    no lift; they are left out of the lift CI and counted in ``lift_undefined_resamples``.
    """
    a = _sample(a, "sample a", 1)
    b = _sample(b, "sample b", 1)
    alpha = _check_alpha(alpha)
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    n_boot = int(n_boot)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // max(a.size, b.size))
    means_a = _boot_means(a, n_boot, rng, chunk)
    means_b = _boot_means(b, n_boot, rng, chunk)
    quantiles = [alpha / 2.0, 1.0 - alpha / 2.0]
    diff_low, diff_high = np.quantile(means_b - means_a, quantiles)
    defined = means_a != 0
    lift_low = lift_high = float("nan")
    if defined.any():
        lifts = means_b[defined] / means_a[defined] - 1.0
        lift_low, lift_high = np.quantile(lifts, quantiles)
    mean_a = a.mean()
    return {
        "n_boot": n_boot,
        "alpha": alpha,
        "seed": seed,
        "difference": float(b.mean() - mean_a),
        "diff_ci_low": float(diff_low),
        "diff_ci_high": float(diff_high),
        "lift": _float(b.mean() / mean_a - 1.0) if mean_a != 0 else None,
        "lift_ci_low": _float(lift_low),
        "lift_ci_high": _float(lift_high),
        "lift_undefined_resamples": int((~defined).sum()),
    }


# --- Sample-ratio mismatch, sample size, CUPED ----------------------------------------------


def srm_check(
    counts: Mapping[str, int], expected_shares: Mapping[str, float], *, alpha: float = 0.001
) -> dict[str, Any]:
    """Chi-square goodness-of-fit test of the assigned counts against the planned shares.

    A sample-ratio mismatch (p < alpha; 0.001 by convention, since the check runs on every
    test) means the assignment or the logging is broken, and every other figure is suspect.
    Shares are normalised to sum to 1; the variants of both mappings must be the same.
    """
    alpha = _check_alpha(alpha)
    if set(counts) != set(expected_shares):
        raise ValueError(
            f"counts and expected_shares name different variants: counts {sorted(counts)}, "
            f"expected_shares {sorted(expected_shares)}"
        )
    if len(counts) < 2:
        raise ValueError(f"an SRM check needs at least 2 variants, got {sorted(counts)}")
    names = list(counts)
    observed = np.array([counts[name] for name in names], dtype=float)
    shares = np.array([expected_shares[name] for name in names], dtype=float)
    if (observed < 0).any() or (observed != np.round(observed)).any():
        raise ValueError(f"counts must be non-negative integers, got {dict(counts)}")
    if not np.isfinite(shares).all() or (shares <= 0).any():
        raise ValueError(f"expected shares must be positive, got {dict(expected_shares)}")
    total = observed.sum()
    if total == 0:
        raise ValueError("an SRM check needs at least one assigned customer")
    expected = total * shares / shares.sum()
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    df = len(names) - 1
    p_value = float(stats.chi2.sf(chi2, df))
    return {
        "observed": {name: int(x) for name, x in zip(names, observed, strict=True)},
        "expected": {name: float(x) for name, x in zip(names, expected, strict=True)},
        "chi2": chi2,
        "df": df,
        "p_value": p_value,
        "alpha": alpha,
        "mismatch": p_value < alpha,
    }


def sample_size_per_variant(
    baseline_mean: float,
    baseline_sd: float,
    mde_relative: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Observations per variant for a two-sided two-sample test to detect a relative change
    ``mde_relative`` of the mean with the given power (normal approximation, equal variances):
    ``n = 2 * (z_{1-alpha/2} + z_{power})^2 * sd^2 / (mean * mde)^2``, rounded up, at least 2.
    """
    alpha = _check_alpha(alpha)
    power = _check_alpha(power, "power")
    if not math.isfinite(baseline_mean) or baseline_mean == 0:
        raise ValueError(f"baseline_mean must be finite and non-zero, got {baseline_mean!r}")
    if not math.isfinite(baseline_sd) or baseline_sd < 0:
        raise ValueError(f"baseline_sd must be finite and >= 0, got {baseline_sd!r}")
    if not math.isfinite(mde_relative) or mde_relative == 0:
        raise ValueError(f"mde_relative must be finite and non-zero, got {mde_relative!r}")
    delta = abs(baseline_mean * mde_relative)
    z = stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)
    n = 2.0 * z**2 * baseline_sd**2 / delta**2
    return max(2, math.ceil(n - 1e-9))


def cuped_adjust(y: Any, x: Any) -> np.ndarray:
    """CUPED: ``y - theta * (x - mean(x))`` with ``theta = cov(x, y) / var(x)`` on the pooled
    data of all variants.

    ``x`` is a pre-experiment covariate of the same units (e.g. each customer's spend before
    assignment); the adjusted metric keeps the mean of ``y`` and loses the variance that ``x``
    explains, so the same test needs fewer observations. Constant ``x``: theta is 0.
    """
    y = _sample(y, "y", 2)
    x = _sample(x, "x", 2)
    if x.size != y.size:
        raise ValueError(f"y and x must have the same length, got {y.size} and {x.size}")
    var_x = x.var(ddof=1)
    theta = 0.0 if var_x == 0 else float(np.cov(x, y, ddof=1)[0, 1] / var_x)
    return y - theta * (x - x.mean())


# --- The full report ----------------------------------------------------------------------


def _verdict(
    *,
    control: str,
    treatment: str,
    n_control: int,
    n_treatment: int,
    welch: dict[str, Any] | None,
    required: int | None,
    alpha: float,
    mde_relative: float,
) -> tuple[str, str]:
    if welch is None:
        fewest = min((n_control, control), (n_treatment, treatment))
        return UNDERPOWERED, (
            f"Variant '{fewest[1]}' has {fewest[0]} order(s); comparing AOV needs at least 2 "
            "orders in each variant."
        )
    p, lift = welch["p_value"], welch["lift"]
    lift_text = "n/a" if lift is None else f"{lift:+.1%}"
    if required is not None and min(n_control, n_treatment) < required:
        return UNDERPOWERED, (
            f"Only {min(n_control, n_treatment)} orders in the smaller variant, fewer than the "
            f"{required} per variant needed to detect a {mde_relative:.0%} change in AOV; the "
            f"interim AOV lift is {lift_text} (p = {p:.3g}), but stopping before the planned "
            "size inflates false positives, so keep the test running."
        )
    if p < alpha:
        direction = SIGNIFICANT_IMPROVEMENT if welch["difference"] > 0 else SIGNIFICANT_REGRESSION
        word = "higher" if welch["difference"] > 0 else "lower"
        return direction, (
            f"AOV of '{treatment}' is {word} than '{control}' by {lift_text} (p = {p:.3g} < "
            f"alpha = {alpha:g}; {1 - alpha:.0%} CI of the difference "
            f"[{welch['ci_low']:.4g}, {welch['ci_high']:.4g}])."
        )
    if required is None:  # control AOV of 0: no relative effect to size the test for
        return INCONCLUSIVE, (
            f"The AOV difference is not significant (p = {p:.3g} >= alpha = {alpha:g})."
        )
    return INCONCLUSIVE, (
        f"The AOV lift of {lift_text} is not significant (p = {p:.3g} >= alpha = {alpha:g}) "
        f"although each variant has the {required} orders needed to detect a {mde_relative:.0%} "
        "change: any true effect is likely smaller than the minimum detectable effect."
    )


def analyse_aov_test(
    assignments: pd.DataFrame,
    orders: pd.DataFrame,
    *,
    control: str,
    treatment: str,
    alpha: float = 0.05,
    mde_relative: float = 0.05,
    power: float = 0.8,
    expected_shares: Mapping[str, float] | None = None,
    srm_alpha: float = 0.001,
    n_boot: int = 2000,
    seed: int = c.SEED,
    col_user: str = c.USER_ID,
    col_variant: str = VARIANT,
    col_assigned_at: str = ASSIGNED_AT,
    col_order: str = c.ORDER_ID,
    col_value: str = ORDER_VALUE,
    col_ts: str = c.EVENT_TS,
) -> dict[str, Any]:
    """The full report of an AOV test of ``treatment`` against ``control``, JSON-serialisable.

    Keys: ``variants`` (the :func:`variant_summary` rows), ``exclusions``, ``aov`` (means,
    lift, ``welch`` and ``bootstrap`` CIs), ``p_value``, ``revenue_per_customer`` (Welch on
    all assigned customers, zeros included: a secondary figure), ``srm``, ``sample_size`` and
    ``verdict`` with a ``reason`` sentence and ``warnings``. Verdict rules: fewer than 2 orders
    in a variant, or fewer orders than the required size, is "underpowered"; else p < alpha
    is a significant improvement or regression by the sign of the difference; else
    "inconclusive". ``expected_shares`` (default: equal) covers every assigned variant.
    """
    alpha = _check_alpha(alpha)
    if control == treatment:
        raise ValueError(f"control and treatment must differ, both are {control!r}")
    attributed, customers, exclusions = _attribute(
        assignments,
        orders,
        col_user=col_user,
        col_variant=col_variant,
        col_assigned_at=col_assigned_at,
        col_order=col_order,
        col_value=col_value,
        col_ts=col_ts,
    )
    summary = _summary(
        customers, attributed, col_user=col_user, col_variant=col_variant, col_value=col_value
    )
    known = [str(v) for v in summary.index]
    for role, name in (("control", control), ("treatment", treatment)):
        if name not in summary.index:
            raise ValueError(
                f"{role} variant {name!r} has no assigned customers; variants in the "
                f"assignments: {known}"
            )

    warnings: list[str] = []
    left_out = {key: n for key, n in exclusions.items() if n}
    if left_out:
        warnings.append(f"Rows left out of the analysis: {left_out}.")

    # Sample-ratio mismatch over every assigned variant.
    counts = {str(v): int(n) for v, n in summary[CUSTOMERS].items()}
    shares = dict.fromkeys(counts, 1.0) if expected_shares is None else dict(expected_shares)
    unplanned = sorted(set(counts) - set(shares))
    if unplanned:
        raise ValueError(
            f"variant(s) {unplanned} are in the assignments but not in expected_shares "
            f"{sorted(shares)}"
        )
    counts.update({name: 0 for name in shares if name not in counts})
    srm = srm_check(counts, shares, alpha=srm_alpha)
    if srm["mismatch"]:
        warnings.append(
            f"Sample-ratio mismatch (chi2 = {srm['chi2']:.3g}, p = {srm['p_value']:.3g} < "
            f"{srm_alpha:g}): the assignment or its logging is broken; do not trust the result "
            "until it is explained."
        )

    values = attributed.groupby(col_variant)[col_value]
    a = values.get_group(control).to_numpy() if control in values.groups else np.empty(0)
    b = values.get_group(treatment).to_numpy() if treatment in values.groups else np.empty(0)
    welch = welch_test(a, b, alpha=alpha) if min(a.size, b.size) >= 2 else None
    bootstrap = (
        bootstrap_lift_ci(a, b, n_boot=n_boot, alpha=alpha, seed=seed)
        if min(a.size, b.size) >= 2
        else None
    )

    # Revenue per assigned customer (zeros included): the customer is the randomised unit.
    revenue = attributed.groupby(col_user)[col_value].sum()
    per_customer = customers.assign(_revenue=customers[col_user].map(revenue).fillna(0.0))
    rev_a = per_customer.loc[per_customer[col_variant] == control, "_revenue"].to_numpy()
    rev_b = per_customer.loc[per_customer[col_variant] == treatment, "_revenue"].to_numpy()
    revenue_test = (
        welch_test(rev_a, rev_b, alpha=alpha) if min(rev_a.size, rev_b.size) >= 2 else None
    )

    required = None
    if a.size >= 2 and a.mean() != 0:
        required = sample_size_per_variant(
            float(a.mean()), float(a.std(ddof=1)), mde_relative, alpha=alpha, power=power
        )
    verdict, reason = _verdict(
        control=control,
        treatment=treatment,
        n_control=int(a.size),
        n_treatment=int(b.size),
        welch=welch,
        required=required,
        alpha=alpha,
        mde_relative=mde_relative,
    )
    report = {
        "control": control,
        "treatment": treatment,
        "alpha": alpha,
        "variants": summary.to_dict(orient="index"),
        "exclusions": exclusions,
        "aov": {
            "control": a.mean() if a.size else None,
            "treatment": b.mean() if b.size else None,
            "difference": welch["difference"] if welch else None,
            "lift": welch["lift"] if welch else None,
            "welch": welch,
            "bootstrap": bootstrap,
        },
        "p_value": welch["p_value"] if welch else None,
        "revenue_per_customer": revenue_test,
        "srm": srm,
        "sample_size": {
            "mde_relative": mde_relative,
            "power": power,
            "required_orders_per_variant": required,
            "orders_control": int(a.size),
            "orders_treatment": int(b.size),
            "reached": required is not None and min(a.size, b.size) >= required,
        },
        "verdict": verdict,
        "reason": reason + (" " + " ".join(warnings) if srm["mismatch"] else ""),
        "warnings": warnings,
    }
    return _jsonable(report)
