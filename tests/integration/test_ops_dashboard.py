"""ops_dashboard materialised against scratch loop, served and feedback logs.

BentoML fixes its store the first time it is used in a process, so BENTOML_HOME set here may come
too late: the registry read is replaced by a stub (empty, hand-written, or failing).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from recsys_assets.defs.monitoring.assets import mlops_kpis
from recsys_assets.defs.monitoring.dashboard import REPORT_NAME, ops_dashboard
from recsys_assets.defs.release.canary import canary_report
from recsys_assets.monitoring import loop
from recsys_assets.serving import registry as model_registry
from recsys_assets.serving.served_log import ServedLog, ServedRecord

PROMOTED = [
    {"tag": "recsys-ranker:v2", "version": "v2", "labels": {"environment": "test"},
     "created": "2024-03-02T10:02:10+00:00",
     "metadata": {"metrics": {"ndcg": 0.31}, "latency": {"p99_ms": 12.5},
                  "promoted_at": "2024-03-02T10:02:09+00:00"}},
]  # fmt: skip


@pytest.fixture
def paths(
    scratch_logs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Path]:
    paths = {**scratch_logs, "bentoml": tmp_path / "bentoml"}
    monkeypatch.setenv("BENTOML_HOME", str(paths["bentoml"]))
    monkeypatch.delenv("RECSYS_CHALLENGER_TAG", raising=False)
    monkeypatch.setattr(model_registry, "promoted_versions", lambda *a, **k: [])
    return paths


def materialise(instance: dg.DagsterInstance) -> dict:
    result = dg.materialize([ops_dashboard], instance=instance)
    assert result.success
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_fresh_install_gets_a_page_that_says_so(paths):
    metadata = materialise(dg.DagsterInstance.ephemeral())
    page = paths["reports"] / "monitoring" / REPORT_NAME
    assert Path(metadata["dashboard"]) == page and page.exists()
    assert metadata["dashboard_url"] == page.resolve().as_uri()
    assert metadata["dashboard_url"].startswith("file://")
    assert metadata["model_version"] == "none"
    assert metadata["incidents"] == 0 and metadata["requests"] == 0
    assert math.isnan(metadata["mttr_mean_s"])
    assert metadata["monitors_run"] == 0
    text = page.read_text(encoding="utf-8")
    assert "Nothing has happened on this installation yet" in text
    assert "Recommender operations (test)" in text


def test_an_unreadable_registry_shows_no_model(paths, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("store gone")

    monkeypatch.setattr(model_registry, "promoted_versions", broken)
    metadata = materialise(dg.DagsterInstance.ephemeral())
    assert metadata["model_version"] == "none"


def write_logs(paths: dict[str, Path]) -> None:
    log = loop.LoopLog(paths["loop"])
    log.append(loop.DRIFT_LANDED, ts="2024-03-02T10:00:00+00:00")
    values = {"item_mix_distance": 0.4, "data_drift_share": 0.1,
              "thresholds": {"item_mix_distance": 0.25, "drift_share": 0.3}}  # fmt: skip
    log.append(loop.DECISION, ts="2024-03-02T10:01:00+00:00", fire=True, triggers=["item_mix"],
               reason="retrain: item_mix over threshold", values=values)  # fmt: skip
    log.append(loop.TRAINING_FINISHED, ts="2024-03-02T10:02:00+00:00", model_version="v2")
    log.append(loop.PROMOTED, ts="2024-03-02T10:02:10+00:00", model_version="v2")
    log.append(loop.SERVING, ts="2024-03-02T10:03:00+00:00", model_version="v2")
    start = datetime(2024, 3, 2, 12, tzinfo=UTC)
    records = [
        ServedRecord(
            ts=start + timedelta(hours=i),
            request_id=f"r{i}",
            customer_id=f"c{i}",
            model_version="v2",
            variant=None,
            items=["a", "b"],
            scores=[0.9, 0.1],
            fallback_reason="unknown_customer" if i == 0 else None,
            as_of=(start + timedelta(hours=i)).isoformat(),
        )
        for i in range(4)
    ]
    with ServedLog(paths["served"]) as served:
        served.append(records)


def test_a_page_from_the_logs_and_the_latest_monitors(paths, monkeypatch):
    monkeypatch.setattr(model_registry, "promoted_versions", lambda *a, **k: PROMOTED)
    write_logs(paths)
    instance = dg.DagsterInstance.ephemeral()
    # two of the upstream assets ran before (cheap ones: the KPIs and the canary without one)
    assert dg.materialize([mlops_kpis, canary_report], instance=instance).success
    metadata = materialise(instance)
    assert metadata["model_version"] == "v2"
    assert metadata["incidents"] == 1 and metadata["open_incidents"] == 0
    assert metadata["mttr_mean_s"] == pytest.approx(120.0)
    assert metadata["requests"] == 4 and metadata["loop_events"] == 5
    assert metadata["monitors_run"] == 2
    text = Path(metadata["dashboard"]).read_text(encoding="utf-8")
    for heading in (
        "<h2>Model in service</h2>",
        "<h2>Drift signals against their thresholds</h2>",
        "<h2>Releases and rollbacks</h2>",
        "<h2>Traffic per day</h2>",
        "<h2>Latest monitor results</h2>",
    ):
        assert heading in text
    assert "<td>v2</td>" in text and "25.0%" in text  # the model; 1 of 4 requests fell back
    assert "no canary running" in text  # canary_report's latest status, from the instance
    assert "Nothing has happened" not in text
