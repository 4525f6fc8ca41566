"""The retraining sensor: from landed data to a retraining run, with every decision logged.

Each tick does one of three things:

1. validated events landed after the monitors last ran -> request ``monitoring_job`` (the
   monitors measure; the sensor only reads);
2. the monitors measured something not yet decided on -> evaluate the triggers
   (:func:`recsys_assets.monitoring.loop.retraining_decision`), log the decision with its values to
   the loop's event log and, when it fires, request ``retraining_job``. A monitor that could not
   judge (its outcome ``not_judged``, or never run) fires nothing and counts as healthy for
   nothing: the decision event lists its signals under ``not_judged`` with the reason;
3. nothing new -> skip (and log nothing: a quiet loop writes no noise).

Retraining is asynchronous: the run goes to the run queue, the service keeps serving the
current model until the gate promotes a new one and it is deployed. The cursor remembers which
landed data and which monitor run were handled, so a tick never decides twice on the same data.
"""

import json
import math

import dagster as dg

from recsys_assets.config import get_settings
from recsys_assets.monitoring import loop

MONITORING_JOB = "monitoring_job"
RETRAINING_JOB = "retraining_job"
TRIGGER_TAG = "recsys/trigger"
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _latest(instance: dg.DagsterInstance, key: str):
    records = instance.fetch_materializations(dg.AssetKey(key), limit=1).records
    return records[0] if records else None


def _metadata(record) -> dict:
    if record is None:
        return {}
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _number(metadata: dict, key: str) -> float | None:
    """A figure, or None when it is missing or not finite (NaN: not measured)."""
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _not_judged(name: str, metadata: dict, signals: tuple[str, ...]) -> dict[str, str]:
    """The signals a monitor could not judge, with why: all of them when it never ran."""
    if not metadata:
        return dict.fromkeys(signals, f"{name} has not run yet")
    found = metadata.get("not_judged")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def signals_from(instance: dg.DagsterInstance) -> loop.Signals:
    """The latest monitor materialisations as the decision's input."""
    from recsys_assets.defs.monitoring.assets import MONITOR_SIGNALS, serving_model

    latest = {name: _metadata(_latest(instance, name)) for name in MONITOR_SIGNALS}
    drift = latest["data_drift_report"]
    quality = latest["data_quality_report"]
    prediction = latest["prediction_drift_report"]
    performance = latest["live_performance"]
    not_judged: dict[str, str] = {}
    for name, signals in MONITOR_SIGNALS.items():
        not_judged.update(_not_judged(name, latest[name], signals))

    model = serving_model() or {}
    return loop.Signals(
        latest_data_ts=drift.get("latest_data_ts"),
        model_version=model.get("version"),
        model_data_end=model.get("data_end"),
        data_drift_share=_number(drift, "drifted_share"),
        item_mix_distance=_number(drift, "item_mix_distance"),
        quality_problems=tuple(quality.get("problems") or ()),
        score_ks=_number(prediction, "score_ks"),
        served_item_distance=_number(prediction, "served_item_distance"),
        performance_drop=_number(performance, "performance_drop"),
        scored_lists=int(performance.get("scored_lists") or 0),
        monitored_at=loop.now_utc(),
        not_judged=not_judged,
    )


def _running(instance: dg.DagsterInstance, job: str) -> bool:
    return bool(instance.get_run_ids(dg.RunsFilter(job_name=job, statuses=ACTIVE), limit=1))


@dg.sensor(
    job_name=RETRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the monitors when data lands and retrains when their triggers say so "
    "(data drift, item mix, prediction drift, live performance, model age), with a cooldown; "
    "every decision goes to the loop's event log.",
)
def retraining_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    instance = context.instance
    landed = _latest(instance, "validated_events")
    monitored = _latest(instance, "data_drift_report")
    if landed is None:
        return dg.SensorResult(skip_reason="no validated events yet", cursor=context.cursor)
    if monitored is None or monitored.storage_id < landed.storage_id:
        if _running(instance, MONITORING_JOB) or cursor.get("monitors_for") == landed.storage_id:
            return dg.SensorResult(skip_reason="monitors are running", cursor=context.cursor)
        log = loop.LoopLog(get_settings().loop_log)
        log.append(loop.MONITORS_REQUESTED, landed_storage_id=landed.storage_id)
        cursor["monitors_for"] = landed.storage_id
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=f"monitors-{landed.storage_id}", job_name=MONITORING_JOB)
            ],
            cursor=json.dumps(cursor),
        )
    if cursor.get("decided_for") == monitored.storage_id:
        return dg.SensorResult(skip_reason="no new measurements", cursor=context.cursor)

    settings = get_settings()
    log = loop.LoopLog(settings.loop_log)
    last = log.last(loop.DECISION, fire=True)
    signals = signals_from(instance)
    decision = loop.retraining_decision(
        signals,
        settings.monitoring,
        last_retraining_data_ts=(last or {}).get("values", {}).get("latest_data_ts"),
        retraining_running=_running(instance, RETRAINING_JOB),
    )
    if decision.reason.startswith("a retraining run is in progress"):
        # decide again once it finished; don't mark these measurements as handled
        return dg.SensorResult(skip_reason=decision.reason, cursor=context.cursor)
    log.append(loop.DECISION, monitored_storage_id=monitored.storage_id, **decision.as_event())
    context.log.info("retraining decision: %s", decision.reason)
    cursor["decided_for"] = monitored.storage_id
    if not decision.fire:
        return dg.SensorResult(skip_reason=decision.reason, cursor=json.dumps(cursor))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"retrain-{monitored.storage_id}",
                job_name=RETRAINING_JOB,
                tags={TRIGGER_TAG: ",".join(decision.triggers)},
                # the cheap recipe: warm-start the previous ranker (full fit when it cannot)
                run_config={"ops": {"ranker_model": {"config": {"warm_start": True}}}},
            )
        ],
        cursor=json.dumps(cursor),
    )
