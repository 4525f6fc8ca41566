"""Traces and structured logs of the recommendation service (docs/observability.md).

- :func:`span_factory`: child spans of one request from an OpenTelemetry tracer, or, without
  one (tracing off, or opentelemetry not installed), a shared no-op context manager that costs
  well under a microsecond; :mod:`recsys_assets.serving.model` needs no OpenTelemetry import.
- :func:`tracing_config`: the ``tracing`` option of ``@bentoml.service`` from ``RECSYS_TRACING``
  (off by default: console spans on every request flood the log).
- :func:`pipeline_span_exporter`: the exporter for the pipeline's run traces, from the same
  variable (:mod:`recsys_assets.defs.observability.pipeline_traces`).
- :class:`JsonFormatter`: one JSON object per log line, with the request's id, trace and span
  ids, model version, variant and customer id (from :data:`REQUEST` or the record), nothing
  else the record carries.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from recsys_assets.config import variables

__all__ = [
    "LOG_FIELDS",
    "LOG_FORMAT_VAR",
    "LOG_LEVEL_VAR",
    "REQUEST",
    "SAMPLE_RATE_VAR",
    "TRACING_VAR",
    "JsonFormatter",
    "current_trace_ids",
    "install_json_logs",
    "log_format",
    "pipeline_span_exporter",
    "span_factory",
    "tracing_config",
]

TRACING_VAR = variables.TRACING.name  # off (default) | console | otlp
SAMPLE_RATE_VAR = variables.TRACE_SAMPLE_RATE.name  # share of requests traced (default 1.0)
LOG_FORMAT_VAR = variables.LOG_FORMAT.name  # json | text (default: json in acceptance/prod)
LOG_LEVEL_VAR = variables.LOG_LEVEL.name  # the service loggers' level (DEBUG: one line a request)
OTLP_ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_PROTOCOL_VAR = "OTEL_EXPORTER_OTLP_PROTOCOL"  # grpc | http/protobuf (default)
UNTRACED_PATHS = ("/livez", "/readyz", "/metrics")
OTLP_PACKAGES = {
    "http": ("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http"),
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc", "opentelemetry-exporter-otlp-proto-grpc"),
}

# The request being served (set by the service around /recommend): what every log line of the
# request carries. Only these keys; the customer id is the one personal field.
REQUEST_FIELDS = ("request_id", "model_version", "variant", "customer_id")
REQUEST: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "recsys_request", default=None
)
LOG_FIELDS = ("ts", "level", "logger", "message", "trace_id", "span_id", *REQUEST_FIELDS)


# --- Spans ---------------------------------------------------------------------------------------


class _NoSpan:
    """What a span helper yields when tracing is off: accepts the span calls, does nothing."""

    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def record_exception(self, error: BaseException) -> None:
        pass

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def _no_span(name: str, **attributes: Any) -> _NoSpan:
    return _NO_SPAN


def span_factory(
    tracer: Any | None, attributes: Mapping[str, Any] | None = None
) -> Callable[..., contextlib.AbstractContextManager]:
    """``span(name, **attributes)`` context managers for the steps of one request: spans of
    ``tracer`` (an OpenTelemetry tracer) that start as children of the current span and carry
    ``attributes`` plus their own, or no-ops when ``tracer`` is None. An exception leaving a
    span is recorded on it and marks it as an error (OpenTelemetry's default)."""
    if tracer is None:
        return _no_span
    common = {k: v for k, v in (attributes or {}).items() if v is not None}

    def span(name: str, **own: Any) -> contextlib.AbstractContextManager:
        return tracer.start_as_current_span(
            name, attributes={**common, **{k: v for k, v in own.items() if v is not None}}
        )

    return span


def mark_error(span: Any, error: BaseException) -> None:
    """Record a handled ``error`` on ``span`` and set its status to ERROR (no-op span: nothing)."""
    if isinstance(span, _NoSpan):
        return
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def current_trace_ids() -> tuple[str | None, str | None]:
    """The current span's trace and span ids as hex (None outside a span or without
    opentelemetry). BentoML gives every request a span context, sampled or not, so log lines
    carry a trace id even when no spans are exported."""
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - BentoML depends on it
        return None, None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def tracing_config(environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """The ``tracing`` option of ``@bentoml.service`` for ``RECSYS_TRACING``:

    - unset, empty or ``off``: None (BentoML's default: nothing sampled, nothing exported);
    - ``console``: ``{"sample_rate": r}``: BentoML samples its request spans, and the service
      adds a console exporter to BentoML's tracer provider (BentoML 1.4 has no console
      exporter type: its types are zipkin, jaeger, otlp and in_memory);
    - ``otlp``: BentoML's own OTLP exporter, to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (required) over
      ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, else HTTP); a ValueError naming the missing
      package when its exporter is not installed.

    ``RECSYS_TRACE_SAMPLE_RATE`` (default 1.0) is the share of requests traced."""
    mode = environ.get(TRACING_VAR, "").strip().lower()
    if mode in ("", "off", "none", "false", "0"):
        return None
    raw_rate = variables.TRACE_SAMPLE_RATE.read(environ)
    try:
        rate = float(raw_rate)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{SAMPLE_RATE_VAR}={raw_rate!r} is not a share in [0, 1]")
    # probes and scrapes every few seconds would outnumber the requests in the traces
    common = {"sample_rate": rate, "excluded_urls": list(UNTRACED_PATHS)}
    if mode == "console":
        return common
    if mode == "otlp":
        if not environ.get(OTLP_ENDPOINT_VAR):
            raise ValueError(f"{TRACING_VAR}=otlp needs {OTLP_ENDPOINT_VAR} (the collector's URL)")
        protocol = "grpc" if environ.get(OTLP_PROTOCOL_VAR, "").lower() == "grpc" else "http"
        module, package = OTLP_PACKAGES[protocol]
        if not _installed(module):
            raise ValueError(
                f"{TRACING_VAR}=otlp needs the package {package}, which is not installed "
                "(add it to the service's requirements)"
            )
        # endpoint left to the exporter: it reads OTEL_EXPORTER_OTLP_ENDPOINT and adds the
        # signal's path (/v1/traces over HTTP)
        return {**common, "exporter_type": "otlp", "otlp": {"protocol": protocol}}
    raise ValueError(f"{TRACING_VAR}={mode!r}: use off, console or otlp")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def console_exporter(out: Any | None = None) -> Any:
    """OpenTelemetry's console exporter writing one compact JSON object per span and line, to
    ``out`` (default: ``sys.stdout`` as it is now, not as it was when OpenTelemetry loaded)."""
    import sys

    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter(
        out=out or sys.stdout,
        formatter=lambda span: (
            json.dumps(json.loads(span.to_json()), separators=(",", ":")) + os.linesep
        ),
    )


def pipeline_span_exporter(environ: Mapping[str, str] = os.environ) -> Any | None:
    """A span exporter for the pipeline's run traces, from ``RECSYS_TRACING`` as for the
    service: None when off, :func:`console_exporter` for ``console``, OpenTelemetry's OTLP
    exporter for ``otlp`` (same variables, same errors as :func:`tracing_config`). Every
    finished run is exported: ``RECSYS_TRACE_SAMPLE_RATE`` is for requests only."""
    mode = environ.get(TRACING_VAR, "").strip().lower()
    if mode in ("", "off", "none", "false", "0"):
        return None
    if mode == "console":
        return console_exporter()
    if mode != "otlp":
        raise ValueError(f"{TRACING_VAR}={mode!r}: use off, console or otlp")
    if not environ.get(OTLP_ENDPOINT_VAR):
        raise ValueError(f"{TRACING_VAR}=otlp needs {OTLP_ENDPOINT_VAR} (the collector's URL)")
    protocol = "grpc" if environ.get(OTLP_PROTOCOL_VAR, "").lower() == "grpc" else "http"
    module, package = OTLP_PACKAGES[protocol]
    if not _installed(module):
        raise ValueError(f"{TRACING_VAR}=otlp needs the package {package}, which is not installed")
    exporter = importlib.import_module(f"{module}.trace_exporter")
    return exporter.OTLPSpanExporter()  # endpoint and headers from the OTEL_EXPORTER_* variables


# --- Logs ----------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``trace_id``, ``span_id`` and the request's ``request_id``, ``model_version``, ``variant``
    and ``customer_id`` (from the record's ``extra``, else :data:`REQUEST`; null outside a
    request), plus ``exception`` with the traceback when there is one. Nothing else of the
    record is written: arbitrary ``extra`` keys never leak into the line."""

    def format(self, record: logging.LogRecord) -> str:
        request = REQUEST.get() or {}
        trace_id, span_id = current_trace_ids()
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", None) or trace_id,
            "span_id": getattr(record, "span_id", None) or span_id,
        }
        for name in REQUEST_FIELDS:
            line[name] = getattr(record, name, None) or request.get(name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


def log_format(environment: str, environ: Mapping[str, str] = os.environ) -> str:
    """``json`` or ``text``: ``RECSYS_LOG_FORMAT``, else json in acceptance and prod (log
    collectors parse it), text in dev and test (people read it)."""
    chosen = environ.get(LOG_FORMAT_VAR, "").strip().lower()
    if chosen in ("json", "text"):
        return chosen
    if chosen:
        raise ValueError(f"{LOG_FORMAT_VAR}={chosen!r}: use json or text")
    return "json" if str(environment) in ("acceptance", "prod") else "text"


def install_json_logs(
    loggers: list[str], level: str | None = None, stream: Any = None
) -> logging.Handler:
    """Write ``loggers`` as JSON lines to ``stream`` (default stderr) through one handler, and
    stop them propagating (so BentoML's text handlers do not write them again). ``level``:
    their level (e.g. DEBUG), else left as it is. Idempotent per logger."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.set_name("recsys-json")
    for name in loggers:
        log = logging.getLogger(name)
        for old in [h for h in log.handlers if h.get_name() == "recsys-json"]:
            log.removeHandler(old)
        log.addHandler(handler)
        log.propagate = False
        if level:
            log.setLevel(level.upper())
    return handler


@contextlib.contextmanager
def request_context(**fields: Any) -> Iterator[None]:
    """Set :data:`REQUEST` for the duration of a request (per asyncio task / thread)."""
    token = REQUEST.set(fields)
    try:
        yield
    finally:
        REQUEST.reset(token)
