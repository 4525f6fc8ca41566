"""The live A/B test (canary) of the recommender on business value: ``ab_test_report``.

Reads the service's served log (who was served which variant) and its feedback log (what they
bought), and reports AOV, conversion and revenue per customer per variant with the AOV lift of
the challenger over the champion, its Welch and bootstrap CIs, the sample-ratio-mismatch check
against the planned canary share and a plain verdict (``docs/ab-testing.md``). The statistics
are :mod:`recsys_assets.release.ab_statistics`'s; the log handling is
:mod:`recsys_assets.release.ab_experiment`.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from recsys_assets.config import get_settings
from recsys_assets.defs.monitoring.assets import monitoring_asset, reports_dir
from recsys_assets.ingestion.feedback import FeedbackLog
from recsys_assets.release import ab_experiment as experiment
from recsys_assets.release.canary.routing import CanaryConfig, current_config, read_canary_state
from recsys_assets.serving.served_log import ServedLog, served_log_path

NO_EXPERIMENT = "no experiment running"
SRM_CHECK = "ab_test_srm"
# The service looks at the canary state file at most once a second: records within this long of
# a share change may still follow the old share, and belong to neither phase.
PHASE_SETTLE_S = 2.0


def canary_in_force() -> CanaryConfig:
    """The canary the service follows: the canary state file, else ``$RECSYS_CHALLENGER_TAG``
    and ``$RECSYS_CANARY_SHARE`` (default 0.1), read by the service's own rules
    (release/canary/routing.py):
    one parser, so the report and the routing agree."""
    return current_config(get_settings().canary_state, os.environ)[0]


def canary_share() -> float:
    """The challenger's planned share of customers (:func:`canary_in_force`)."""
    return canary_in_force().share


def _number(value: Any) -> float:
    """Metadata number: None (no figure) becomes NaN, as in mlops_kpis."""
    return float("nan") if value is None else float(value)


def _variant_metadata(report: dict[str, Any]) -> dict[str, Any]:
    """``champion_aov``, ``challenger_conversion``, ...: keyed by role, not by variant name,
    so that the keys stay the same from one experiment to the next."""
    metadata: dict[str, Any] = {}
    for role in ("champion", "challenger"):
        row = report["variants"].get(report.get(role) or "", {})
        for key in ("customers", "orders"):
            metadata[f"{role}_{key}"] = int(row.get(key) or 0)
        for key in ("conversion", "aov", "aov_ci_low", "aov_ci_high", "revenue_per_customer"):
            metadata[f"{role}_{key}"] = _number(row.get(key))
    return metadata


@monitoring_asset(
    SRM_CHECK,
    "Customers per variant match the planned canary share (no sample-ratio mismatch)",
    kinds={"plotly"},
)
def ab_test_report() -> dg.MaterializeResult:
    """The canary's A/B test on average order value: per variant customers, orders, conversion,
    AOV and revenue per customer; the AOV lift of the challenger with Welch's p-value and CI and
    a bootstrap CI; the SRM check against ``RECSYS_CANARY_SHARE``; the orders needed for a 5%
    effect and the verdict. HTML and JSON under reports/monitoring/ab_test.*; without variants in
    the served log it materialises with status "no experiment running". With a canary state
    file, only the current phase is analysed: the records since the share last changed
    (``phase_started_at``), in which every customer's variant is fixed."""
    settings = get_settings()
    served = ServedLog(served_log_path(settings.feedback_log)).read()
    feedback = FeedbackLog(settings.feedback_log).read()
    canary = canary_in_force()
    share = canary.share
    records_read, phase_started_at = len(served), None
    if canary.challenger_tag is not None and len(served):  # this experiment's records only
        version = canary.challenger_tag.rsplit(":", 1)[-1]
        served = experiment.current_experiment(served, version)
        state = read_canary_state(settings.canary_state)
        if state is not None and state.challenger_tag == canary.challenger_tag and state.updated_at:
            phase_started_at = state.updated_at  # the share in force since then
            served = experiment.current_phase(served, phase_started_at, settle_s=PHASE_SETTLE_S)
    if not 0.0 < share < 1.0:  # one variant serves everyone: nothing to compare
        why = f"the canary share is {share:g}: one variant serves every customer"
        return dg.MaterializeResult(
            metadata={"status": NO_EXPERIMENT, "reason": why, "expected_share": share},
            check_results=[
                dg.AssetCheckResult(check_name=SRM_CHECK, passed=True, description=NO_EXPERIMENT)
            ],
        )
    assigned = experiment.assignments(served)
    outcomes = experiment.outcomes(feedback, assigned)
    report = experiment.experiment_report(assigned, outcomes, expected_share=share)
    html_path, json_path = experiment.write_ab_report(report, reports_dir() / "ab_test.html")
    links = {
        "report": dg.MetadataValue.path(str(html_path)),
        "report_json": dg.MetadataValue.path(str(json_path)),
    }
    counts = {
        "served_records": len(served),
        "served_records_before_phase": records_read - len(served),
        "phase_started_at": phase_started_at or "n/a (no canary state file)",
        "served_records_without_variant": int(assigned.attrs["records_without_variant"]),
        "conflicts": int(report["conflicts"]),
        "expected_share": share,
    }
    if report["status"] == experiment.NO_DATA:
        return dg.MaterializeResult(
            metadata={"status": NO_EXPERIMENT, "reason": report["message"], **counts, **links},
            check_results=[
                dg.AssetCheckResult(check_name=SRM_CHECK, passed=True, description=NO_EXPERIMENT)
            ],
        )
    srm = report["srm"] or {}
    mismatch = bool(srm.get("mismatch", False))
    welch = report["welch"] or {}
    metadata = {
        "status": report["status"],
        "verdict": report["verdict"] or "n/a",
        "reason": report["reason"],
        "champion": report["champion"] or "n/a",
        "challenger": report["challenger"] or "n/a",
        **counts,
        **_variant_metadata(report),
        "variants": dg.MetadataValue.json(report["variants"]),
        "aov_lift": _number(report["lift"]),
        "aov_difference": _number(report["difference"]),
        "p_value": _number(report["p_value"]),
        "t": _number(welch.get("t")),
        "lift_ci_low": _number(report["lift_ci"][0]),
        "lift_ci_high": _number(report["lift_ci"][1]),
        "bootstrap_lift_ci_low": _number(report["lift_ci_bootstrap"][0]),
        "bootstrap_lift_ci_high": _number(report["lift_ci_bootstrap"][1]),
        "srm_p_value": _number(srm.get("p_value")),
        "srm_mismatch": mismatch,
        "required_orders_per_variant": _number(
            (report["sample_size"] or {}).get("required_orders_per_variant")
        ),
        "exclusions": dg.MetadataValue.json({k: v for k, v in report["exclusions"].items() if v}),
        "warnings": dg.MetadataValue.json(report["warnings"]),
        **links,
    }
    if srm:
        observed = ", ".join(f"{k}: {v}" for k, v in srm["observed"].items())
        description = (
            f"customers {observed} against a planned challenger share of {share:g}: "
            f"chi2 {srm['chi2']:.3g}, p = {srm['p_value']:.3g} (mismatch below {srm['alpha']:g})"
        )
    else:
        description = f"{report['status']}: no SRM check"
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name=SRM_CHECK,
                passed=not mismatch,
                severity=dg.AssetCheckSeverity.WARN,
                description=description,
                metadata={"srm_p_value": _number(srm.get("p_value"))},
            )
        ],
    )
