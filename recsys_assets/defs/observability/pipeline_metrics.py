"""Prometheus metrics of the pipeline, read from a Dagster instance at each scrape
(docs/observability.md#pipeline).

:class:`PipelineCollector` turns the instance's run storage and event log into gauges: runs by
job and status, each job's latest run, each asset's latest materialization (step duration, rows,
age), the monitors' drift figures and the latest result of every asset check (passed, failed,
or not judged: a monitor with nothing to compare is neither). The work per
scrape is bounded: the latest ``run_limit`` runs, one latest materialization per asset (at most
``asset_limit`` assets), the step stats and check evaluations of the runs that produced them,
and one query for the checks' latest results. Labels are job, asset, check, status and figure
names only (no run ids, partitions or versions).

:func:`render` gives the exposition text once; :func:`serve` serves ``/metrics`` until stopped.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from recsys_assets.monitoring.loop import NOT_JUDGED

__all__ = [
    "MONITOR_FIGURES",
    "PREFIX",
    "ROW_KEYS",
    "PipelineCollector",
    "registry",
    "render",
    "serve",
]

PREFIX = "recsys_pipeline"
# Row counts in materialization metadata, first found wins: the tables' Dagster row count
# (recsys_assets/defs/metadata.py), then the monitors' and other assets' own keys.
ROW_KEYS = ("dagster/row_count", "rows", "num_rows", "row_count")
# The monitors' figures worth a time series (recsys_assets/defs/monitoring/assets.py): what the
# retraining triggers compare with their thresholds, and their p-values and context.
MONITOR_FIGURES: Mapping[str, tuple[str, ...]] = {
    "data_drift_report": (
        "drifted_share",
        "item_mix_distance",
        "item_mix_js",
        "item_mix_js_expected",
        "item_mix_pvalue",
    ),
    "data_quality_report": ("problems", "quarantined_rows"),
    "prediction_drift_report": (
        "score_ks",
        "score_ks_pvalue",
        "score_wasserstein_normed",
        "served_item_distance",
        "reference_fallback_rate",
        "current_fallback_rate",
    ),
    "live_performance": (
        "hit_rate",
        "reference_hit_rate",
        "offline_hit_rate",
        "performance_drop",
        "scored_lists",
    ),
    # the loop's KPIs (recsys_assets/monitoring/loop.py): incidents, detection, recovery, deployment
    "mlops_kpis": (
        "incidents",
        "open_incidents",
        "mttd_mean_s",
        "mttr_mean_s",
        "deployment_mean_s",
        "deployments",
    ),
}
CHECK_DONE = {
    AssetCheckExecutionRecordStatus.SUCCEEDED: 1.0,
    AssetCheckExecutionRecordStatus.FAILED: 0.0,
}


def _number(value: Any) -> float | None:
    """A metadata value as a gauge value: numbers and booleans, a list's length; else None."""
    value = getattr(value, "value", value)
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return float(len(value))
    return None


def _outcome(evaluation: Any) -> str | None:
    """A check evaluation's ``outcome`` metadata (the monitors': passed, failed, not_judged)."""
    value = (getattr(evaluation, "metadata", None) or {}).get("outcome")
    value = getattr(value, "value", value)
    return value if isinstance(value, str) else None


def _rows(metadata: Mapping[str, Any]) -> float | None:
    for key in ROW_KEYS:
        if key in metadata and (rows := _number(metadata[key])) is not None:
            return rows
    return None


class PipelineCollector(Collector):
    """Gauges of a Dagster instance's runs, materializations and checks, read at each
    ``collect()`` (a scrape)."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_limit: int = 500,
        asset_limit: int = 500,
        monitor_figures: Mapping[str, Sequence[str]] = MONITOR_FIGURES,
    ) -> None:
        self.instance = instance
        self.run_limit = run_limit
        self.asset_limit = asset_limit
        self.monitor_figures = monitor_figures

    def describe(self) -> list:
        return []  # no collect() (queries) when registered

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.perf_counter()
        yield from self._runs()
        yield from self._assets()
        yield GaugeMetricFamily(
            f"{PREFIX}_scrape_duration_seconds",
            "Seconds this scrape spent reading the Dagster instance.",
            value=time.perf_counter() - started,
        )

    # --- runs -----------------------------------------------------------------------------

    def _runs(self) -> Iterator[GaugeMetricFamily]:
        records = self.instance.get_run_records(limit=self.run_limit)  # newest first
        runs = GaugeMetricFamily(
            f"{PREFIX}_runs",
            f"Runs by job and status among the latest {self.run_limit} runs of the instance.",
            labels=["job", "status"],
        )
        counts = Counter(
            (r.dagster_run.job_name, r.dagster_run.status.value.lower()) for r in records
        )
        for (job, status), count in sorted(counts.items()):
            runs.add_metric([job, status], count)
        yield runs

        duration = GaugeMetricFamily(
            f"{PREFIX}_last_run_duration_seconds",
            "Wall time of each job's latest finished run.",
            labels=["job"],
        )
        success = GaugeMetricFamily(
            f"{PREFIX}_last_run_success",
            "1 when each job's latest finished run succeeded, 0 when it failed or was canceled.",
            labels=["job"],
        )
        ended = GaugeMetricFamily(
            f"{PREFIX}_last_run_end_timestamp_seconds",
            "End time (Unix seconds) of each job's latest finished run.",
            labels=["job"],
        )
        seen: set[str] = set()
        for record in records:
            run = record.dagster_run
            if run.job_name in seen or not run.is_finished or record.end_time is None:
                continue
            seen.add(run.job_name)
            if record.start_time is not None:
                duration.add_metric([run.job_name], record.end_time - record.start_time)
            success.add_metric([run.job_name], float(run.is_success))
            ended.add_metric([run.job_name], record.end_time)
        yield from (duration, success, ended)

    # --- assets and checks ----------------------------------------------------------------

    def _assets(self) -> Iterator[GaugeMetricFamily]:
        keys = list(self.instance.get_asset_keys(limit=self.asset_limit))
        latest = {
            key: entry
            for key, entry in self.instance.get_latest_materialization_events(keys).items()
            if entry is not None and entry.asset_materialization is not None
        }
        steps_by_run: dict[str, set[str]] = {}
        for entry in latest.values():
            if entry.step_key:
                steps_by_run.setdefault(entry.run_id, set()).add(entry.step_key)

        step_seconds: dict[tuple[str, str], float] = {}
        check_keys: set[dg.AssetCheckKey] = set()
        for run_id, step_keys in steps_by_run.items():
            for stats in self.instance.get_run_step_stats(run_id, step_keys=sorted(step_keys)):
                if stats.start_time is not None and stats.end_time is not None:
                    step_seconds[(run_id, stats.step_key)] = stats.end_time - stats.start_time
            # the checks evaluated with these materializations (their own steps included)
            for entry in self.instance.all_logs(
                run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ):
                evaluation = entry.dagster_event.event_specific_data
                check_keys.add(dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name))

        step = GaugeMetricFamily(
            f"{PREFIX}_asset_step_duration_seconds",
            "Duration of the step that produced each asset's latest materialization.",
            labels=["asset"],
        )
        rows = GaugeMetricFamily(
            f"{PREFIX}_asset_rows",
            "Rows in each asset's latest materialization (of its latest partition when "
            f"partitioned), from the metadata keys {', '.join(ROW_KEYS)}.",
            labels=["asset"],
        )
        when = GaugeMetricFamily(
            f"{PREFIX}_asset_last_materialization_timestamp_seconds",
            "Time (Unix seconds) of each asset's latest materialization.",
            labels=["asset"],
        )
        figures = GaugeMetricFamily(
            f"{PREFIX}_monitor_value",
            "Figures of the monitors' latest materialization (drift shares and distances, "
            "p-values, hit rates), by monitor asset and figure name.",
            labels=["asset", "figure"],
        )
        for key, entry in sorted(latest.items(), key=lambda item: item[0].to_user_string()):
            asset = key.to_user_string()
            metadata = entry.asset_materialization.metadata
            when.add_metric([asset], entry.timestamp)
            if (entry.run_id, entry.step_key) in step_seconds:
                step.add_metric([asset], step_seconds[(entry.run_id, entry.step_key)])
            if (count := _rows(metadata)) is not None:
                rows.add_metric([asset], count)
            for name in self.monitor_figures.get(asset, ()):
                value = _number(metadata.get(name))
                if value is not None and not math.isnan(value):
                    figures.add_metric([asset, name], value)
        yield from (step, rows, when, figures)
        yield from self._checks(check_keys)

    def _checks(self, check_keys: set[dg.AssetCheckKey]) -> Iterator[GaugeMetricFamily]:
        passed = GaugeMetricFamily(
            f"{PREFIX}_asset_check_passed",
            "Latest result of each asset check that judged: 1 passed, 0 failed (a check "
            "that could not judge has no sample here, see asset_check_not_judged).",
            # no severity label: a check's severity may change with its result, which would
            # split the series
            labels=["asset", "check"],
        )
        not_judged = GaugeMetricFamily(
            f"{PREFIX}_asset_check_not_judged",
            "1 when the latest result of each asset check could not judge (metadata outcome "
            f"{NOT_JUDGED}: a monitor with nothing to compare), 0 when it judged.",
            labels=["asset", "check"],
        )
        if not check_keys:
            yield from (passed, not_judged)
            return
        latest = self.instance.event_log_storage.get_latest_asset_check_execution_by_key(
            sorted(check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name))
        )
        for key, record in sorted(
            latest.items(), key=lambda item: (item[0].asset_key.to_user_string(), item[0].name)
        ):
            if record.status not in CHECK_DONE or record.event is None:
                continue  # planned: still running (or its step failed before evaluating)
            labels = [key.asset_key.to_user_string(), key.name]
            unknown = _outcome(record.evaluation) == NOT_JUDGED
            not_judged.add_metric(labels, float(unknown))
            if not unknown:
                passed.add_metric(labels, CHECK_DONE[record.status])
        yield from (passed, not_judged)


def registry(instance: dg.DagsterInstance, **options: Any) -> CollectorRegistry:
    """A private registry holding only a :class:`PipelineCollector` of ``instance``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(instance, **options))
    return registry


def render(instance: dg.DagsterInstance, **options: Any) -> bytes:
    """The pipeline's metrics in the Prometheus text format, read now."""
    return generate_latest(registry(instance, **options))


def serve(
    port: int = 9464,
    host: str = "127.0.0.1",
    instance: dg.DagsterInstance | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve the pipeline's metrics over HTTP (any path, ``/metrics`` for Prometheus) on
    ``host:port`` until ``stop`` is set (forever by default). ``instance``: default
    ``DagsterInstance.get()`` (``DAGSTER_HOME``)."""
    server, thread = start_http_server(
        port, addr=host, registry=registry(instance or dg.DagsterInstance.get())
    )
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        thread.join(timeout=5)
