"""The operations dashboard's figures and page (lib/dashboard)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from recsys_assets.monitoring import dashboard, loop
from recsys_assets.serving.served_log import ServedLog, ServedRecord, empty_frame

THRESHOLDS = {
    "drift_share": 0.3,
    "item_mix_distance": 0.25,
    "score_ks": 0.2,
    "served_item_distance": 0.4,
    "performance_drop": 0.25,
    "min_lists": 100,
}


def decision(ts: str, *, fire: bool, drift: float, mix: float, **extra) -> dict:
    values = {"data_drift_share": drift, "item_mix_distance": mix, "score_ks": None,
              "performance_drop": None, "model_version": "v1",
              "thresholds": THRESHOLDS}  # fmt: skip
    triggers = ["item_mix"] if fire else []
    return {"ts": ts, "kind": loop.DECISION, "fire": fire, "triggers": triggers,
            "reason": "r", "values": values, **extra}  # fmt: skip


EVENTS = [
    {"ts": "2024-03-01T10:00:00+00:00", "kind": loop.PROMOTED, "model_version": "v1", "tag": "t1"},
    {"ts": "2024-03-01T10:00:30+00:00", "kind": loop.SERVING, "model_version": "v1"},
    {"ts": "2024-03-02T10:00:00+00:00", "kind": loop.DRIFT_LANDED},
    decision("2024-03-02T10:00:20+00:00", fire=False, drift=0.1, mix=0.1),
    decision("2024-03-02T10:01:00+00:00", fire=True, drift=0.2, mix=0.4),
    {"ts": "2024-03-02T10:02:00+00:00", "kind": loop.TRAINING_FINISHED, "model_version": "v2"},
    {"ts": "2024-03-02T10:02:10+00:00", "kind": loop.PROMOTED, "model_version": "v2"},
    {"ts": "2024-03-02T10:03:00+00:00", "kind": loop.SERVING, "model_version": "v2"},
    {"ts": "2024-03-03T09:00:00+00:00", "kind": loop.CANARY_DECISION, "action": "rollback",
     "current_share": 0.1, "next_share": 0.0, "reasons": ["conversion down"],
     "challenger_tag": "recsys-ranker:v3"},
    {"ts": "2024-03-03T09:00:05+00:00", "kind": loop.ROLLED_BACK,
     "challenger_tag": "recsys-ranker:v3"},
    {"ts": "2024-03-03T11:00:00+00:00", "kind": loop.GATE_REFUSED, "model_version": "v4",
     "reasons": ["ndcg too low"]},
]  # fmt: skip

PROMOTED = [
    {"tag": "recsys-ranker:v2", "version": "v2", "labels": {"environment": "test"},
     "created": "2024-03-02T10:02:10+00:00",
     "metadata": {"metrics": {"ndcg": 0.31, "hit_rate": 0.5}, "latency": {"p99_ms": 12.5},
                  "promoted_at": "2024-03-02T10:02:09+00:00", "data_end": "2024-03-02"}},
    {"tag": "recsys-ranker:v1", "version": "v1", "labels": {}, "created": "2024-03-01T10:00:00",
     "metadata": {"metrics": {"ndcg": 0.3}}},
]  # fmt: skip


def served_frame(tmp_path) -> pd.DataFrame:
    """Day 1: 3 requests of v1 (one fallback); day 2: 2 of v2 in the champion variant, 1 of v3
    in the challenger variant, one fallback."""
    base = datetime(2024, 3, 1, 12, tzinfo=UTC)
    specs = [
        (0, "v1", None, None),
        (0, "v1", None, "unknown_customer"),
        (0, "v1", None, None),
        (1, "v2", "champion", None),
        (1, "v2", "champion", "unknown_customer"),
        (1, "v3", "challenger", None),
    ]
    records = [
        ServedRecord(
            ts=datetime(2024, 5, 1, tzinfo=UTC),  # wall clock of a replay: not the day shown
            request_id=f"r{i}",
            customer_id=f"c{i}",
            model_version=version,
            variant=variant,
            items=["a"],
            scores=[1.0],
            fallback_reason=reason,
            as_of=(base + timedelta(days=day)).isoformat(),
        )
        for i, (day, version, variant, reason) in enumerate(specs)
    ]
    with ServedLog(tmp_path / "served.jsonl") as log:
        log.append(records)
    return ServedLog(tmp_path / "served.jsonl").read()


MONITORS = {
    "data_drift_report": {"status": "measured", "drifted_share": 0.2, "item_mix_distance": 0.4,
                          "model_version": "v2", "report": "/x/data_drift.html",
                          "materialized_at": "2024-03-03T08:00:00+00:00"},
    "mlops_kpis": {"incidents": 1, "open_incidents": 0, "mttr_mean_s": 120.0,
                   "mttd_mean_s": float("nan")},
    "custom_monitor": {"status": "measured", "widgets": 3, "notes": ["a"]},
}  # fmt: skip


@pytest.fixture
def figures(tmp_path):
    return dashboard.dashboard_figures(
        EVENTS, PROMOTED, served_frame(tmp_path), MONITORS, environment="test",
        generated_at="2024-03-04T00:00:00+00:00",
    )  # fmt: skip


def test_current_model_is_the_newest_promoted(figures):
    model = figures["current_model"]
    assert model["version"] == "v2" and model["tag"] == "recsys-ranker:v2"
    assert model["promoted_at"] == "2024-03-02T10:02:09+00:00"
    assert model["ndcg"] == pytest.approx(0.31)
    assert model["latency_p99_ms"] == pytest.approx(12.5)
    assert model["promoted_versions"] == 2
    assert figures["environment"] == "test"
    # order of the input does not matter
    again = dashboard.current_model(list(reversed(PROMOTED)))
    assert again["version"] == "v2"


def test_releases_and_rollbacks_in_time_order(figures):
    kinds = [(r["kind"], r["model_version"]) for r in figures["releases"]]
    assert kinds == [
        (loop.PROMOTED, "v1"),
        (loop.SERVING, "v1"),
        (loop.PROMOTED, "v2"),
        (loop.SERVING, "v2"),
        (loop.CANARY_DECISION, "recsys-ranker:v3"),
        (loop.ROLLED_BACK, "recsys-ranker:v3"),
        (loop.GATE_REFUSED, "v4"),
    ]
    canary = figures["releases"][4]
    assert canary["detail"] == "rollback (share 0.1 -> 0): conversion down"
    assert figures["releases"][-1]["detail"] == "ndcg too low"


def test_drift_history_carries_values_and_thresholds(figures):
    drift = figures["drift"]
    assert [d["fire"] for d in drift] == [False, True]
    assert drift[1]["item_mix_distance"] == pytest.approx(0.4)
    assert drift[1]["item_mix_distance_threshold"] == pytest.approx(0.25)
    assert drift[0]["data_drift_share"] == pytest.approx(0.1)
    assert drift[0]["data_drift_share_threshold"] == pytest.approx(0.3)
    assert drift[0]["score_ks"] is None and drift[0]["score_ks_threshold"] == pytest.approx(0.2)
    assert drift[1]["triggers"] == ["item_mix"]
    assert figures["thresholds"]["drift_share"] == pytest.approx(0.3)


def test_kpis_with_history(figures):
    kpis = figures["kpis"]
    assert kpis["incidents"] == 1 and kpis["open_incidents"] == 0
    assert kpis["mttd"]["mean_s"] == pytest.approx(60.0)  # landed 10:00:00 -> fired 10:01:00
    assert kpis["mttr"]["mean_s"] == pytest.approx(120.0)  # fired 10:01 -> serving 10:03
    assert kpis["deployment"]["mean_s"] == pytest.approx(60.0)  # trained 10:02 -> 10:03
    [incident] = figures["incidents"]
    assert incident["model_version"] == "v2" and incident["mttr_s"] == pytest.approx(120.0)
    assert [d["model_version"] for d in figures["deployments"]] == ["v1", "v2"]


def test_traffic_per_day_by_version_and_variant(figures):
    traffic = figures["traffic"]
    assert traffic["requests"] == 6 and traffic["fallbacks"] == 2
    assert traffic["reasons"] == {"unknown_customer": 2}
    daily = {r["day"]: r for r in traffic["daily"]}
    assert set(daily) == {"2024-03-01", "2024-03-02"}  # the feature clock, not the wall clock
    assert daily["2024-03-01"]["requests"] == 3
    assert daily["2024-03-01"]["fallback_rate"] == pytest.approx(1 / 3)
    rows = {(r["day"], r["model_version"], r["variant"]): r for r in traffic["by_version"]}
    assert rows[("2024-03-01", "v1", dashboard.NO_VARIANT)]["requests"] == 3
    assert rows[("2024-03-02", "v2", "champion")]["fallback_rate"] == pytest.approx(0.5)
    assert rows[("2024-03-02", "v3", "challenger")]["fallback_rate"] == pytest.approx(0.0)


def test_latest_monitors(figures):
    rows = {m["asset"]: m for m in figures["monitors"]}
    assert list(rows)[: len(dashboard.MONITORS)] == list(dashboard.MONITORS)
    drift = rows["data_drift_report"]
    assert drift["ran"] and drift["status"] == "measured"
    assert drift["figures"]["drifted_share"] == pytest.approx(0.2)
    assert "report" not in drift["figures"]
    assert rows["mlops_kpis"]["figures"]["mttd_mean_s"] is None  # NaN: no figure
    assert not rows["canary_report"]["ran"] and rows["canary_report"]["status"] == "not run yet"
    assert rows["custom_monitor"]["figures"] == {"widgets": 3}  # unknown asset: plain figures


def test_a_monitor_that_could_not_judge_shows_not_judged_not_ok(tmp_path):
    why = "no purchases in one of the windows"
    monitors = {
        "data_drift_report": {"status": "not judged", "outcome": loop.NOT_JUDGED, "reason": why,
                              "not_judged": {"data_drift": why, "item_mix": why}},
        "prediction_drift_report": {"status": "measured", "outcome": loop.FAILED,
                                    "score_ks": 0.5},
        "live_performance": {"status": "measured", "outcome": loop.PASSED, "hit_rate": 0.3},
    }  # fmt: skip
    unjudged = decision(
        "2024-03-02T10:00:00+00:00",
        fire=False,
        drift=0.1,
        mix=0.1,
        not_judged={"performance": "12 scored lists, at least 100 needed"},
    )
    figures = dashboard.dashboard_figures([unjudged], [], None, monitors)
    rows = {m["asset"]: m for m in figures["monitors"]}
    drift = rows["data_drift_report"]
    assert drift["status"] == "not judged" and drift["outcome"] == loop.NOT_JUDGED
    assert drift["reason"] == why
    assert rows["live_performance"]["status"] == "ok"
    assert rows["prediction_drift_report"]["status"] == "over threshold"
    assert rows["live_performance"]["reason"] is None
    assert figures["drift"][0]["not_judged"] == {
        "performance": "12 scored lists, at least 100 needed"
    }
    page = dashboard.write_dashboard(figures, tmp_path / "ops.html", title="Ops").read_text()
    assert f"<td>not judged: {why}</td>" in page
    assert "Not judged: data_drift_report." in page


def test_figures_are_json(figures):
    json.dumps(figures, allow_nan=False)


def test_page_has_the_sections(figures, tmp_path):
    path = dashboard.write_dashboard(figures, tmp_path / "out" / "ops.html", title="Ops: shop")
    page = path.read_text(encoding="utf-8")
    assert path == tmp_path / "out" / "ops.html"
    for heading in (
        "<h1>Ops: shop</h1>",
        "<h2>Model in service</h2>",
        "<h2>How fast the loop reacts</h2>",
        "<h3>Time to recover per incident</h3>",
        "<h2>Drift signals against their thresholds</h2>",
        "<h2>Releases and rollbacks</h2>",
        "<h2>Traffic per day</h2>",
        "<h2>Latest monitor results</h2>",
        "<h2>What the words mean</h2>",
    ):
        assert heading in page
    assert "plotly.js v" in page and "<script src=" not in page  # inlined, self-contained
    assert "Environment: <b>test</b>" in page
    assert "<td>v2</td>" in page and "0.310" in page and "12.5" in page  # NDCG, p99 ms
    assert "2.0 min" in page  # MTTR in a readable unit
    assert "33.3%" in page  # day 1 fallback rate
    assert "Nothing has happened" not in page
    assert "No retraining decision" not in page


def test_a_fresh_install_says_so(tmp_path):
    figures = dashboard.dashboard_figures([], [], empty_frame(), {}, environment="dev")
    assert figures["current_model"] is None
    assert figures["traffic"]["requests"] == 0 and figures["traffic"]["daily"] == []
    assert figures["drift"] == [] and figures["releases"] == [] and figures["incidents"] == []
    assert all(not m["ran"] for m in figures["monitors"])
    json.dumps(figures, allow_nan=False)
    page = dashboard.write_dashboard(figures, tmp_path / "ops.html", title="Ops").read_text()
    assert "Nothing has happened on this installation yet" in page
    assert "No model has been promoted yet" in page
    assert "No retraining decision logged yet" in page
    assert "The service has not served any request yet" in page
    assert "No monitor has run yet" in page
    assert "<h2>Latest monitor results</h2>" in page


def test_none_served_and_torn_events_do_not_crash(tmp_path):
    events = [{"kind": loop.DECISION}, decision("2024-03-02T10:00:00Z", fire=True, drift=0.5,
                                                 mix=0.0, values=None)]  # fmt: skip
    figures = dashboard.dashboard_figures(events, [{"version": "v9"}], None, {"mlops_kpis": None})
    assert figures["current_model"]["version"] == "v9"
    assert figures["current_model"]["ndcg"] is None
    assert figures["drift"][0]["data_drift_share"] is None  # values missing
    page = dashboard.write_dashboard(figures, tmp_path / "ops.html", title="Ops").read_text()
    assert "n/a" in page


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(24, "24 s"), (210, "3.5 min"), (7_560, "2.1 h"), (3 * 86_400, "3.0 days"), (None, "n/a")],
)
def test_durations_read_at_a_glance(seconds, text):
    assert dashboard._duration(seconds) == text


def test_canary_incidents_timeline_and_environments(tmp_path):
    started = {"ts": "2024-03-03T08:59:00+00:00", "kind": "canary_started",
               "challenger_tag": "recsys-ranker:v3"}  # fmt: skip
    entries = [
        {"ts": "2024-03-03T09:00:00.000+00:00", "source": "loop", "kind": "canary_decision",
         "summary": "action rollback", "subject": None, "run_id": None},
        {"ts": "2024-03-03T09:00:01.000+00:00", "source": "control", "kind": "allow:rollback",
         "summary": "allow rollback in test", "subject": "canary-analyser", "run_id": None},
    ]  # fmt: skip
    environments = [
        {"environment": "dev", "model_version": "v2", "bento_tag": "recommender:v2-abc",
         "released_at": "2024-03-02T10:03:00+00:00", "released_by": "dagster-pipeline"},
        {"environment": "prod", "model_version": None},
    ]  # fmt: skip
    figures = dashboard.dashboard_figures(
        [*EVENTS, started], PROMOTED, None, {}, environment="test",
        timeline_entries=entries, environments=environments,
        release_kpis={"rollback": {"releases": 4, "rolled_back": 1, "share": 0.25},
                      "velocity": {"mean_s": 90.0, "latest_s": 120.0}},
    )  # fmt: skip
    (incident,) = figures["canary_incidents"]
    assert incident["challenger"] == "recsys-ranker:v3"
    assert incident["mttd_s"] == pytest.approx(60.0)
    assert incident["mttr_s"] == pytest.approx(5.0)
    page = dashboard.write_dashboard(figures, tmp_path / "ops.html", title="Ops").read_text()
    headings = ("<h2>Canary incidents</h2>", "<h2>Timeline</h2>", "<h2>Model per environment</h2>")
    for text in (*headings, "conversion down", "canary-analyser", "recommender:v2-abc"):
        assert text in page
    assert "<td>none</td>" in page  # prod has no release
    assert "1 of 4 (25.0%)" in page and "90 s / 2.0 min" in page
    # newest first
    assert page.index("allow:rollback") < page.index("<td>canary_decision</td>")


def test_no_canary_incident_no_timeline_no_release_say_so(tmp_path):
    figures = dashboard.dashboard_figures([], [], None, {})
    page = dashboard.write_dashboard(figures, tmp_path / "ops.html", title="Ops").read_text()
    assert "no canary incident" in page
    assert "No release is recorded in any environment yet" in page
    assert "<h2>Timeline</h2><p class='empty'>Nothing recorded yet.</p>" in page


def test_latency_per_day_and_variant_from_the_served_log(tmp_path):
    day = datetime(2024, 3, 1, 12, tzinfo=UTC)
    records = [
        ServedRecord(
            ts=day, request_id=f"r{i}", customer_id=f"c{i}", model_version="v1",
            variant=variant, items=["a"], scores=[1.0], fallback_reason=None,
            as_of=day.isoformat(), latency_ms=latency,
        )
        for i, (variant, latency) in enumerate(
            [("champion", 5.0)] * 99 + [("champion", 50.0)] + [("challenger", 80.0)] * 10
        )
    ]  # fmt: skip
    with ServedLog(tmp_path / "served.jsonl") as log:
        log.append(records)
    figures = dashboard.dashboard_figures([], [], ServedLog(tmp_path / "served.jsonl").read(), {})
    rows = {r["variant"]: r for r in figures["traffic"]["by_version"]}
    assert rows["champion"]["latency_p50_ms"] == pytest.approx(5.0)
    assert rows["champion"]["latency_p99_ms"] == pytest.approx(5.0 + 0.01 * 45.0)  # interpolated
    assert rows["challenger"]["latency_p99_ms"] == pytest.approx(80.0)
    page = dashboard.write_dashboard(figures, tmp_path / "ops.html", title="Ops").read_text()
    assert "Latency p99 per day by model version and variant" in page
    assert "<td>80.0</td>" in page


def test_models_awaiting_a_release_manager_are_listed_until_approved(tmp_path):
    deny = "canary-analyser may not promote in prod: deny-canary-release-to-prod"
    waiting = [
        {"ts": "2024-03-05T09:00:00+00:00", "kind": loop.AWAITING_APPROVAL, "model_version": "v4",
         "tag": "recsys-ranker:v4", "reason": "dagster-pipeline may not promote in prod"},
        {"ts": "2024-03-05T10:00:00+00:00", "kind": loop.RELEASED, "model_version": "v4"},
        {"ts": "2024-03-05T11:00:00+00:00", "kind": loop.AWAITING_APPROVAL, "model_version": "v5",
         "challenger_tag": "recsys-ranker:v5", "share": 0.5, "reason": deny,
         "approve_with": "python -m recsys_assets canary promote"},
        {"ts": "2024-03-05T12:00:00+00:00", "kind": loop.AWAITING_APPROVAL, "model_version": "v6",
         "tag": "recsys-ranker:v6", "reason": "dagster-pipeline may not promote in prod"},
    ]  # fmt: skip
    figures = dashboard.dashboard_figures(waiting, [], None, {}, environment="prod")
    listed = [(w["model_version"], w["challenger_tag"], w["share"])
              for w in figures["awaiting_approval"]]  # fmt: skip
    assert listed == [("v5", "recsys-ranker:v5", 0.5), ("v6", None, None)]
    rows = [r for r in figures["releases"] if r["kind"] == loop.AWAITING_APPROVAL]
    assert rows[1]["detail"] == (
        f"{deny}; a release manager approves with `python -m recsys_assets canary promote`"
    )
    page = dashboard.write_dashboard(figures, tmp_path / "ops.html", title="Ops").read_text()
    assert "<h2>Awaiting a release manager</h2>" in page
    assert "Awaiting a release manager: v5, v6" in page  # the summary says so at the top
    assert "<td>recsys-ranker:v5</td><td>0.5</td>" in page
    assert "<td>python -m recsys_assets canary promote</td>" in page
    # a release manager promoted the challenger: it no longer waits
    promoted = {"ts": "2024-03-05T13:00:00+00:00", "kind": loop.CANARY_PROMOTED,
                "model_version": "v5", "by": "alice"}  # fmt: skip
    figures = dashboard.dashboard_figures([*waiting, promoted], [], None, {})
    assert [w["model_version"] for w in figures["awaiting_approval"]] == ["v6"]
    assert figures["releases"][-1]["detail"] == "by alice"
    page = dashboard.write_dashboard(figures, tmp_path / "ops.html", title="Ops").read_text()
    assert "Awaiting a release manager: v6" in page
    empty = dashboard.dashboard_figures([], [], None, {})
    page = dashboard.write_dashboard(empty, tmp_path / "ops.html", title="Ops").read_text()
    assert "No model waits for a release manager" in page
