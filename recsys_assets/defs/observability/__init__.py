"""Observability domain: traces of finished pipeline runs (metrics: ``python -m recsys_assets
metrics``, read from the instance, need no definitions)."""

import dagster as dg

from recsys_assets.defs.observability.sensors import (
    pipeline_failure_trace_sensor,
    pipeline_trace_sensor,
)

defs = dg.Definitions(sensors=[pipeline_trace_sensor, pipeline_failure_trace_sensor])
