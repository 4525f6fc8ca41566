"""The service's logs and traces: JSON log lines when ``RECSYS_LOG_FORMAT`` (or the environment)
says so, and with ``RECSYS_TRACING`` on (off, console or otlp; docs/observability.md) an
OpenTelemetry tracer on BentoML's own tracer provider, so a request's steps are children of
BentoML's request span. :data:`TRACING` is read when the service module is imported: a bad value
or a missing exporter package stops ``bentoml serve`` there, naming it."""

from __future__ import annotations

import logging
import os

from recsys_assets.observability.telemetry import tracing_config

logger = logging.getLogger("bentoml.recommender")  # the service's logger, in every module

TRACING = tracing_config()  # BentoML's tracing configuration, None when tracing is off


def service_tracing() -> dict:
    """The ``@bentoml.service`` keyword for :data:`TRACING` (none when tracing is off)."""
    return {"tracing": TRACING} if TRACING is not None else {}


def install(environment: object, tracer_name: str):
    """Set up this worker's logs (JSON, or the level of ``RECSYS_LOG_LEVEL``) and return the
    tracer named ``tracer_name`` with tracing on, else None (no spans)."""
    from recsys_assets.observability import telemetry

    if telemetry.log_format(environment) == "json":
        # the service's logger and the package's (the ranking path's warnings), not BentoML's
        telemetry.install_json_logs(
            [logger.name, "recsys_assets"], os.environ.get(telemetry.LOG_LEVEL_VAR)
        )
    elif os.environ.get(telemetry.LOG_LEVEL_VAR):
        logger.setLevel(os.environ[telemetry.LOG_LEVEL_VAR].upper())
    if TRACING is None:
        return None
    from bentoml._internal.configuration.containers import BentoMLContainer
    from opentelemetry import trace

    provider = BentoMLContainer.tracer_provider.get()  # the request spans' provider
    if "exporter_type" not in TRACING:  # console: BentoML 1.4 has no console exporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(telemetry.console_exporter()))
    trace.set_tracer_provider(provider)  # other instrumentation in this worker too
    mode = TRACING.get("exporter_type", "console")
    logger.info("tracing: %s exporter, sample rate %s", mode, TRACING["sample_rate"])
    return trace.get_tracer(tracer_name)


def tag_request_span(request_id: str, variant: str) -> None:
    """Name the request id and the variant on BentoML's request span: find a request by its id."""
    from opentelemetry import trace

    span = trace.get_current_span()
    span.set_attribute("recsys.request_id", request_id)
    span.set_attribute("recsys.variant", variant)
