"""Run traces: when a run of any job finishes, its trace goes where ``RECSYS_TRACING`` says
(console or OTLP, as for the service); with tracing off the sensors skip.

Run status sensors see every run of the instance (``monitor_all_code_locations``), the
``demo`` command's in-process runs included. Their trace id is the run id
(:func:`recsys_assets.defs.observability.pipeline_traces.trace_id_for_run`).
"""

import dagster as dg

from recsys_assets.defs.observability.pipeline_traces import export_run_trace, trace_id_for_run
from recsys_assets.observability.telemetry import TRACING_VAR, pipeline_span_exporter


def export_trace(context: dg.RunStatusSensorContext) -> dg.SkipReason | None:
    """Export the finished run's trace, or skip when tracing is off."""
    run_id = context.dagster_run.run_id
    exporter = pipeline_span_exporter()
    if exporter is None:
        # a skip ends the tick without writing a "sensor acted on run" event into the run
        return dg.SkipReason(f"{TRACING_VAR} is off: run {run_id} not traced")
    try:
        spans = export_run_trace(context.instance, run_id, exporter)
    finally:
        exporter.shutdown()
    trace_id = trace_id_for_run(run_id)
    context.log.info("exported %d spans of run %s as trace %s", spans, run_id, trace_id)
    return None


def _trace_sensor(name: str, status: dg.DagsterRunStatus) -> dg.SensorDefinition:
    return dg.run_status_sensor(
        run_status=status,
        name=name,
        monitor_all_code_locations=True,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Exports the trace of every run that ends in {status.value} (a root span "
        f"for the run, one span per step, trace id = run id) when {TRACING_VAR} is console or "
        "otlp; skips when it is off.",
    )(export_trace)


pipeline_trace_sensor = _trace_sensor("pipeline_trace_sensor", dg.DagsterRunStatus.SUCCESS)
pipeline_failure_trace_sensor = _trace_sensor(
    "pipeline_failure_trace_sensor", dg.DagsterRunStatus.FAILURE
)
