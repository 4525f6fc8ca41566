"""Monitoring domain: drift, quality and performance monitors, the retraining loop and its KPIs."""

import dagster as dg

from recsys_assets.defs.monitoring.assets import MONITORS, mlops_kpis
from recsys_assets.defs.monitoring.dashboard import UPSTREAM_RELEASE, ops_dashboard
from recsys_assets.defs.monitoring.sensors import MONITORING_JOB, RETRAINING_JOB, retraining_sensor
from recsys_assets.training.baselines import SIMPLE_MODELS

monitoring_job = dg.define_asset_job(
    MONITORING_JOB,
    # The A/B report and the canary analysis are the release domain's (defs/release/), named
    # here by key so that monitoring never imports a domain after it.
    selection=dg.AssetSelection.assets(*MONITORS, mlops_kpis, *UPSTREAM_RELEASE, ops_dashboard),
    description="Measure data drift, data quality, prediction drift and live performance of the "
    "serving model on the latest landed data; refresh the loop's KPIs, the A/B report, the "
    "canary analysis and the operations dashboard.",
)

retraining_job = dg.define_asset_job(
    RETRAINING_JOB,
    # Features first (the new model is served over them), then what the served model needs:
    # split, the ranker and every simple model (the model to serve is chosen among them on the
    # validation period, and the gate holds it to the best simple one), the selection, the
    # challenger with its blocking gate, promotion and bento. The evaluation report is for
    # reading, not serving.
    selection=dg.AssetSelection.groups("features")
    | dg.AssetSelection.assets(
        "evaluation_split",
        *(f"{name}_model" for name in SIMPLE_MODELS),
        "ranker_model",
        "selected_model",
        "challenger_model",
        "promoted_model",
        "bento",
    ),
    description="Retrain on the landed data and release through the same quality gate as "
    "always: features, ranker and simple models, the choice on the validation period, "
    "challenger, gate, promotion, bento. Requested by retraining_sensor.",
)

daily_refresh = dg.ScheduleDefinition(
    name="daily_refresh",
    job_name="features_job",
    cron_schedule="0 2 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuild the feature tables and the online store every night: windowed item "
    "sales move on days without new events too.",
)

defs = dg.Definitions(
    assets=[*MONITORS, mlops_kpis, ops_dashboard],
    jobs=[monitoring_job, retraining_job],
    sensors=[retraining_sensor],
    schedules=[daily_refresh],
)
