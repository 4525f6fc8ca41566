"""The loop's decisions, its event log and the KPIs computed from it (monitoring/loop.py)."""

import dataclasses
import multiprocessing

import pandas as pd
import pytest

from recsys_assets.config.settings import MonitoringSettings
from recsys_assets.monitoring import loop

LIMITS = MonitoringSettings(cooldown_days=2.0, min_lists=100)
CALM = loop.Signals(
    latest_data_ts="2024-03-10 23:00:00",
    model_version="v1",
    model_data_end="2024-03-01 12:00:00",
    data_drift_share=0.1,
    item_mix_distance=0.01,
    score_ks=0.05,
    served_item_distance=0.1,
    performance_drop=0.05,
    scored_lists=500,
)


def decide(signals: loop.Signals = CALM, **kwargs) -> loop.Decision:
    return loop.retraining_decision(signals, LIMITS, **kwargs)


def test_calm_signals_do_not_fire_and_say_why():
    decision = decide()
    assert not decision.fire
    assert decision.triggers == ()
    assert decision.reason == "no trigger over its threshold"
    assert decision.values["new_data_days"] == pytest.approx(9 + 11 / 24)
    assert decision.values["thresholds"]["drift_share"] == LIMITS.drift_share


@pytest.mark.parametrize(
    ("change", "trigger"),
    [
        ({"data_drift_share": 0.5}, "data_drift"),  # at the threshold fires
        ({"item_mix_distance": 0.5}, "item_mix"),
        ({"score_ks": 0.25}, "prediction_drift"),
        ({"served_item_distance": 0.4}, "prediction_drift"),
        ({"performance_drop": 0.3}, "performance"),
        ({"latest_data_ts": "2024-04-01 00:00:00"}, "model_age"),
    ],
)
def test_each_trigger_fires_on_its_own(change, trigger):
    decision = decide(dataclasses.replace(CALM, **change))
    assert decision.fire
    assert decision.triggers == (trigger,)
    assert trigger in decision.reason


def test_performance_needs_enough_scored_lists():
    few = dataclasses.replace(CALM, performance_drop=0.9, scored_lists=99)
    assert not decide(few).fire
    assert decide(dataclasses.replace(few, scored_lists=100)).triggers == ("performance",)


def test_missing_measurements_never_fire():
    unknown = dataclasses.replace(
        CALM, data_drift_share=None, item_mix_distance=float("nan"), score_ks=None,
        served_item_distance=None, performance_drop=None, latest_data_ts=None,
    )  # fmt: skip
    assert decide(unknown).triggers == ()


def test_calm_signals_leave_nothing_unjudged():
    assert decide().not_judged == {}
    assert decide().as_event()["not_judged"] == {}


def test_unknown_signals_are_not_judged_not_healthy():
    unknown = dataclasses.replace(
        CALM, data_drift_share=None, item_mix_distance=float("nan"), score_ks=None,
        served_item_distance=None, performance_drop=None, latest_data_ts=None,
    )  # fmt: skip
    decision = decide(unknown)
    assert not decision.fire and decision.triggers == ()
    assert decision.not_judged == dict.fromkeys(
        ("data_drift", "item_mix", "prediction_drift", "performance", "model_age"), "not measured"
    )
    assert decision.reason.startswith("no trigger judged, nothing fires on unknown: ")
    assert decision.reason != "no trigger over its threshold"
    assert decision.as_event()["not_judged"] == decision.not_judged


def test_a_monitor_that_could_not_judge_is_recorded_with_its_reason():
    why = "no purchases in one of the windows"
    signals = dataclasses.replace(
        CALM, data_drift_share=None, item_mix_distance=None,
        not_judged={"data_drift": why, "item_mix": why, "data_quality": "no purchases"},
    )  # fmt: skip
    decision = decide(signals)
    assert not decision.fire
    assert decision.not_judged == {
        "data_drift": why,
        "item_mix": why,
        "data_quality": "no purchases",
    }
    assert decision.reason == (
        "no trigger over its threshold; not judged: "
        f"data_drift ({why}); item_mix ({why}); data_quality (no purchases)"
    )
    event = decision.as_event()
    assert event["not_judged"]["data_drift"] == why
    assert event["values"]["not_judged"]["data_drift"] == why  # the signals as they came


def test_too_few_scored_lists_is_not_judged():
    few = dataclasses.replace(CALM, performance_drop=0.01, scored_lists=99)
    decision = decide(few)
    assert not decision.fire
    assert decision.not_judged == {"performance": "99 scored lists, at least 100 needed"}


def test_a_judged_trigger_fires_beside_unjudged_ones():
    signals = dataclasses.replace(
        CALM, data_drift_share=0.8, item_mix_distance=None, not_judged={"item_mix": "empty"}
    )
    decision = decide(signals)
    assert decision.fire and decision.triggers == ("data_drift",)
    assert decision.not_judged == {"item_mix": "empty"}
    assert decision.reason == "retrain: data_drift over threshold; not judged: item_mix (empty)"


DRIFTED = dataclasses.replace(CALM, data_drift_share=0.8)


def test_guards_in_order():
    assert "no promoted model" in decide(dataclasses.replace(DRIFTED, model_version=None)).reason
    running = decide(DRIFTED, retraining_running=True)
    assert not running.fire and "in progress" in running.reason
    broken = decide(dataclasses.replace(DRIFTED, quality_problems=("price: 40% missing",)))
    assert not broken.fire
    assert "price: 40% missing" in broken.reason
    assert broken.triggers == ("data_drift",)  # measured, held back


def test_cooldown_counts_days_of_data_since_the_last_retraining():
    held = decide(DRIFTED, last_retraining_data_ts="2024-03-09 00:00:00")
    assert not held.fire
    assert held.reason.startswith("cooldown: 1.96 of 2 days")  # 1 day 23 h
    assert decide(DRIFTED, last_retraining_data_ts="2024-03-08 23:00:00").fire  # exactly 2 days


def test_windows_reference_before_the_data_end_current_after_it():
    windows = loop.monitoring_windows(
        "2024-03-10 12:00", "2024-03-01 00:00", reference_days=28, window_days=2
    )
    assert windows.reference_start == pd.Timestamp("2024-02-02 00:00")
    assert windows.reference_end > pd.Timestamp("2024-03-01 00:00")  # the data end included
    assert windows.current_start == pd.Timestamp("2024-03-08 12:00:00.000001")
    assert windows.current_end > pd.Timestamp("2024-03-10 12:00")  # the latest event included


def test_windows_never_reach_back_before_the_data_end_and_need_new_data():
    windows = loop.monitoring_windows(
        "2024-03-01 06:00", "2024-03-01 00:00", reference_days=28, window_days=2
    )
    assert windows.current_start > pd.Timestamp("2024-03-01 00:00")
    assert (
        loop.monitoring_windows("2024-03-01", "2024-03-01", reference_days=1, window_days=1) is None
    )


def test_log_round_trip_and_filters(tmp_path):
    log = loop.LoopLog(tmp_path / "loop" / "events.jsonl")
    assert log.read() == []
    log.append(loop.DECISION, fire=False, reason="calm")
    log.append(loop.DECISION, fire=True, reason="drift")
    log.append(loop.PROMOTED, model_version="v2")
    assert [e["kind"] for e in log.read()] == ["decision", "decision", "promoted"]
    assert log.last(loop.DECISION, fire=True)["reason"] == "drift"
    assert log.last(loop.SERVING) is None
    assert [e["model_version"] for e in log.read([loop.PROMOTED])] == ["v2"]
    with pytest.raises(ValueError, match="unknown loop event kind 'deployed'"):
        log.append("deployed")


def test_torn_last_line_is_skipped_and_the_next_record_stays_whole(tmp_path):
    log = loop.LoopLog(tmp_path / "events.jsonl")
    log.append(loop.DECISION, fire=False)
    with log.path.open("a") as handle:
        handle.write('{"ts": "2024-')  # a writer crashed mid-line
    assert len(log.read()) == 1
    log.append(loop.PROMOTED, model_version="v2")
    assert [e["kind"] for e in log.read()] == ["decision", "promoted"]


def _append_many(path: str) -> None:
    log = loop.LoopLog(path)
    for i in range(50):
        log.append(loop.DATA_LANDED, partition=str(i), padding="x" * 5_000)


def test_concurrent_writers_leave_whole_lines(tmp_path):
    path = str(tmp_path / "events.jsonl")
    workers = [multiprocessing.Process(target=_append_many, args=(path,)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(loop.LoopLog(path).read()) == 150


def event(ts: str, kind: str, **fields) -> dict:
    return {"ts": f"2024-03-10T{ts}+00:00", "kind": kind, **fields}


INCIDENT = [
    event("10:00:00", loop.SERVING, model_version="v1"),
    event("10:30:00", loop.DECISION, fire=False, triggers=[]),
    event("11:00:00", loop.DRIFT_LANDED),
    event("11:01:00", loop.DECISION, fire=False, triggers=[]),
    event("11:02:00", loop.DECISION, fire=True, triggers=["performance"]),
    event("11:03:00", loop.DECISION, fire=False, triggers=["performance"]),  # cooldown
    event("11:05:00", loop.TRAINING_FINISHED, model_version="v2"),
    event("11:06:00", loop.PROMOTED, model_version="v2"),
    event("11:06:30", loop.SERVING, model_version="v1"),  # an old pod restarting
    event("11:07:00", loop.SERVING, model_version="v2"),
]


def test_one_incident_from_landing_to_the_retrained_model_serving():
    (incident,) = loop.incidents(INCIDENT)
    assert incident.triggers == ("performance",)
    assert incident.mttd_s == pytest.approx(120)
    assert incident.mttr_s == pytest.approx(300)
    assert incident.deployment_s == pytest.approx(120)
    assert incident.model_version == "v2"
    assert incident.evaluations == 2  # the hold at 11:01 and the detection at 11:02


def test_kpis_hold_history_and_releases():
    refused = [
        event("12:00:00", loop.DECISION, fire=True, triggers=["data_drift"]),
        event("12:04:00", loop.TRAINING_FINISHED, model_version="v3"),
        event("12:05:00", loop.GATE_REFUSED, model_version="v3"),
        event("13:00:00", loop.DECISION, fire=True, triggers=["model_age"]),
    ]
    figures = loop.kpis(INCIDENT + refused)
    assert figures["incidents"] == 3
    assert figures["refused_by_gate"] == 1
    assert figures["open_incidents"] == 1  # the last one is still running
    assert figures["mttd"] == {"count": 1, "mean_s": 120.0, "latest_s": 120.0}
    assert figures["evaluations_to_detect"] == [2]  # the later incidents had no landing
    assert figures["mttr"]["mean_s"] == pytest.approx(300)
    assert figures["deployments"] == 2
    assert figures["deployment"]["count"] == 1  # v1 was never trained in this log
    assert [r["model_version"] for r in figures["releases"]] == ["v1", "v2"]
    assert figures["deployment"]["mean_s"] == pytest.approx(120)


def test_no_events_no_incidents():
    figures = loop.kpis([])
    assert figures["incidents"] == 0
    assert figures["mttd"] == {"count": 0, "mean_s": None, "latest_s": None}
