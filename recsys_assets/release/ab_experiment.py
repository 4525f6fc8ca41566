"""The live A/B test of the recommender on business value, from the service's own logs.

The statistics live in :mod:`recsys_assets.release.ab_statistics`; this module turns the served log
and
the feedback log into its inputs and writes the report (``docs/ab-testing.md``):

- :func:`assignments`: the assignment log, one row per customer (``customer_id``, ``variant``,
  ``first_seen``) from the served records that carry a variant. A customer served in two or
  more variants is a broken assignment: left out and counted in ``attrs["conflicts"]``.
- :func:`outcomes`: the purchases of the assigned customers, attributed to their variant from
  ``first_seen`` on, as one **long frame** (see its docstring): a row per (customer, order),
  and one row without an order for a customer who bought nothing.
- :func:`experiment_report`: per variant customers, orders, conversion, AOV (with a t CI) and
  revenue per customer; the AOV lift of the challenger over the champion with Welch's test and
  a bootstrap CI, the sample-ratio-mismatch check against the planned share, the sample size
  needed for the minimum detectable effect and ab_statistics' verdict. JSON-serialisable; with
  no variant in the logs it says "no experiment data" instead of failing.
- :func:`write_ab_report`: a self-contained HTML page (plotly inlined) and the JSON beside it.

Pure: pandas, numpy, scipy and plotly (imported when a page is written), no Dagster.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from recsys_assets.core import constants as c
from recsys_assets.core.html import cell, escape, figures_html, page, table
from recsys_assets.release import ab_statistics as abtest

CUSTOMER = "customer_id"
VARIANT = abtest.VARIANT  # "variant"
FIRST_SEEN = "first_seen"  # first served record of the customer in their variant
ORDER_ID = "order_id"
ORDER_VALUE = abtest.ORDER_VALUE  # "order_value": the whole order's value
ORDER_TS = "order_ts"  # time of the order's first purchase line
ORDERS = "orders"
REVENUE = "revenue"

ASSIGNMENT_COLUMNS: tuple[str, ...] = (CUSTOMER, VARIANT, FIRST_SEEN)
OUTCOME_COLUMNS: tuple[str, ...] = (
    CUSTOMER,
    VARIANT,
    FIRST_SEEN,
    ORDERS,
    REVENUE,
    ORDER_ID,
    ORDER_VALUE,
    ORDER_TS,
)

# Variant names of the two roles, tried in this order when the caller names none.
CHAMPION = "champion"
CHALLENGER = "challenger"
KNOWN_ROLES: tuple[tuple[str, str], ...] = (
    (CHAMPION, CHALLENGER),
    ("control", "treatment"),
    ("A", "B"),
)

# Report status.
ANALYSED = "analysed"
NO_DATA = "no experiment data"
SINGLE_VARIANT = "single variant"

# Counts of outcomes' attrs["exclusions"].
OUTCOME_EXCLUSION_KEYS: tuple[str, ...] = (
    "purchase_lines_without_order_id",  # grouped into orders by customer and timestamp
    "orders_without_value",  # no order_value on any line: no AOV, left out
    "orders_with_inconsistent_value",  # lines disagree: the earliest line's value is kept
    "orders_of_conflicting_customers",  # customers served in several variants
    "orders_unassigned",  # customers never served with a variant
    "orders_before_assignment",  # placed before first_seen: the variant cannot have caused it
    "orders_outside_window",  # before start or at/after end
)

_HIST_BINS = 30
_HIST_QUANTILE = 0.99  # order values above this pooled quantile go into the last bin


def _utc(value: Any, name: str) -> pd.Timestamp | None:
    """None, or the bound as a UTC timestamp (a naive one is taken as UTC)."""
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} is not a time: {value!r}") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _utc_series(values: pd.Series) -> pd.Series:
    values = pd.to_datetime(values, utc=True, format="ISO8601") if len(values) else values
    return values.astype("datetime64[ns, UTC]")


def _require(frame: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise KeyError(f"{name} lacks column(s) {missing}; it has {list(frame.columns)}")


# --- Assignment log -----------------------------------------------------------------------


def current_experiment(
    served: pd.DataFrame, challenger_version: str, *, time_column: str = "ts"
) -> pd.DataFrame:
    """The served records of the experiment in force: from the first record the challenger
    (model ``challenger_version``) served on. Earlier records belong to an earlier experiment,
    whose other salt put customers in other variants (they would all count as conflicts), or to
    none. Without a record of the challenger yet: no record (the experiment has not begun)."""
    _require(served, (VARIANT, "model_version", time_column), "served")
    times = _utc_series(served[time_column])
    challenger = (served[VARIANT] == CHALLENGER) & (served["model_version"] == challenger_version)
    if not challenger.any():
        return served.iloc[0:0]
    return served.loc[times >= times[challenger].min()]


def current_phase(
    served: pd.DataFrame,
    phase_started_at: str | pd.Timestamp,
    *,
    settle_s: float = 0.0,
    time_column: str = "ts",
) -> pd.DataFrame:
    """The served records of the canary's current phase: from ``phase_started_at`` (when the
    share last changed) plus ``settle_s`` (how long the service may still route by the old
    share) on. A widened canary moves the customers whose hash lies between the old share and
    the new one from the champion to the challenger: across phases they would all be conflicts,
    and the sample-ratio check would hold the customers of every phase against the latest
    share. Within one phase every customer's variant is fixed, so the experiment is clean."""
    _require(served, (time_column,), "served")
    start = pd.Timestamp(phase_started_at)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    times = _utc_series(served[time_column])
    return served.loc[(times >= start + pd.Timedelta(seconds=settle_s)).to_numpy()]


def assignments(served: pd.DataFrame, *, time_column: str = "ts") -> pd.DataFrame:
    """The assignment log of a served frame (:meth:`ServedLog.read`): one row per customer
    with ``customer_id``, ``variant`` and ``first_seen`` (their first record in the variant).

    Records without a variant (no experiment running) are ignored. A customer served in two or
    more variants is a broken assignment: every figure of theirs would mix both arms, so they
    are left out; ``attrs["conflicts"]`` counts them and ``attrs["conflict_customers"]`` lists
    them. ``attrs["records"]`` / ``attrs["records_without_variant"]`` count the records read.

    ``time_column`` is the clock of ``first_seen``: the wall time ``ts`` (default, a live
    service), or ``as_of`` where the feedback carries a replay's or a simulation's clock.
    """
    _require(served, (CUSTOMER, VARIANT, time_column), "served")
    with_variant = served[VARIANT].notna() & served[CUSTOMER].notna()
    frame = served.loc[with_variant, [CUSTOMER, VARIANT, time_column]].copy()
    frame[time_column] = _utc_series(frame[time_column])
    frame[CUSTOMER] = frame[CUSTOMER].astype("string")
    frame[VARIANT] = frame[VARIANT].astype("string")
    first = frame.groupby([CUSTOMER, VARIANT], sort=False, as_index=False)[time_column].min()
    first = first.rename(columns={time_column: FIRST_SEEN})
    n_variants = first.groupby(CUSTOMER, sort=False)[VARIANT].transform("size")
    conflicting = sorted(first.loc[n_variants > 1, CUSTOMER].unique().tolist())
    result = (
        first.loc[n_variants == 1]
        .sort_values([FIRST_SEEN, CUSTOMER], kind="stable")
        .reset_index(drop=True)[list(ASSIGNMENT_COLUMNS)]
    )
    result.attrs = {
        "conflicts": len(conflicting),
        "conflict_customers": [str(customer) for customer in conflicting],
        "records": len(served),
        "records_without_variant": int((~with_variant).sum()),
    }
    return result


# --- Outcomes -----------------------------------------------------------------------------


def _orders_of(feedback: pd.DataFrame, exclusions: dict[str, int]) -> pd.DataFrame:
    """Purchase lines folded into orders: customer_id, order_id, order_value, order_ts."""
    _require(feedback, (CUSTOMER, "feedback_type", ORDER_ID, ORDER_VALUE, "ts"), "feedback")
    lines = feedback.loc[
        (feedback["feedback_type"] == "purchase").fillna(False).to_numpy(),
        [CUSTOMER, ORDER_ID, ORDER_VALUE, "ts"],
    ].copy()
    lines["ts"] = _utc_series(lines["ts"])
    lines[CUSTOMER] = lines[CUSTOMER].astype("string")
    lines[ORDER_ID] = lines[ORDER_ID].astype("string")
    lines[ORDER_VALUE] = lines[ORDER_VALUE].astype("float64")
    no_id = lines[ORDER_ID].isna()
    exclusions["purchase_lines_without_order_id"] = int(no_id.sum())
    # Lines of one checkout without an order id share the customer and the timestamp.
    lines["_key"] = lines[ORDER_ID].where(~no_id, "<no order id> " + lines["ts"].astype("string"))
    lines = lines.sort_values("ts", kind="stable")
    grouped = lines.groupby([CUSTOMER, "_key"], sort=False)
    orders = grouped.agg(
        **{
            ORDER_ID: (ORDER_ID, "first"),
            ORDER_VALUE: (ORDER_VALUE, "first"),  # first non-null, earliest line first
            ORDER_TS: ("ts", "min"),
            "_values": (ORDER_VALUE, "nunique"),
        }
    ).reset_index()
    exclusions["orders_with_inconsistent_value"] = int((orders["_values"] > 1).sum())
    no_value = orders[ORDER_VALUE].isna()
    exclusions["orders_without_value"] = int(no_value.sum())
    return orders.loc[~no_value, [CUSTOMER, ORDER_ID, ORDER_VALUE, ORDER_TS]]


def outcomes(
    feedback: pd.DataFrame,
    assigned: pd.DataFrame,
    *,
    start: datetime | pd.Timestamp | str | None = None,
    end: datetime | pd.Timestamp | str | None = None,
) -> pd.DataFrame:
    """What each assigned customer bought, as one long frame (columns :data:`OUTCOME_COLUMNS`).

    ``feedback`` is a feedback frame (:meth:`FeedbackLog.read`), ``assigned`` the frame of
    :func:`assignments`. Purchase lines of one ``order_id`` (per customer) are one order, with
    one ``order_value`` (the whole order's value, taken once, from its earliest line that has
    one) and ``order_ts`` its earliest line; purchase lines without an order id are grouped by
    customer and timestamp. An order counts for the customer's variant when it was placed at or
    after ``first_seen`` and in ``[start, end)`` (bounds optional; naive ones are UTC).

    Layout: one row per (customer, counted order), and a single row with ``order_id``,
    ``order_value`` and ``order_ts`` missing for an assigned customer without orders, so every
    assigned customer appears. ``orders`` and ``revenue`` are the customer's totals, repeated on
    each of their rows. :func:`per_customer` and :func:`per_order` give the two views.
    ``attrs["exclusions"]`` counts what was left out (:data:`OUTCOME_EXCLUSION_KEYS`).
    """
    _require(assigned, ASSIGNMENT_COLUMNS, "assigned")
    lower, upper = _utc(start, "start"), _utc(end, "end")
    exclusions = dict.fromkeys(OUTCOME_EXCLUSION_KEYS, 0)
    orders = _orders_of(feedback, exclusions)

    customers = assigned[list(ASSIGNMENT_COLUMNS)].copy()
    customers[CUSTOMER] = customers[CUSTOMER].astype("string")
    customers[FIRST_SEEN] = _utc_series(customers[FIRST_SEEN])
    joined = orders.merge(customers, on=CUSTOMER, how="left")
    unassigned = joined[VARIANT].isna()
    conflicting = set(assigned.attrs.get("conflict_customers", ()))
    of_conflicts = unassigned & joined[CUSTOMER].isin(conflicting)
    exclusions["orders_of_conflicting_customers"] = int(of_conflicts.sum())
    exclusions["orders_unassigned"] = int((unassigned & ~of_conflicts).sum())
    joined = joined.loc[~unassigned]
    before = joined[ORDER_TS] < joined[FIRST_SEEN]
    exclusions["orders_before_assignment"] = int(before.sum())
    joined = joined.loc[~before]
    outside = pd.Series(False, index=joined.index)
    if lower is not None:
        outside |= joined[ORDER_TS] < lower
    if upper is not None:
        outside |= joined[ORDER_TS] >= upper
    exclusions["orders_outside_window"] = int(outside.sum())
    counted = joined.loc[~outside]

    totals = counted.groupby(CUSTOMER).agg(
        **{ORDERS: (ORDER_VALUE, "size"), REVENUE: (ORDER_VALUE, "sum")}
    )
    customers[ORDERS] = customers[CUSTOMER].map(totals[ORDERS]).fillna(0).astype("int64")
    customers[REVENUE] = customers[CUSTOMER].map(totals[REVENUE]).fillna(0.0).astype(float)
    with_orders = customers.merge(
        counted[[CUSTOMER, ORDER_ID, ORDER_VALUE, ORDER_TS]], on=CUSTOMER, how="left"
    )
    frame = with_orders.sort_values([FIRST_SEEN, CUSTOMER, ORDER_TS], kind="stable")
    frame = frame.reset_index(drop=True)[list(OUTCOME_COLUMNS)]
    frame[ORDER_ID] = frame[ORDER_ID].astype("string")
    frame[ORDER_VALUE] = frame[ORDER_VALUE].astype("float64")
    frame[ORDER_TS] = frame[ORDER_TS].astype("datetime64[ns, UTC]")
    frame.attrs = {
        "exclusions": exclusions,
        "window": {
            "start": None if lower is None else lower.isoformat(),
            "end": None if upper is None else upper.isoformat(),
        },
    }
    return frame


def per_customer(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per assigned customer of an :func:`outcomes` frame: id, variant, first_seen,
    orders and revenue."""
    columns = [CUSTOMER, VARIANT, FIRST_SEEN, ORDERS, REVENUE]
    return frame.drop_duplicates(CUSTOMER)[columns].reset_index(drop=True)


def per_order(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per counted order of an :func:`outcomes` frame (customers without orders
    dropped): customer, variant, order_id (may be missing), order_value, order_ts."""
    columns = [CUSTOMER, VARIANT, ORDER_ID, ORDER_VALUE, ORDER_TS]
    return frame.loc[frame[ORDER_TS].notna(), columns].reset_index(drop=True)


# --- The report ---------------------------------------------------------------------------


def _roles(
    variants: list[str], champion: str | None, challenger: str | None
) -> tuple[str, str] | None:
    """(champion, challenger): the names given, a known pair present, or with exactly two
    variants and no known pair their alphabetical order. None with fewer than two variants."""
    if champion is not None and challenger is not None:
        if champion == challenger:
            raise ValueError(f"champion and challenger must differ, both are {champion!r}")
        return champion, challenger
    if champion is not None or challenger is not None:
        raise ValueError("name both champion and challenger, or neither")
    present = set(variants)
    for pair in KNOWN_ROLES:
        if set(pair) <= present:
            return pair
    if len(present) < 2:
        return None
    if len(present) == 2:
        first, second = sorted(present)
        return first, second
    raise ValueError(
        f"the served log has variants {sorted(present)}; name the champion and the challenger "
        f"(known pairs: {list(KNOWN_ROLES)})"
    )


def _mean_ci(values: np.ndarray, alpha: float) -> tuple[float | None, float | None]:
    """t interval of a mean (None with fewer than 2 values)."""
    if values.size < 2:
        return None, None
    half = stats.t.ppf(1.0 - alpha / 2.0, values.size - 1) * values.std(ddof=1)
    half /= math.sqrt(values.size)
    mean = float(values.mean())
    return mean - half, mean + half


def _histogram(values_by_variant: dict[str, np.ndarray]) -> dict[str, Any]:
    """Counts of order values per variant on common bins; values above the pooled 99th
    percentile fall into the last bin (``clipped_at``)."""
    pooled = np.concatenate([v for v in values_by_variant.values()] or [np.empty(0)])
    if pooled.size == 0:
        return {"bin_edges": [], "counts": {name: [] for name in values_by_variant}}
    top = float(np.quantile(pooled, _HIST_QUANTILE))
    low = float(pooled.min())
    if top <= low:
        top = low + 1.0
    edges = np.histogram_bin_edges(pooled, bins=_HIST_BINS, range=(low, top))
    counts = {
        name: np.histogram(np.clip(values, low, top), bins=edges)[0].tolist()
        for name, values in values_by_variant.items()
    }
    return {"bin_edges": edges.tolist(), "counts": counts, "clipped_at": top}


def _empty_report(
    status: str, message: str, base: dict[str, Any], variants: dict[str, Any] | None = None
) -> dict[str, Any]:
    return abtest._jsonable(
        {
            "status": status,
            "message": message,
            **base,
            "variants": variants or {},
            "lift": None,
            "lift_ci": [None, None],
            "lift_ci_bootstrap": [None, None],
            "difference": None,
            "difference_ci": [None, None],
            "p_value": None,
            "welch": None,
            "bootstrap": None,
            "revenue_per_customer_test": None,
            "srm": None,
            "sample_size": None,
            "verdict": None,
            "reason": message,
            "warnings": [],
            "order_values": _histogram({}),
        }
    )


def experiment_report(
    assigned: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    expected_share: float,
    alpha: float = 0.05,
    mde: float = 0.05,
    power: float = 0.8,
    seed: int = c.SEED,
    n_boot: int = 2000,
    champion: str | None = None,
    challenger: str | None = None,
    srm_alpha: float = 0.001,
) -> dict[str, Any]:
    """The A/B report of ``assigned`` (:func:`assignments`) and ``outcomes`` (:func:`outcomes`),
    JSON-serialisable.

    ``expected_share`` is the challenger's planned share of customers (the canary share), the
    champion's is ``1 - expected_share``. The roles: ``champion`` / ``challenger`` when given,
    else the first pair of :data:`KNOWN_ROLES` present, else the two variants in alphabetical
    order. Customers of other variants are left out and counted in ``exclusions``.

    Keys: ``status`` (:data:`ANALYSED`, :data:`NO_DATA` when no customer is assigned,
    :data:`SINGLE_VARIANT` with one variant only: figures, no test), ``message``, ``champion``,
    ``challenger``, ``expected_share``, ``alpha``, ``mde``, ``power``, ``conflicts``,
    ``exclusions``, ``variants`` (per variant: customers, customers_with_orders, orders,
    conversion, aov with ``aov_ci_low`` / ``aov_ci_high``, revenue, revenue_per_customer),
    ``lift`` (AOV, challenger over champion) with ``lift_ci`` (Welch, delta method) and
    ``lift_ci_bootstrap``, ``difference`` / ``difference_ci``, ``p_value``, ``welch``,
    ``bootstrap``, ``revenue_per_customer_test``, ``srm``, ``sample_size``, ``verdict`` (one of
    :data:`abtest.VERDICTS`, None without a test), ``reason``, ``warnings`` and
    ``order_values`` (histograms per variant on common bins).
    """
    if not 0.0 < expected_share < 1.0:
        raise ValueError(f"expected_share must be in (0, 1), got {expected_share!r}")
    _require(assigned, ASSIGNMENT_COLUMNS, "assigned")
    _require(outcomes, OUTCOME_COLUMNS, "outcomes")
    exclusions = {
        "customers_in_several_variants": int(assigned.attrs.get("conflicts", 0)),
        **{k: int(v) for k, v in outcomes.attrs.get("exclusions", {}).items()},
    }
    base: dict[str, Any] = {
        "champion": champion,
        "challenger": challenger,
        "expected_share": float(expected_share),
        "alpha": alpha,
        "mde": mde,
        "power": power,
        "conflicts": exclusions["customers_in_several_variants"],
        "exclusions": exclusions,
        "window": outcomes.attrs.get("window", {"start": None, "end": None}),
    }
    if assigned.empty:
        conflicts = base["conflicts"]
        message = "No experiment data: no served record carries a variant" + (
            f" (the {conflicts} customer(s) served in several variants are left out)."
            if conflicts
            else "."
        )
        return _empty_report(NO_DATA, message, base)

    customers = assigned[list(ASSIGNMENT_COLUMNS)].rename(columns={FIRST_SEEN: "assigned_at"})
    customers[CUSTOMER] = customers[CUSTOMER].astype(str)
    customers[VARIANT] = customers[VARIANT].astype(str)
    orders = per_order(outcomes)
    orders = pd.DataFrame(
        {
            CUSTOMER: orders[CUSTOMER].astype(str),
            # a unique id per row: outcomes has already folded the lines into orders
            ORDER_ID: np.arange(len(orders)).astype(str),
            ORDER_VALUE: orders[ORDER_VALUE].astype(float),
            "ts": orders[ORDER_TS],
        }
    )
    present = sorted(customers[VARIANT].unique().tolist())
    roles = _roles(present, champion, challenger)
    if roles is None or not set(roles) <= set(present):
        summary = abtest.variant_summary(
            customers, orders, col_user=CUSTOMER, col_ts="ts", col_order=ORDER_ID
        )
        variants = _variants_with_ci(summary.to_dict(orient="index"), orders, customers, alpha)
        only = ", ".join(present)
        message = (
            f"Only variant(s) {only} served so far"
            + (f" (expected {roles[0]} and {roles[1]})" if roles else "")
            + ": nothing to compare yet."
        )
        if roles:
            base |= {"champion": roles[0], "challenger": roles[1]}
        return _empty_report(SINGLE_VARIANT, message, base, variants)
    champion, challenger = roles
    base |= {"champion": champion, "challenger": challenger}
    in_test = customers[VARIANT].isin(roles)
    exclusions["customers_in_other_variants"] = int((~in_test).sum())
    customers = customers.loc[in_test]
    orders = orders.loc[orders[CUSTOMER].isin(customers[CUSTOMER])]

    result = abtest.analyse_aov_test(
        customers,
        orders,
        control=champion,
        treatment=challenger,
        alpha=alpha,
        mde_relative=mde,
        power=power,
        expected_shares={champion: 1.0 - expected_share, challenger: expected_share},
        srm_alpha=srm_alpha,
        n_boot=n_boot,
        seed=seed,
        col_user=CUSTOMER,
        col_order=ORDER_ID,
        col_ts="ts",
    )
    variants = _variants_with_ci(result["variants"], orders, customers, alpha)
    welch = result["aov"]["welch"]
    boot = result["aov"]["bootstrap"]
    warnings = list(result["warnings"])
    if exclusions["customers_in_several_variants"]:
        warnings.append(
            f"{exclusions['customers_in_several_variants']} customer(s) were served in several "
            "variants (a broken assignment) and are left out."
        )
    if exclusions.get("customers_in_other_variants"):
        warnings.append(
            f"{exclusions['customers_in_other_variants']} customer(s) of variants other than "
            f"{champion!r} and {challenger!r} are left out."
        )
    values = {
        name: orders.loc[orders[CUSTOMER].isin(group[CUSTOMER]), ORDER_VALUE].to_numpy()
        for name, group in customers.groupby(VARIANT)
    }
    report = {
        "status": ANALYSED,
        "message": result["reason"],
        **base,
        "variants": variants,
        "lift": result["aov"]["lift"],
        "lift_ci": [welch["lift_ci_low"], welch["lift_ci_high"]] if welch else [None, None],
        "lift_ci_bootstrap": (
            [boot["lift_ci_low"], boot["lift_ci_high"]] if boot else [None, None]
        ),
        "difference": result["aov"]["difference"],
        "difference_ci": [welch["ci_low"], welch["ci_high"]] if welch else [None, None],
        "p_value": result["p_value"],
        "welch": welch,
        "bootstrap": boot,
        "revenue_per_customer_test": result["revenue_per_customer"],
        "srm": result["srm"],
        "sample_size": result["sample_size"],
        "verdict": result["verdict"],
        "reason": result["reason"],
        "warnings": warnings,
        "order_values": _histogram({name: values.get(name, np.empty(0)) for name in roles}),
    }
    return abtest._jsonable(report)


def _variants_with_ci(
    summary: dict[str, dict[str, Any]],
    orders: pd.DataFrame,
    customers: pd.DataFrame,
    alpha: float,
) -> dict[str, dict[str, Any]]:
    """ab_statistics' per-variant figures (``{variant: {column: value}}``) plus a t CI of each
    variant's AOV."""
    variant_of = customers.set_index(CUSTOMER)[VARIANT]
    order_variant = orders[CUSTOMER].map(variant_of)
    result: dict[str, dict[str, Any]] = {}
    for name, row in summary.items():
        values = orders.loc[(order_variant == name).to_numpy(), ORDER_VALUE].to_numpy()
        low, high = _mean_ci(values, alpha)
        figures = {key: row[key] for key in abtest.SUMMARY_COLUMNS}
        result[str(name)] = abtest._jsonable({**figures, "aov_ci_low": low, "aov_ci_high": high})
    return result


# --- The page -----------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return cell(value, missing="–")


def _figures(report: dict[str, Any]) -> list[Any]:
    import plotly.graph_objects as go

    names = list(report["variants"])
    rows = [report["variants"][name] for name in names]
    aov = go.Figure(
        go.Bar(
            x=names,
            y=[row["aov"] for row in rows],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [
                    None if row["aov_ci_high"] is None else row["aov_ci_high"] - row["aov"]
                    for row in rows
                ],
                "arrayminus": [
                    None if row["aov_ci_low"] is None else row["aov"] - row["aov_ci_low"]
                    for row in rows
                ],
            },
        )
    )
    level = 1 - float(report["alpha"])
    aov.update_layout(
        title=f"AOV per variant ({level:.0%} t CI)", xaxis_title="variant", yaxis_title="AOV"
    )
    dist = go.Figure()
    hist = report["order_values"]
    edges = hist["bin_edges"]
    centres = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
    for name, counts in hist["counts"].items():
        total = sum(counts) or 1
        dist.add_trace(go.Bar(x=centres, y=[n / total for n in counts], name=name, opacity=0.6))
    dist.update_layout(
        title="Order value distribution per variant (share of orders; last bin: the top 1%)",
        barmode="overlay",
        xaxis_title="order value",
        yaxis_title="share of orders",
    )
    conversion = go.Figure(go.Bar(x=names, y=[row["conversion"] for row in rows]))
    conversion.update_layout(
        title="Conversion per variant (customers with an order / customers)",
        xaxis_title="variant",
        yaxis_title="conversion",
    )
    return [aov, dist, conversion]


def write_ab_report(report: dict[str, Any], html_path: Path) -> tuple[Path, Path]:
    """A self-contained HTML page (plotly.js inlined) of an :func:`experiment_report` at
    ``html_path`` and the report as JSON at ``html_path.with_suffix(".json")``; returns both.

    Plots: AOV per variant with CI bars, the order-value distributions, conversion per variant;
    then the verdict, the figures per variant, the test, SRM, sample size and warnings. A report
    without variants gets a page that says so (and no plotly).
    """
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    json_path = html_path.with_suffix(".json")
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False), encoding="utf-8")

    plots = figures_html(*_figures(report)) if report["variants"] else ""
    columns = [*abtest.SUMMARY_COLUMNS, "aov_ci_low", "aov_ci_high"]
    variants = table(
        ["variant", *columns],
        [(name, *(row.get(key) for key in columns)) for name, row in report["variants"].items()],
        cell=_cell,
    )
    srm = report.get("srm") or {}
    size = report.get("sample_size") or {}
    facts = {
        "status": report["status"],
        "champion": report.get("champion"),
        "challenger": report.get("challenger"),
        "planned challenger share": report.get("expected_share"),
        "AOV lift": report.get("lift"),
        "lift CI (Welch)": report.get("lift_ci"),
        "lift CI (bootstrap)": report.get("lift_ci_bootstrap"),
        "AOV difference CI (Welch)": report.get("difference_ci"),
        "p-value (Welch)": report.get("p_value"),
        "SRM p-value": srm.get("p_value"),
        "SRM mismatch": srm.get("mismatch"),
        "orders needed per variant": size.get("required_orders_per_variant"),
        "customers in several variants": report.get("conflicts"),
        "exclusions": {k: v for k, v in report.get("exclusions", {}).items() if v} or None,
    }
    fact_rows = "".join(
        f"<tr><th style='text-align:left'>{escape(k)}</th>"
        f"<td style='text-align:left'>{_fact(v)}</td></tr>"
        for k, v in facts.items()
    )
    warnings = "".join(f"<li>{escape(w)}</li>" for w in report.get("warnings", []))
    verdict = report.get("verdict") or report["status"]
    body = (
        f"<p class='verdict'><b>{escape(verdict)}</b>: "
        f"{escape(report.get('reason') or report.get('message'))}</p>"
        + (f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else "")
        + f"<h2>Per variant</h2>{variants}{plots}"
        f"<h2>Test</h2><table>{fact_rows}</table>"
    )
    verdict_css = (
        ".verdict{font-size:1.3em;padding:0.5em;background:#f4f4f4;border-left:4px solid #555}"
    )
    text = page(
        "A/B test: average order value", body, plotly=bool(report["variants"]), css=verdict_css
    )
    html_path.write_text(text, encoding="utf-8")
    return html_path, json_path


def _fact(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    if isinstance(value, dict):
        return escape(json.dumps(value))
    return _cell(value)
