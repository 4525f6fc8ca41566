"""The operations dashboard: ``ops_dashboard``, one HTML page for the whole product team.

After the monitors, the KPIs, the A/B report and the canary analysis have run, it reads the
loop's event log, the registry's promoted versions, the served log and the latest metadata of
every monitoring asset, and writes reports/monitoring/ops_dashboard.html
(:mod:`recsys_assets.monitoring.dashboard`): the model in service, releases and rollbacks, drift
signals against their thresholds, MTTD / MTTR / deployment time, traffic and fallback rate per
day, and the latest monitor results, a monitor that could not judge shown as "not judged"
with its reason, never as ok (docs/monitoring.md, "The operations dashboard").
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from recsys_assets.access.control import control_audit_path
from recsys_assets.access.policy import audit_log_path
from recsys_assets.config import get_settings
from recsys_assets.core import constants as c
from recsys_assets.defs.monitoring.assets import (
    CODE_VERSION,
    MONITORS,
    TAGS,
    mlops_kpis,
    reports_dir,
)
from recsys_assets.monitoring import dashboard, loop, timeline
from recsys_assets.release import ledger as releases
from recsys_assets.serving import registry as model_registry
from recsys_assets.serving.served_log import ServedLog, served_log_path

# The release domain's live analyses (defs/release/), by key: monitoring imports no later domain.
UPSTREAM_RELEASE = (dg.AssetKey("ab_test_report"), dg.AssetKey("canary_report"))
UPSTREAM = (*(asset.key for asset in (*MONITORS, mlops_kpis)), *UPSTREAM_RELEASE)
REPORT_NAME = "ops_dashboard.html"


def promoted_versions(log: Any = None) -> list[dict[str, Any]]:
    """The registry's promoted versions; an unreadable store shows as none (and is logged)
    rather than failing the page: the dashboard is for reading, not a gate."""
    try:
        return model_registry.promoted_versions()
    except Exception as error:  # a missing or broken BentoML store
        if log is not None:
            log.warning("model registry not readable, shown as empty: %s", error)
        return []


def latest_metadata(instance: dg.DagsterInstance, name: str) -> dict[str, Any] | None:
    """The metadata of an asset's latest materialisation as plain values (with
    ``materialized_at``), or None when it never materialised."""
    records = instance.fetch_materializations(dg.AssetKey(name), limit=1).records
    if not records:
        return None
    record = records[0]
    materialization = record.asset_materialization
    if materialization is None:
        return None
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    metadata["materialized_at"] = _iso(record.timestamp)
    return metadata


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


@dg.asset(
    group_name="monitoring",
    owners=[c.OWNER_DATA],
    tags=TAGS,
    code_version=CODE_VERSION,
    deps=list(UPSTREAM),
    kinds={"plotly"},
)
def ops_dashboard(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """One HTML page for the product team: the model in service (version, promotion time, NDCG,
    p99 latency), releases, gate refusals and rollbacks over time, the models awaiting a
    release manager (``awaiting_approval`` in the metadata), the drift signals of every
    retraining decision against their thresholds, MTTD / MTTR / deployment time per incident,
    requests and fallback rate per day by model version and variant, and the latest result of
    every monitor. Self-contained (plotly inlined): reports/monitoring/ops_dashboard.html."""
    settings = get_settings()
    events = loop.LoopLog(settings.loop_log).read()
    promoted = promoted_versions(context.log)
    served = ServedLog(served_log_path(settings.feedback_log)).read()
    monitors = {
        key.to_user_string(): latest_metadata(context.instance, key.to_user_string())
        for key in UPSTREAM
    }
    environment = settings.environment.value
    entries = timeline.timeline(
        loop_events=events,
        control_audit=timeline.read_jsonl(control_audit_path(settings.loop_log)),
        access_audit=timeline.read_jsonl(
            audit_log_path(settings.feedback_log), tail_bytes=timeline.ACCESS_TAIL_BYTES
        ),
        runs=timeline.dagster_runs(context.instance),
    )
    figures = dashboard.dashboard_figures(
        events,
        promoted,
        served,
        monitors,
        environment=environment,
        timeline_entries=[e.as_dict() for e in entries],
        environments=releases.current_rows(releases.fold(releases.read_ledger())),
        release_kpis=releases.release_kpis(
            releases.read_ledger(), releases.loop_events_of_every_environment()
        ),
    )
    path = dashboard.write_dashboard(
        figures, reports_dir() / REPORT_NAME, title=f"Recommender operations ({environment})"
    )
    model = figures["current_model"]
    kpis = figures["kpis"]
    mttr = kpis["mttr"]["mean_s"]
    return dg.MaterializeResult(
        metadata={
            "dashboard": dg.MetadataValue.path(str(path)),
            "dashboard_url": dg.MetadataValue.url(path.resolve().as_uri()),
            "model_version": model["version"] if model else "none",
            "incidents": int(kpis["incidents"]),
            "open_incidents": int(kpis["open_incidents"]),
            "mttr_mean_s": float("nan") if mttr is None else round(float(mttr), 1),
            "requests": int(figures["traffic"]["requests"]),
            "loop_events": len(events),
            "monitors_run": sum(1 for m in figures["monitors"] if m["ran"]),
            # a prod candidate, or a clean canary the analyser may not promote
            "awaiting_approval": dg.MetadataValue.json(figures["awaiting_approval"]),
            # ran, but had nothing (or too little) to compare: unknown, not ok
            "monitors_not_judged": sum(
                1 for m in figures["monitors"] if m.get("outcome") == loop.NOT_JUDGED
            ),
        }
    )
