"""Traces of finished Dagster runs: one root span per run, a child per step, the run id as the
trace id; the exporter from RECSYS_TRACING, the ``traces`` command and the sensors."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from recsys_assets import cli
from recsys_assets.defs.observability import pipeline_failure_trace_sensor, pipeline_trace_sensor
from recsys_assets.defs.observability.pipeline_traces import (
    export_run_trace,
    find_run_id,
    run_spans,
    span_id_for_step,
    trace_id_for_run,
)
from recsys_assets.observability.telemetry import pipeline_span_exporter
from tests.unit.observability.test_pipeline_metrics import pipeline_runs  # noqa: F401 - the fixture


def _hex(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


def _by_name(spans) -> dict:
    return {span.name: span for span in spans}


def test_trace_id_is_the_run_id():
    run_id = "4f2b6a0e-8c1d-4e57-9a3b-2d6c7e8f9a01"
    assert trace_id_for_run(run_id) == "4f2b6a0e8c1d4e579a3b2d6c7e8f9a01"
    hashed = trace_id_for_run("not-a-uuid")
    assert len(hashed) == 32 and int(hashed, 16) and hashed == trace_id_for_run("not-a-uuid")
    assert span_id_for_step(run_id, "a") != span_id_for_step(run_id, None)
    assert len(span_id_for_step(run_id, "a")) == 16


def test_one_root_per_run_and_a_child_per_step(pipeline_runs):  # noqa: F811
    exporter = InMemorySpanExporter()
    instance = pipeline_runs.instance
    runs = (pipeline_runs.good, pipeline_runs.broken)
    counts = [export_run_trace(instance, result.run_id, exporter) for result in runs]
    spans = exporter.get_finished_spans()
    assert sum(counts) == len(spans)

    for result in runs:
        trace_id = trace_id_for_run(result.run_id)
        mine = [s for s in spans if _hex(s.context.trace_id, 32) == trace_id]
        [root] = [s for s in mine if s.parent is None]
        children = [s for s in mine if s.parent is not None]
        assert children and len(mine) == len(children) + 1
        assert _hex(root.context.span_id, 16) == span_id_for_step(result.run_id, None)
        assert root.attributes["dagster.run_id"] == result.run_id
        assert root.attributes["dagster.job"] == result.job_def.name
        assert root.resource.attributes["service.name"] == "recsys-pipeline"
        for child in children:
            assert child.parent.span_id == root.context.span_id
            assert child.parent.trace_id == root.context.trace_id
            assert root.start_time <= child.start_time <= child.end_time <= root.end_time
        assert root.start_time <= root.end_time


def test_step_spans_carry_assets_rows_checks_and_timings(pipeline_runs):  # noqa: F811
    spans = run_spans(pipeline_runs.instance, pipeline_runs.good.run_id)
    root, steps = spans[0], _by_name(spans[1:])
    assert root.attributes["dagster.run_status"] == "success"
    assert root.status.status_code == StatusCode.UNSET
    assert set(steps) == {"validated_events", "data_drift_report", "data_drift_report_drift_budget"}

    events = steps["validated_events"]
    assert events.attributes["dagster.asset_keys"] == ("validated_events",)
    assert events.attributes["dagster.step_status"] == "success"
    assert events.attributes["dagster.rows"] == 120
    assert events.attributes["dagster.metadata.validated_events.rules_version"] == "r1"
    stats = {
        s.step_key: s
        for s in pipeline_runs.instance.get_run_step_stats(root.attributes["dagster.run_id"])
    }
    assert events.start_time / 1e9 == pytest.approx(stats["validated_events"].start_time, abs=1e-6)
    assert events.end_time / 1e9 == pytest.approx(stats["validated_events"].end_time, abs=1e-6)
    assert events.attributes["dagster.duration_s"] == pytest.approx(
        (events.end_time - events.start_time) / 1e9, abs=1e-5
    )

    drift = steps["data_drift_report"]
    assert drift.attributes["dagster.metadata.data_drift_report.drifted_share"] == 0.25
    assert drift.attributes["dagster.check.data_drift.passed"] is True
    assert drift.status.status_code == StatusCode.UNSET

    budget = steps["data_drift_report_drift_budget"]  # its own step; ERROR severity, not passed
    assert budget.attributes["dagster.asset_keys"] == ("data_drift_report",)
    assert budget.attributes["dagster.check.drift_budget.passed"] is False
    assert budget.attributes["dagster.check.drift_budget.description"].startswith("drifted share")
    assert budget.status.status_code == StatusCode.ERROR
    assert "drift_budget" in budget.status.description


def test_a_failed_step_is_an_error_with_its_message(pipeline_runs):  # noqa: F811
    spans = run_spans(pipeline_runs.instance, pipeline_runs.broken.run_id)
    root, steps = spans[0], _by_name(spans[1:])
    assert root.attributes["dagster.run_status"] == "failure"
    assert root.attributes["dagster.tag.recsys/trigger"] == "data_drift"
    assert root.status.status_code == StatusCode.ERROR
    failed = steps["raw_source"]
    assert failed.attributes["dagster.step_status"] == "failure"
    assert failed.status.status_code == StatusCode.ERROR
    assert "source file vanished" in failed.status.description
    [event] = failed.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "source file vanished"


def test_steps_that_never_ran_are_skipped_spans():
    @dg.asset
    def challenger() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"rows": 3})

    @dg.asset_check(asset=challenger, blocking=True)
    def gate() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, description="worse than the champion")

    @dg.asset(deps=[challenger])
    def promoted() -> None:
        return None

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([challenger, promoted, gate], instance=instance, raise_on_error=False)
    steps = _by_name(run_spans(instance, result.run_id)[1:])
    assert steps["challenger_gate"].status.status_code == StatusCode.ERROR
    assert steps["promoted"].attributes["dagster.step_status"] == "skipped"
    assert steps["promoted"].start_time == steps["promoted"].end_time


def test_exporter_follows_recsys_tracing():
    assert pipeline_span_exporter({}) is None
    assert pipeline_span_exporter({"RECSYS_TRACING": "off"}) is None
    assert isinstance(pipeline_span_exporter({"RECSYS_TRACING": "console"}), ConsoleSpanExporter)
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        pipeline_span_exporter({"RECSYS_TRACING": "otlp"})
    with pytest.raises(ValueError, match="use off, console or otlp"):
        pipeline_span_exporter({"RECSYS_TRACING": "jaeger"})


def test_traces_command_prints_json_spans(pipeline_runs, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("DAGSTER_HOME", str(pipeline_runs.home))
    monkeypatch.delenv("RECSYS_TRACING", raising=False)  # printed whatever it says
    run_id = pipeline_runs.broken.run_id
    assert find_run_id(pipeline_runs.instance, run_id[:8]) == run_id
    assert cli.main(["traces", run_id[:8]]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert {line["name"] for line in lines} == {"ingestion_job", "raw_source"}
    assert {line["context"]["trace_id"] for line in lines} == {f"0x{trace_id_for_run(run_id)}"}
    assert trace_id_for_run(run_id) in err
    assert cli.main(["traces", "no-such-run"]) == 2


def _sensor_context(instance, result, sensor_name):
    event = result.get_run_success_event() if result.success else result.get_run_failure_event()
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
    )


def test_sensors_export_when_tracing_is_on(pipeline_runs, monkeypatch, capsys):  # noqa: F811
    instance, good, broken = pipeline_runs.instance, pipeline_runs.good, pipeline_runs.broken
    monkeypatch.delenv("RECSYS_TRACING", raising=False)
    skipped = pipeline_trace_sensor(_sensor_context(instance, good, "pipeline_trace_sensor"))
    assert isinstance(skipped, dg.SkipReason) and "RECSYS_TRACING is off" in skipped.skip_message
    assert capsys.readouterr().out == ""

    monkeypatch.setenv("RECSYS_TRACING", "console")
    name = "pipeline_failure_trace_sensor"
    assert pipeline_failure_trace_sensor(_sensor_context(instance, broken, name)) is None
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["name"] for line in lines} == {"ingestion_job", "raw_source"}
    assert {line["context"]["trace_id"] for line in lines} == {
        f"0x{trace_id_for_run(broken.run_id)}"
    }
