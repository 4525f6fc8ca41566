"""OpenTelemetry traces of finished Dagster runs, rebuilt from the run's event log
(docs/observability.md#pipeline).

One trace per run, with the run's real timings: a root span for the run (job, run id, status,
tags) and one child span per step (asset keys, status, duration, attempts, scalar materialization
metadata such as rows, asset check results). A failed step, and a step whose ERROR-severity
check did not pass, get status ERROR with the message. The trace id *is* the run id (Dagster run
ids are UUIDs: 128 bits), so a run id in a log line, the UI or the loop log leads to its trace:
:func:`trace_id_for_run`. Span ids are derived from the run id and the step key, so exporting a
run twice gives the same ids.

The spans are built after the fact on a private tracer provider (never the global one), so this
works anywhere the Dagster instance is readable: the ``pipeline_trace_sensor``, the ``traces``
command, tests.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Status, StatusCode

__all__ = [
    "SERVICE_NAME",
    "export_run_trace",
    "find_run_id",
    "run_spans",
    "span_id_for_step",
    "trace_id_for_run",
]

SERVICE_NAME = "recsys-pipeline"
EventType = dg.DagsterEventType
MAX_ATTRIBUTE_CHARS = 256  # longer string metadata (paths, markdown, JSON) stays in Dagster
ROW_KEYS = ("dagster/row_count", "rows", "num_rows", "row_count")
RUN_END = {
    EventType.RUN_SUCCESS: "success",
    EventType.RUN_FAILURE: "failure",
    EventType.RUN_CANCELED: "canceled",
}
STEP_END = {
    EventType.STEP_SUCCESS: "success",
    EventType.STEP_FAILURE: "failure",
    EventType.STEP_SKIPPED: "skipped",
}
TRACED_EVENTS = {
    EventType.RUN_START,
    *RUN_END,
    EventType.STEP_START,
    *STEP_END,
    EventType.ASSET_MATERIALIZATION_PLANNED,
    EventType.ASSET_MATERIALIZATION,
    EventType.ASSET_CHECK_EVALUATION_PLANNED,
    EventType.ASSET_CHECK_EVALUATION,
}


def trace_id_for_run(run_id: str) -> str:
    """The trace id (32 hex digits) of a run: the run id's UUID as hex (its dashes removed);
    a run id that is not a UUID is hashed instead."""
    try:
        value = uuid.UUID(run_id).int
    except ValueError:
        value = 0
    if value == 0:  # not a UUID, or the invalid all-zero trace id
        value = int(hashlib.sha256(run_id.encode()).hexdigest()[:32], 16) or 1
    return format(value, "032x")


def span_id_for_step(run_id: str, step_key: str | None) -> str:
    """The span id (16 hex digits) of a step's span; ``step_key`` None: the run's root span."""
    digest = hashlib.sha256(f"{run_id}\0{step_key or ''}".encode()).hexdigest()
    return digest[:16] if int(digest[:16], 16) else "0000000000000001"


class _RunIds(IdGenerator):
    """Ids of one run's trace: the run's trace id, and the span id set just before each span."""

    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id
        self.next_span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.next_span_id


@dataclass
class _Step:
    key: str
    start: float | None = None
    end: float | None = None
    # success | failure | skipped (never ran: an upstream step failed or a blocking check
    # refused) | incomplete (started, never finished: the run is going on, crashed or canceled)
    status: str = "incomplete"
    attempts: int = 0
    assets: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)  # check name -> evaluation (or None)
    metadata: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (exception type, message)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _root_error(error: Any) -> tuple[str, str]:
    """The innermost error's class and message: what went wrong, without Dagster's wrapping."""
    while error.cause is not None:
        error = error.cause
    return error.cls_name or "Error", error.message.strip()


def _scalar(value: Any) -> Any | None:
    """A metadata value as a span attribute value: numbers, booleans, short strings."""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and len(value) <= MAX_ATTRIBUTE_CHARS:
        return value
    return None


def _steps(events: Iterable[Any]) -> dict[str, _Step]:
    """The steps of a run from its event log, in the order they were first seen."""
    steps: dict[str, _Step] = {}
    for entry in events:
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        kind = event.event_type
        step = steps.setdefault(entry.step_key, _Step(entry.step_key))
        data = event.event_specific_data
        if kind == EventType.STEP_START:
            step.attempts += 1
            step.start = entry.timestamp if step.start is None else step.start
        elif kind in STEP_END:
            step.status, step.end = STEP_END[kind], entry.timestamp
            if kind == EventType.STEP_FAILURE and data is not None and data.error:
                step.error = _root_error(data.error)
        elif kind in (
            EventType.ASSET_MATERIALIZATION_PLANNED,
            EventType.ASSET_MATERIALIZATION,
        ):
            materialized = kind == EventType.ASSET_MATERIALIZATION
            asset = event.asset_key.to_user_string()
            if asset not in step.assets:
                step.assets.append(asset)
            if materialized:
                for key, value in data.materialization.metadata.items():
                    scalar = _scalar(getattr(value, "value", None))
                    if scalar is not None:
                        step.metadata[f"{asset}.{key}"] = scalar
        elif kind in (
            EventType.ASSET_CHECK_EVALUATION_PLANNED,
            EventType.ASSET_CHECK_EVALUATION,
        ):
            if kind == EventType.ASSET_CHECK_EVALUATION:
                step.checks[data.check_name] = data
            else:
                step.checks.setdefault(data.check_name, None)
            asset = data.asset_key.to_user_string()  # a check step targets its asset
            if asset not in step.assets:
                step.assets.append(asset)
    return steps


def _run_attributes(run: dg.DagsterRun, status: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "dagster.job": run.job_name,
        "dagster.run_id": run.run_id,
        "dagster.run_status": status,
    }
    for key, value in sorted(run.tags.items()):
        if len(value) <= MAX_ATTRIBUTE_CHARS:
            attributes[f"dagster.tag.{key}"] = value
    return attributes


def _step_attributes(step: _Step, end: float) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "dagster.step_key": step.key,
        "dagster.step_status": step.status,
        "dagster.attempts": step.attempts,
        "dagster.duration_s": round(end - step.start, 6) if step.start is not None else 0.0,
    }
    if step.assets:
        attributes["dagster.asset_keys"] = list(step.assets)
    rows = [_rows(step.metadata, asset) for asset in step.assets]
    if any(r is not None for r in rows):  # rows written by the step, over its assets
        attributes["dagster.rows"] = sum(r for r in rows if r is not None)
    attributes.update({f"dagster.metadata.{k}": v for k, v in step.metadata.items()})
    for name, evaluation in step.checks.items():
        if evaluation is None:
            attributes[f"dagster.check.{name}.passed"] = "not evaluated"
            continue
        attributes[f"dagster.check.{name}.passed"] = bool(evaluation.passed)
        if not evaluation.passed and evaluation.description:
            attributes[f"dagster.check.{name}.description"] = evaluation.description[
                :MAX_ATTRIBUTE_CHARS
            ]
    return attributes


def _rows(metadata: dict[str, Any], asset: str) -> int | float | None:
    """The asset's row count: the first of :data:`ROW_KEYS` in its metadata."""
    for key in ROW_KEYS:
        value = metadata.get(f"{asset}.{key}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    return None


def _failed_checks(step: _Step) -> list[str]:
    """ERROR-severity checks of the step that did not pass (WARN: recorded, not an error)."""
    return [
        name
        for name, evaluation in step.checks.items()
        if evaluation is not None
        and not evaluation.passed
        and evaluation.severity == dg.AssetCheckSeverity.ERROR
    ]


def export_run_trace(instance: dg.DagsterInstance, run_id: str, exporter: SpanExporter) -> int:
    """Build the spans of run ``run_id`` from ``instance``'s event log and export them through
    ``exporter`` (left open: the caller owns it). Returns the number of spans. A run that has not
    finished is traced up to its latest event (its root span's status attribute says so)."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise KeyError(f"no run {run_id!r} in this Dagster instance")
    events = instance.all_logs(run_id, of_type=TRACED_EVENTS)
    record = instance.get_run_record_by_id(run_id)
    times = [e.timestamp for e in events] or [record.create_timestamp.timestamp()]
    started = next(
        (e.timestamp for e in events if e.dagster_event_type == EventType.RUN_START),
        record.start_time or min(times),
    )
    finish = next((e for e in events if e.dagster_event_type in RUN_END), None)
    ended = finish.timestamp if finish else max([started, *times])
    status = RUN_END[finish.dagster_event_type] if finish else run.status.value.lower()

    ids = _RunIds(int(trace_id_for_run(run_id), 16))
    provider = TracerProvider(
        sampler=ALWAYS_ON,
        resource=Resource.create({"service.name": SERVICE_NAME}),
        id_generator=ids,
        shutdown_on_exit=False,  # one provider per export: no atexit hook each
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)

    ids.next_span_id = int(span_id_for_step(run_id, None), 16)
    root = tracer.start_span(
        run.job_name, start_time=_ns(started), attributes=_run_attributes(run, status)
    )
    parent = trace.set_span_in_context(root)
    count = 1
    for step in _steps(events).values():
        if step.start is None and step.end is None and finish is not None:
            step.status = "skipped"  # planned, never started: shown at the run's end
        begin = step.start if step.start is not None else (step.end or ended)
        end = step.end if step.end is not None else ended
        ids.next_span_id = int(span_id_for_step(run_id, step.key), 16)
        span = tracer.start_span(
            step.key,
            context=parent,
            start_time=_ns(begin),
            attributes=_step_attributes(step, end),
        )
        failed = _failed_checks(step)
        if step.error is not None:
            kind, message = step.error
            bare = message.removeprefix(f"{kind}: ")  # Dagster's message starts with the type
            span.add_event("exception", {"exception.type": kind, "exception.message": bare})
            span.set_status(Status(StatusCode.ERROR, message))
        elif failed:
            span.set_status(Status(StatusCode.ERROR, f"asset check failed: {', '.join(failed)}"))
        span.end(end_time=_ns(max(end, begin)))
        count += 1
    if status == "failure":
        root.set_status(Status(StatusCode.ERROR, finish.message if finish else "run failed"))
    root.end(end_time=_ns(max(ended, started)))
    provider.force_flush()
    return count


def run_spans(instance: dg.DagsterInstance, run_id: str) -> Sequence[ReadableSpan]:
    """The spans of run ``run_id`` (root first, then the steps in order), without exporting."""
    exporter = InMemorySpanExporter()
    export_run_trace(instance, run_id, exporter)
    spans = exporter.get_finished_spans()
    return sorted(spans, key=lambda s: (s.parent is not None, s.start_time))


def find_run_id(instance: dg.DagsterInstance, prefix: str, limit: int = 1000) -> str | None:
    """The run id that is ``prefix`` or starts with it (the UI shows 8 characters), among the
    latest ``limit`` runs; None when none or several match."""
    if instance.get_run_by_id(prefix) is not None:
        return prefix
    matches = [r for r in instance.get_run_ids(limit=limit) if r.startswith(prefix)]
    return matches[0] if len(matches) == 1 else None
