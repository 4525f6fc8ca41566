"""The pipeline's Prometheus metrics, read from a Dagster instance with a tiny pipeline's runs."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from recsys_assets import cli, runs
from recsys_assets.defs.observability import pipeline_metrics

# --- a tiny pipeline: rows, drift figures, a WARN check that passes, an ERROR check that fails,
# a WARN check that could not judge, and a job whose only asset raises


@dg.asset
def validated_events() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 120, "rules_version": "r1"})


@dg.asset(
    deps=[validated_events],
    check_specs=[
        dg.AssetCheckSpec("data_drift", asset="data_drift_report"),
        dg.AssetCheckSpec("item_mix_window", asset="data_drift_report"),
    ],
)
def data_drift_report() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"drifted_share": 0.25, "item_mix_distance": 0.0125, "current_rows": 80},
        check_results=[
            dg.AssetCheckResult(
                check_name="data_drift", passed=True, severity=dg.AssetCheckSeverity.WARN
            ),
            # as a monitor reports a check with nothing to compare (defs/monitoring/assets.py)
            dg.AssetCheckResult(
                check_name="item_mix_window",
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description="not judged: no purchases in one of the windows",
                metadata={"outcome": "not_judged", "reason": "no purchases in one of the windows"},
            ),
        ],
    )


@dg.asset_check(asset=data_drift_report)
def drift_budget() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="drifted share 0.25 over 0.2")


@dg.asset
def raw_source() -> None:
    raise ValueError("source file vanished")


DEFS = dg.Definitions(
    assets=[validated_events, data_drift_report, raw_source],
    asset_checks=[drift_budget],
    jobs=[
        dg.define_asset_job("monitoring_job", [validated_events, data_drift_report]),
        dg.define_asset_job("ingestion_job", [raw_source]),
    ],
)


@dataclass
class Runs:
    home: Path
    instance: dg.DagsterInstance
    good: dg.ExecuteInProcessResult  # monitoring_job: succeeds, its drift_budget check fails
    broken: dg.ExecuteInProcessResult  # ingestion_job: raw_source raises


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    """A Dagster home (the project's dagster.yaml: SQLite storage, as in dev) holding one
    successful monitoring run and one failed ingestion run (tagged with a trigger)."""
    home = tmp_path_factory.mktemp("dagster_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home))
        runs.prepare_dagster_home()
        with dg.DagsterInstance.get() as instance:
            quiet = runs.QUIET
            good = DEFS.resolve_job_def("monitoring_job").execute_in_process(
                instance=instance, run_config=quiet
            )
            broken = DEFS.resolve_job_def("ingestion_job").execute_in_process(
                instance=instance,
                raise_on_error=False,
                run_config=quiet,
                tags={"recsys/trigger": "data_drift"},
            )
            yield Runs(home, instance, good, broken)


def _samples(text: str) -> dict[str, dict[tuple, float]]:
    """Family name -> {sorted label items: value}."""
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def test_exposition_has_runs_assets_monitors_and_checks(pipeline_runs):
    metrics = _samples(pipeline_metrics.render(pipeline_runs.instance).decode())

    assert metrics["recsys_pipeline_runs"] == {
        (("job", "ingestion_job"), ("status", "failure")): 1.0,
        (("job", "monitoring_job"), ("status", "success")): 1.0,
    }
    assert metrics["recsys_pipeline_last_run_success"] == {
        (("job", "ingestion_job"),): 0.0,
        (("job", "monitoring_job"),): 1.0,
    }
    record = pipeline_runs.instance.get_run_record_by_id(pipeline_runs.good.run_id)
    duration = metrics["recsys_pipeline_last_run_duration_seconds"]
    assert duration[(("job", "monitoring_job"),)] == pytest.approx(
        record.end_time - record.start_time
    )
    assert 0 < duration[(("job", "ingestion_job"),)] < 60

    # data_drift_report's current_rows is not a row key: no rows sample for it
    assert metrics["recsys_pipeline_asset_rows"] == {(("asset", "validated_events"),): 120.0}
    steps = metrics["recsys_pipeline_asset_step_duration_seconds"]
    assert set(steps) == {(("asset", "validated_events"),), (("asset", "data_drift_report"),)}
    stats = {
        s.step_key: s.end_time - s.start_time
        for s in pipeline_runs.instance.get_run_step_stats(pipeline_runs.good.run_id)
    }
    assert steps[(("asset", "validated_events"),)] == pytest.approx(stats["validated_events"])
    assert set(metrics["recsys_pipeline_asset_last_materialization_timestamp_seconds"]) == set(
        steps
    )  # the failed raw_source never materialized

    assert metrics["recsys_pipeline_monitor_value"] == {
        (("asset", "data_drift_report"), ("figure", "drifted_share")): pytest.approx(0.25),
        (("asset", "data_drift_report"), ("figure", "item_mix_distance")): pytest.approx(0.0125),
    }
    assert metrics["recsys_pipeline_asset_check_passed"] == {
        (("asset", "data_drift_report"), ("check", "data_drift")): 1.0,  # WARN, passed
        (("asset", "data_drift_report"), ("check", "drift_budget")): 0.0,  # ERROR, failed
    }  # item_mix_window could not judge: neither passed nor failed, no sample
    assert metrics["recsys_pipeline_asset_check_not_judged"] == {
        (("asset", "data_drift_report"), ("check", "data_drift")): 0.0,
        (("asset", "data_drift_report"), ("check", "drift_budget")): 0.0,
        (("asset", "data_drift_report"), ("check", "item_mix_window")): 1.0,
    }
    assert 0 <= metrics["recsys_pipeline_scrape_duration_seconds"][()] < 5


def test_the_scrape_is_bounded_by_the_latest_runs(pipeline_runs):
    metrics = _samples(pipeline_metrics.render(pipeline_runs.instance, run_limit=1).decode())
    assert metrics["recsys_pipeline_runs"] == {
        (("job", "ingestion_job"), ("status", "failure")): 1.0  # the newest run only
    }


def test_metrics_once_prints_the_exposition(pipeline_runs, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(pipeline_runs.home))
    assert cli.main(["metrics", "--once"]) == 0
    metrics = _samples(capsys.readouterr().out)
    assert metrics["recsys_pipeline_asset_rows"][(("asset", "validated_events"),)] == 120.0


def test_serve_answers_prometheus_scrapes(pipeline_runs):
    port = _free_port()
    stop = threading.Event()
    server = threading.Thread(
        target=pipeline_metrics.serve,
        kwargs={"port": port, "instance": pipeline_runs.instance, "stop": stop},
    )
    server.start()
    try:
        text = _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop.set()
        server.join(timeout=10)
    assert not server.is_alive()
    assert 'recsys_pipeline_runs{job="monitoring_job",status="success"} 1.0' in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape(url: str, attempts: int = 50) -> str:
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing served at {url}")
