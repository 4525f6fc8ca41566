"""The canary analysis of the served challenger: ``canary_report``.

Reads the service's served log and feedback log, compares the champion and the challenger on
the canary's guardrails (error rate, p99 latency, fallback rate, conversion) and decides to
wait, roll back, widen the challenger's share or promote it
(:mod:`recsys_assets.release.canary.analysis`, docs/serving.md "Canary"). The decision is written to
the loop's event log (``canary_decision``) and to reports/monitoring/canary.json, then applied
to the canary state file the service follows, as the canary analyser and through the
control-plane policy (:func:`~recsys_assets.release.canary.actions.apply_decision`).
"""

from __future__ import annotations

import http.client
import json
import os
from typing import Any

import dagster as dg
import pandas as pd

from recsys_assets.config import get_settings, variables
from recsys_assets.defs.monitoring.assets import monitoring_asset, reports_dir
from recsys_assets.ingestion.feedback import FeedbackLog
from recsys_assets.monitoring import loop
from recsys_assets.release.canary.actions import apply_decision, scrape_errors
from recsys_assets.release.canary.analysis import (
    PROMOTE,
    ROLLBACK,
    WAIT,
    canary_decision,
    experiment_records,
    experiment_start,
    served_latency,
    variant_figures,
)
from recsys_assets.release.canary.baseline import Experiment, baseline_path, experiment_errors
from recsys_assets.release.canary.routing import VARIANTS, current_config
from recsys_assets.serving.served_log import ServedLog, served_log_path

CANARY_CHECK = "canary_guardrails"
NO_CANARY = "no canary running"
REPORT_NAME = "canary.json"

# Per-variant figures copied into the metadata as <variant>_<key> (None becomes NaN).
_METADATA_FIGURES = (
    "requests",
    "errors",
    "error_rate",
    "fallback_rate",
    "click_through",
    "conversion",
    "orders",
    "aov",
    "p50_ms",
    "p99_ms",
)


def _number(value: Any) -> float:
    """Metadata number: None (no figure) becomes NaN, as in the other monitors."""
    return float("nan") if value is None else float(value)


def _service_counters() -> tuple[dict[str, dict[str, int]] | None, str | None, bool]:
    """The service's error counters per URL and variant from its /metrics
    (``RECSYS_SERVICE_URL``: one URL, or the replicas' URLs separated by commas), or None with
    the reason they are not judged, and whether that is a read that failed (never raises): no
    URL (not read, False), or a scrape that failed (True). One replica that cannot be read
    leaves the errors unjudged: the others' sum would understate them."""
    urls = [u.strip().rstrip("/") for u in (variables.SERVICE_URL.read() or "").split(",")]
    urls = [url for url in urls if url]
    if not urls:
        unset = variables.SERVICE_URL.name
        return None, f"{unset} is not set: the service's error counts are not read", False
    counters: dict[str, dict[str, int]] = {}
    for url in urls:
        try:
            counters[url] = scrape_errors(url)
        # Unreachable, timed out, an HTTP error (OSError), or an answer that is not usable
        # (ValueError, a broken HTTP response): the canary waits.
        except (OSError, ValueError, http.client.HTTPException) as error:
            return None, f"the service's metrics at {url}/metrics could not be read ({error})", True
    return counters, None, False


def repeats_a_wait(log: loop.LoopLog, action: str, challenger_tag: str, share: float) -> bool:
    """Whether ``action`` is a wait right after a wait on the same challenger and share, or a
    promotion right after a promotion there (one that did not happen: it awaits a release
    manager, or the share would have changed): such a decision says nothing new, and a canary
    waiting for traffic or for approval would otherwise log one every ``canary_interval_s``.
    The first of a phase, and every other action, is logged."""
    if action not in (WAIT, PROMOTE):
        return False
    previous = log.last(loop.CANARY_DECISION, challenger_tag=challenger_tag)
    return (
        previous is not None
        and previous.get("action") == action
        and previous.get("current_share") == share
    )


def _write(report: dict[str, Any]) -> str:
    path = reports_dir() / REPORT_NAME
    path.write_text(json.dumps(report, indent=2, allow_nan=False), encoding="utf-8")
    return str(path)


@monitoring_asset(
    CANARY_CHECK,
    "The served challenger stays within the canary's guardrails (a breach rolls it back "
    "through the canary state file)",
)
def canary_report() -> dg.MaterializeResult:
    """The canary analysis: per variant served lists, error and fallback rates, click-through,
    conversion, orders and AOV from the served and feedback logs, judged against the
    environment's :class:`~recsys_assets.config.canary.CanaryPolicy` (the ``canary:`` block of
    its file in config/environments/, recorded as ``policy`` in the metadata and the report) at
    the share in force (the canary state file, else ``RECSYS_CHALLENGER_TAG`` and
    ``RECSYS_CANARY_SHARE``): wait, rollback, widen or promote, with the reasons. Written to
    the loop log as a ``canary_decision`` event with that policy (a wait repeating the previous
    wait, or a promotion repeating one that awaits approval, is not logged again: ``logged`` in
    the metadata) and to reports/monitoring/canary.json, then applied to the state
    file (``applied`` in the metadata: applied, awaiting approval, refused by the policy, stale
    or nothing to do); the check ``canary_guardrails`` fails (WARN) on a rollback.

    Each experiment is judged on its own records (``experiment`` in the metadata, the report
    and the event): the served lists from its start (the canary state's ``started_at``, else
    the first list its challenger served), the challenger's only of its own model version, and
    the feedback on those lists; its error counts are the counters' increase since the
    experiment's baseline (:mod:`recsys_assets.release.canary.baseline`, recorded at the first
    analysis that reads them), and while they are read the lists are counted from that
    baseline on as well, so that requests and errors cover the same span.

    Latency samples are the served log's ``latency_ms`` (the request's in-service time, as the
    service observes it in ``recsys_recommend_latency_seconds``), per variant: p99 is judged
    once both variants have ``min_requests`` of them. Error counts are not in the logs (a
    failed request writes no served line): they come from the service's ``/metrics`` at
    ``RECSYS_SERVICE_URL`` (``recsys_errors_total`` by variant); without the URL the error
    rate is not judged and the report says why; when the scrape fails it is not judged either,
    and the canary waits (a breach of another guardrail still rolls back) rather than widen or
    promote on errors it cannot see. Without a challenger it materialises with status "no
    canary running" and the check passes."""
    settings = get_settings()
    config, state = current_config(settings.canary_state, os.environ)
    if not config.enabled:
        report_path = _write({"status": NO_CANARY})
        return dg.MaterializeResult(
            metadata={"status": NO_CANARY, "report_json": dg.MetadataValue.path(report_path)},
            check_results=[
                dg.AssetCheckResult(check_name=CANARY_CHECK, passed=True, description=NO_CANARY)
            ],
        )

    # This experiment only: its errors since its baseline, its lists since its start
    experiment = Experiment.of(config, state)
    counters, errors_not_judged, unreadable = _service_counters()
    version = config.challenger_tag.rsplit(":", 1)[-1]
    served = ServedLog(served_log_path(settings.feedback_log)).read()
    since = experiment.started_at or experiment_start(served, version)  # None: not served yet
    errors, baseline_note = None, "none: the error counts are not read"
    if counters is not None:  # errors since the baseline, lists since then too: one span
        errors, baseline, baseline_note = experiment_errors(
            baseline_path(settings.canary_state), experiment, counters, now=loop.now_utc()
        )
        since = max(pd.Timestamp(t) for t in (baseline.recorded_at, since) if t is not None)
        baseline_note = baseline_note or f"errors counted since {baseline.recorded_at}"
    served, feedback = experiment_records(
        served, FeedbackLog(settings.feedback_log).read(), challenger_version=version, since=since
    )
    # latency: the in-service time the service logs with each list (lines without it, from
    # before the field existed, are left out)
    figures = variant_figures(served, feedback, latency=served_latency(served), errors=errors)
    policy = settings.canary  # the environment file's guardrails and steps
    decision = canary_decision(
        figures,
        policy,
        current_share=config.share,
        errors_not_judged=errors_not_judged,
        hold=errors_not_judged if unreadable else None,
    )
    window = {
        "challenger_version": version,
        "started_at": experiment.started_at or None,  # None: not in the canary state
        "since": None if since is None else pd.Timestamp(since).isoformat(),
        "served_lists": len(served),
        "feedback_events": len(feedback),
        "error_baseline": baseline_note,
    }
    log = loop.LoopLog(settings.loop_log)
    logged = not repeats_a_wait(log, decision.action, config.challenger_tag, config.share)
    event = {"ts": loop.now_utc()}  # a repeated wait: this run's metadata still has it all
    if logged:
        event = log.append(
            loop.CANARY_DECISION,
            challenger_tag=config.challenger_tag,
            current_share=config.share,
            **decision.as_event(),
            policy=policy.as_dict(),  # the thresholds that judged it
            experiment=window,  # the records that were judged
        )
    report = {
        "status": "analysed",
        "ts": event["ts"],
        "challenger_tag": config.challenger_tag,
        "current_share": config.share,
        "environment": str(settings.environment),
        "policy": policy.as_dict(),
        "experiment": window,
        **decision.as_event(),
    }
    os.environ.setdefault(variables.BENTOML_HOME.name, str(settings.bentoml_home))  # the registry
    applied = apply_decision(
        decision,
        challenger_tag=config.challenger_tag,
        decided_share=config.share,
        state_path=settings.canary_state,
        environment=str(settings.environment),
        loop_log=settings.loop_log,
        detected_at=event["ts"],
    )
    report["applied"] = applied.as_metadata()
    report_path = _write(report)
    per_variant = {
        f"{variant}_{key}": _number(figures[variant][key])
        for variant in VARIANTS
        for key in _METADATA_FIGURES
    }
    rollback = decision.action == ROLLBACK
    return dg.MaterializeResult(
        metadata={
            "status": "analysed",
            "challenger_tag": str(config.challenger_tag),
            "action": decision.action,
            "current_share": config.share,
            "next_share": decision.next_share,
            "logged": logged,
            "reasons": dg.MetadataValue.json(decision.reasons),
            **per_variant,
            "figures": dg.MetadataValue.json(figures),
            "guardrails": dg.MetadataValue.json(decision.guardrails),
            "environment": str(settings.environment),
            "policy": dg.MetadataValue.json(policy.as_dict()),
            "experiment": dg.MetadataValue.json(window),
            "applied": applied.outcome,
            "applied_detail": applied.detail,
            "applied_state": dg.MetadataValue.json(applied.as_metadata()),
            "report_json": dg.MetadataValue.path(report_path),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=CANARY_CHECK,
                passed=not rollback,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{decision.action} (share {config.share:g} -> "
                f"{decision.next_share:g}): "
                + "; ".join(decision.reasons)
                + f" [{applied.outcome}: {applied.detail}]",
                metadata={
                    "action": decision.action,
                    "next_share": decision.next_share,
                    "applied": applied.outcome,
                },
            )
        ],
    )
