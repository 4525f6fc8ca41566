"""Observability of the service: request spans, structured JSON logs and the tracing
configuration. The pipeline's metrics and traces read the Dagster instance, so they live in
``recsys_assets.defs.observability``."""
