"""The monitors' checks through Dagster when there is nothing (or too little) to compare: not
judged, never passed, and the retraining sensor's signals say so.

``prediction_drift_report`` and ``live_performance`` read the served log (a scratch path) and
the serving model, whose registry read is replaced by a stub (BentoML fixes its store the first
time it is used in a process); ``live_performance``'s events come from a stand-in asset.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd

from recsys_assets.config import get_settings
from recsys_assets.core import constants as c
from recsys_assets.defs.monitoring import assets as monitor_assets
from recsys_assets.defs.monitoring.assets import live_performance, prediction_drift_report
from recsys_assets.defs.monitoring.sensors import signals_from
from recsys_assets.monitoring import loop
from recsys_assets.serving.served_log import ServedLog, ServedRecord

MODEL = {"version": "v1", "metadata": {"data_end": "2024-03-01T00:00:00", "metrics": {}}}


def materialise(instance: dg.DagsterInstance) -> tuple[dict, dg.AssetCheckEvaluation]:
    result = dg.materialize([prediction_drift_report], instance=instance)
    assert result.success  # not judged is a warning, not a failed run
    [event] = result.get_asset_materialization_events()
    [check] = result.get_asset_check_evaluations()
    return {k: v.value for k, v in event.materialization.metadata.items()}, check


def test_no_model_yet_is_not_judged_not_passed(scratch_logs, monkeypatch):
    monkeypatch.setattr(monitor_assets, "current_promoted", lambda: None)
    instance = dg.DagsterInstance.ephemeral()
    metadata, check = materialise(instance)

    assert check.check_name == "prediction_drift"
    assert check.passed is False  # was True: "nothing to compare" read as healthy
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["outcome"].value == loop.NOT_JUDGED
    assert check.metadata["reason"].value == "no promoted model yet"
    assert check.description == "not judged: no promoted model yet"
    assert metadata["status"] == "not judged" and metadata["outcome"] == loop.NOT_JUDGED
    assert metadata["not_judged"] == {"prediction_drift": "no promoted model yet"}

    # the sensor's input: not judged, with the reason; monitors that never ran, likewise
    signals = signals_from(instance)
    assert signals.not_judged["prediction_drift"] == "no promoted model yet"
    assert signals.not_judged["performance"] == "live_performance has not run yet"
    assert signals.score_ks is None


def served(start: datetime, hours: int, items: list[str]) -> list[ServedRecord]:
    return [
        ServedRecord(
            ts=start + timedelta(hours=i),
            request_id=f"r{start:%d}{i}",
            customer_id=f"c{i}",
            model_version="v1",
            variant=None,
            items=items,
            scores=[1.0 / (n + 1) for n in range(len(items))],
            fallback_reason=None,
            as_of=(start + timedelta(hours=i)).isoformat(),
        )
        for i in range(hours)
    ]


def test_a_window_that_served_no_items_is_not_judged(scratch_logs, monkeypatch):
    monkeypatch.setattr(monitor_assets, "current_promoted", lambda: MODEL)
    days = get_settings().monitoring.window_days
    first = datetime(2024, 3, 1, tzinfo=UTC)
    latest = first + timedelta(days=3 * days)
    with ServedLog(scratch_logs["served"]) as log:
        log.append(served(first, 4, ["a", "b"]) + served(latest, 4, []))
    metadata, check = materialise(dg.DagsterInstance.ephemeral())

    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["outcome"].value == loop.NOT_JUDGED
    reason = check.metadata["reason"].value
    assert "the current window served no items" in reason
    assert metadata["not_judged"] == {"prediction_drift": reason}
    assert metadata["served_item_distance"] != metadata["served_item_distance"]  # NaN, not 0.0


def test_the_decision_on_a_not_judged_monitor_records_it(scratch_logs, monkeypatch):
    monkeypatch.setattr(monitor_assets, "current_promoted", lambda: None)
    instance = dg.DagsterInstance.ephemeral()
    materialise(instance)
    signals = signals_from(instance)
    decision = loop.retraining_decision(
        dataclasses.replace(signals, model_version="v1"), get_settings().monitoring
    )
    assert not decision.fire
    assert decision.not_judged["prediction_drift"] == "no promoted model yet"
    record = loop.LoopLog(scratch_logs["loop"]).append(loop.DECISION, **decision.as_event())
    assert record["not_judged"]["prediction_drift"] == "no promoted model yet"


def test_too_few_scored_lists_is_not_judged_not_passed(scratch_logs, monkeypatch):
    monkeypatch.setattr(monitor_assets, "current_promoted", lambda: MODEL)
    settings = get_settings().monitoring
    first = datetime(2024, 3, 1, tzinfo=UTC)
    latest = first + timedelta(days=3 * settings.window_days)
    with ServedLog(scratch_logs["served"]) as log:
        log.append(served(first, 4, ["a", "b"]) + served(latest, 4, ["a", "b"]))
    bought = [  # c0 buys a listed item after each of its lists; the last purchase ends horizons
        ("c0", "a", first + timedelta(hours=2)),
        ("c0", "a", latest + timedelta(hours=2)),
        ("zz", "q", latest + timedelta(days=2 * settings.label_horizon_days)),
    ]
    frame = pd.DataFrame(
        {
            c.USER_ID: [u for u, _, _ in bought],
            c.ITEM_ID: [i for _, i, _ in bought],
            c.EVENT_TYPE: c.PURCHASE,
            c.EVENT_TS: [ts.replace(tzinfo=None) for _, _, ts in bought],
        }
    )

    @dg.asset(name="validated_events")
    def events() -> pd.DataFrame:
        return frame

    result = dg.materialize([events, live_performance], instance=dg.DagsterInstance.ephemeral())
    assert result.success
    [check] = result.get_asset_check_evaluations()
    metadata = next(
        {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key == live_performance.key
    )
    assert metadata["scored_lists"] == 1 < settings.min_lists
    assert metadata["performance_drop"] == 0.0  # the figure is kept ...
    assert check.passed is False  # ... but it judges nothing (was: passed)
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["outcome"].value == loop.NOT_JUDGED
    why = f"1 lists with a purchase, at least {settings.min_lists} needed"
    assert check.metadata["reason"].value == why
    assert metadata["not_judged"] == {"performance": why}
