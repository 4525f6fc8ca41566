"""The canary sensor: while a challenger is served to part of the customers, run the canary
analysis (``canary_report``, which applies its decision) every ``canary_interval_s`` seconds.

A canary is running when the canary in force (the state file, else the environment) has a
challenger with a share strictly between 0 and 1: a rollback (share 0, no challenger) or a
promotion (share 1) ends it, and the sensor goes quiet by itself.
"""

import os

import dagster as dg

from recsys_assets.config import get_settings
from recsys_assets.defs.monitoring.sensors import ACTIVE
from recsys_assets.defs.release.canary import canary_report
from recsys_assets.release.canary.routing import current_config

CANARY_JOB = "canary_job"
CHALLENGER_TAG = "recsys/challenger"

canary_job = dg.define_asset_job(
    CANARY_JOB,
    selection=dg.AssetSelection.assets(canary_report),
    description="Analyse the running canary (champion vs challenger) and apply the decision: "
    "roll back, widen or promote through the canary state file. Requested by canary_sensor.",
)


@dg.sensor(
    job=canary_job,
    minimum_interval_seconds=max(1, int(get_settings().monitoring.canary_interval_s)),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="While a challenger serves part of the customers (share between 0 and 1), runs "
    "the canary analysis, which rolls back or widens it on its own and promotes it where the "
    "policy lets it (in prod a release manager approves the promotion).",
)
def canary_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    settings = get_settings()
    try:
        config, _ = current_config(settings.canary_state, os.environ)
    except (OSError, ValueError) as error:  # a corrupt state file: the analysis would fail too
        return dg.SensorResult(skip_reason=f"canary state unreadable: {error}")
    if not config.enabled or not 0.0 < config.share < 1.0:
        return dg.SensorResult(skip_reason="no canary running")
    running = context.instance.get_run_ids(
        dg.RunsFilter(job_name=CANARY_JOB, statuses=ACTIVE), limit=1
    )
    if running:
        return dg.SensorResult(skip_reason="a canary analysis is running")
    context.log.info("canary %s at share %g: analysing", config.challenger_tag, config.share)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(tags={CHALLENGER_TAG: str(config.challenger_tag)})]
    )
