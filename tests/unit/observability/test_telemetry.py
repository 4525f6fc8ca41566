"""Spans of one recommendation, the tracing configuration and the JSON log formatter."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from recsys_assets.core import constants as c
from recsys_assets.observability import telemetry
from recsys_assets.observability.telemetry import (
    JsonFormatter,
    log_format,
    span_factory,
    tracing_config,
)
from recsys_assets.serving.model import (
    FALLBACK_FEATURES_UNAVAILABLE,
    FALLBACK_UNKNOWN_CUSTOMER,
    TableReader,
    recommend,
)
from tests.unit.serving.test_model import BrokenReader, fitted  # noqa: F401 - the fixture
from tests.unit.training.test_ranker import SPLIT

STEPS = ["candidate_lookup", "feature_read", "ranking", "business_filters"]


@pytest.fixture
def traced():
    """(tracer, exporter): an SDK tracer whose finished spans land in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def test_one_recommendation_is_four_child_spans_with_their_attributes(fitted, traced):  # noqa: F811
    ranker, model, train = fitted
    tracer, exporter = traced
    customer = train[c.USER_ID].iloc[0]
    with tracer.start_as_current_span("request") as parent:
        got = recommend(
            model,
            TableReader(ranker.tables),
            customer,
            k=3,
            as_of=SPLIT,
            tracer=tracer,
            span_attributes={"recsys.variant": "champion"},
        )
    assert not got.fallback
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [*STEPS, "request"]
    n = len(model.candidates.lookup(customer)[0])
    for span in spans[:-1]:
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.context.trace_id == parent.get_span_context().trace_id
        assert span.attributes["recsys.model_version"] == "v-test"
        assert span.attributes["recsys.variant"] == "champion"
        assert span.attributes["recsys.candidates"] == n
        assert "recsys.fallback_reason" not in span.attributes
    assert spans[3].attributes["recsys.k"] == 3 and spans[3].attributes["recsys.kept"] == n


def test_fallback_spans_carry_the_reason(fitted, traced):  # noqa: F811
    _, model, train = fitted
    tracer, exporter = traced
    recommend(model, TableReader({}), "never-seen", k=2, tracer=tracer)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["candidate_lookup", "business_filters"]
    assert spans[0].attributes["recsys.candidates"] == 0
    assert spans[1].attributes["recsys.fallback_reason"] == FALLBACK_UNKNOWN_CUSTOMER

    exporter.clear()
    got = recommend(model, BrokenReader(), train[c.USER_ID].iloc[0], k=2, tracer=tracer)
    assert got.fallback_reason == FALLBACK_FEATURES_UNAVAILABLE
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["candidate_lookup", "feature_read", "business_filters"]
    read = spans[1]
    assert read.status.status_code is StatusCode.ERROR
    assert read.attributes["recsys.fallback_reason"] == FALLBACK_FEATURES_UNAVAILABLE
    assert [e.name for e in read.events] == ["exception"]
    assert spans[2].attributes["recsys.fallback_reason"] == FALLBACK_FEATURES_UNAVAILABLE


def test_without_a_tracer_the_steps_are_shared_no_ops(fitted):  # noqa: F811
    span = span_factory(None)
    assert span("a") is span("b", x=1)
    with span("a") as step:
        step.set_attribute("k", 1)  # accepted, nothing recorded
    ranker, model, train = fitted
    got = recommend(model, TableReader(ranker.tables), train[c.USER_ID].iloc[0], as_of=SPLIT)
    assert not got.fallback


def test_tracing_is_off_unless_asked_and_names_what_is_missing():
    assert tracing_config({}) is None
    assert tracing_config({"RECSYS_TRACING": "off"}) is None
    probes = ["/livez", "/readyz", "/metrics"]  # never traced
    console = tracing_config({"RECSYS_TRACING": "console"})
    assert console == {"sample_rate": 1.0, "excluded_urls": probes}
    quarter = tracing_config({"RECSYS_TRACING": "Console", "RECSYS_TRACE_SAMPLE_RATE": "0.25"})
    assert quarter == {"sample_rate": 0.25, "excluded_urls": probes}
    with pytest.raises(ValueError, match="RECSYS_TRACE_SAMPLE_RATE"):
        tracing_config({"RECSYS_TRACING": "console", "RECSYS_TRACE_SAMPLE_RATE": "2"})
    with pytest.raises(ValueError, match="off, console or otlp"):
        tracing_config({"RECSYS_TRACING": "jaeger"})
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        tracing_config({"RECSYS_TRACING": "otlp"})


def test_otlp_needs_its_exporter_package(monkeypatch):
    env = {"RECSYS_TRACING": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    monkeypatch.setattr(telemetry, "_installed", lambda module: False)
    with pytest.raises(ValueError, match="opentelemetry-exporter-otlp-proto-http"):
        tracing_config(env)
    with pytest.raises(ValueError, match="opentelemetry-exporter-otlp-proto-grpc"):
        tracing_config({**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    monkeypatch.setattr(telemetry, "_installed", lambda module: True)
    assert tracing_config(env) == {
        "exporter_type": "otlp",
        "sample_rate": 1.0,
        "excluded_urls": ["/livez", "/readyz", "/metrics"],
        "otlp": {"protocol": "http"},
    }


def test_log_format_is_json_in_acceptance_and_prod_unless_set():
    assert log_format("dev", {}) == "text" and log_format("test", {}) == "text"
    assert log_format("acceptance", {}) == "json" and log_format("prod", {}) == "json"
    assert log_format("dev", {"RECSYS_LOG_FORMAT": "JSON"}) == "json"
    assert log_format("prod", {"RECSYS_LOG_FORMAT": "text"}) == "text"
    with pytest.raises(ValueError, match="RECSYS_LOG_FORMAT"):
        log_format("dev", {"RECSYS_LOG_FORMAT": "xml"})


def _record(message="hello %s", args=("world",), level=logging.WARNING, **extra):
    record = logging.LogRecord("bentoml.recommender", level, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_hold_the_request_fields_and_nothing_else(traced):
    formatter = JsonFormatter()
    outside = json.loads(formatter.format(_record()))
    assert outside["message"] == "hello world" and outside["level"] == "WARNING"
    assert outside["request_id"] is None and outside["trace_id"] is None
    assert set(outside) == set(telemetry.LOG_FIELDS)

    tracer, _ = traced
    request = {
        "request_id": "r1",
        "model_version": "v1",
        "variant": "champion",
        "customer_id": "17850",
    }
    with telemetry.request_context(**request), tracer.start_as_current_span("req") as span:
        record = _record(api_key="secret-key", authorization="Bearer x", email="a@b.c")
        line = json.loads(formatter.format(record))
    assert set(line) == set(telemetry.LOG_FIELDS)  # the extras never leak
    assert "secret" not in json.dumps(line) and "a@b.c" not in json.dumps(line)
    assert {k: line[k] for k in request} == request
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert line["ts"].endswith("+00:00")
    assert telemetry.REQUEST.get() is None  # reset after the request

    # a record's own request fields win over the context's
    assert json.loads(formatter.format(_record(request_id="r2")))["request_id"] == "r2"


def test_json_lines_carry_the_exception():
    formatter = JsonFormatter()
    try:
        raise ConnectionError("online store down")
    except ConnectionError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=__import__("sys").exc_info()
        )
    line = json.loads(formatter.format(record))
    assert line["level"] == "ERROR" and line["message"] == "failed"
    assert "ConnectionError: online store down" in line["exception"]
    assert line["exception"].startswith("Traceback")


def test_installed_json_logs_write_one_line_per_record_without_propagating():
    stream = io.StringIO()
    name = "recsys-test-telemetry"
    log = logging.getLogger(name)
    try:
        telemetry.install_json_logs([name], "debug", stream)
        telemetry.install_json_logs([name], "debug", stream)  # idempotent: still one handler
        with telemetry.request_context(request_id="r9"):
            log.debug("one %d", 1)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0])["request_id"] == "r9"
        assert not log.propagate and log.level == logging.DEBUG
    finally:
        log.handlers.clear()
        log.propagate = True
        log.setLevel(logging.NOTSET)
