"""ab_test_report materialised against scratch served and feedback logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from recsys_assets.config import get_settings
from recsys_assets.defs.release.ab_experiment import (
    NO_EXPERIMENT,
    SRM_CHECK,
    ab_test_report,
    canary_share,
)
from recsys_assets.ingestion.feedback import FeedbackEvent, FeedbackLog
from recsys_assets.release.canary.routing import CanaryState, assign_variant, write_canary_state
from recsys_assets.serving.served_log import ServedLog, ServedRecord

T0 = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
def logs(scratch_logs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.delenv("RECSYS_CANARY_SHARE", raising=False)
    return scratch_logs


def record(customer: str, variant: str | None, ts: datetime) -> ServedRecord:
    return ServedRecord(
        ts=ts,
        request_id=f"req-{customer}-{ts.timestamp()}",
        customer_id=customer,
        model_version="v2" if variant == "challenger" else "v1",
        variant=variant,
        items=["i1", "i2"],
        scores=[0.9, 0.5],
        fallback_reason=None,
        as_of=ts.isoformat(),
    )


def purchase(customer: str, order: str, value: float, ts: datetime) -> FeedbackEvent:
    return FeedbackEvent(
        request_id=f"req-{customer}",
        customer_id=customer,
        item_id="i1",
        feedback_type="purchase",
        ts=ts,
        order_id=order,
        order_value=value,
    )


def materialise() -> tuple[dict, dg.AssetCheckEvaluation]:
    result = dg.materialize([ab_test_report])
    assert result.success
    [event] = result.get_asset_materialization_events()
    [check] = result.get_asset_check_evaluations()
    return {k: v.value for k, v in event.materialization.metadata.items()}, check


def test_without_variants_no_experiment_running(logs):
    with ServedLog(logs["served"]) as served:
        served.append([record("u1", None, T0), record("u2", None, T0)])
    metadata, check = materialise()
    assert metadata["status"] == NO_EXPERIMENT
    assert metadata["served_records"] == 2
    assert metadata["served_records_without_variant"] == 2
    assert check.passed
    report = logs["reports"] / "monitoring" / "ab_test.json"
    assert metadata["report_json"] == str(report)
    assert json.loads(report.read_text())["status"] == "no experiment data"


def test_without_any_log(logs):
    metadata, check = materialise()
    assert metadata["status"] == NO_EXPERIMENT
    assert metadata["served_records"] == 0
    assert check.passed


def test_a_canary_with_a_better_challenger(logs, monkeypatch):
    monkeypatch.setenv("RECSYS_CANARY_SHARE", "0.3")
    rng = np.random.default_rng(5)
    records, events = [], []
    n_challenger = 0
    for i in range(3000):
        customer = f"c{i:04d}"
        variant = "challenger" if rng.random() < 0.3 else "champion"
        n_challenger += variant == "challenger"
        seen = T0 + timedelta(minutes=i)
        records.append(record(customer, variant, seen))
        for k in range(rng.poisson(2.0)):
            value = float(50.0 * np.exp(rng.normal(-0.08, 0.4)))
            value *= 1.15 if variant == "challenger" else 1.0
            events.append(purchase(customer, f"{customer}-{k}", value, seen + timedelta(hours=k)))
    records.append(record("c0000", "challenger", T0 + timedelta(days=1)))  # c0000 in both
    with ServedLog(logs["served"]) as served:
        served.append(records)
    FeedbackLog(logs["feedback"]).append(events)

    metadata, check = materialise()
    assert metadata["status"] == "analysed"
    assert metadata["verdict"] == "significant improvement"
    assert (metadata["champion"], metadata["challenger"]) == ("champion", "challenger")
    assert metadata["conflicts"] == 1
    assert metadata["expected_share"] == pytest.approx(0.3)
    assert metadata["champion_customers"] + metadata["challenger_customers"] == 2999
    assert metadata["aov_lift"] == pytest.approx(0.15, abs=0.04)
    assert metadata["lift_ci_low"] < metadata["aov_lift"] < metadata["lift_ci_high"]
    assert metadata["bootstrap_lift_ci_low"] < metadata["aov_lift"]
    assert metadata["p_value"] < 1e-6
    assert metadata["srm_p_value"] > 0.001 and not metadata["srm_mismatch"]
    assert 0.8 < metadata["champion_conversion"] < 0.92
    assert check.passed
    html = Path(metadata["report"])
    assert html == logs["reports"] / "monitoring" / "ab_test.html"
    assert "significant improvement" in html.read_text()
    report = json.loads(Path(metadata["report_json"]).read_text())
    assert report["lift"] == pytest.approx(metadata["aov_lift"])


def test_sample_ratio_mismatch_fails_the_check(logs):
    # planned 10% (the default), served 50%
    records = [
        record(f"c{i}", "challenger" if i % 2 else "champion", T0 + timedelta(seconds=i))
        for i in range(1000)
    ]
    with ServedLog(logs["served"]) as served:
        served.append(records)
    metadata, check = materialise()
    assert metadata["expected_share"] == pytest.approx(0.1)
    assert metadata["srm_mismatch"]
    assert metadata["verdict"] == "underpowered"  # no orders yet
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN


def test_a_widened_canary_is_analysed_in_its_current_phase_only(logs):
    # 0.1 for a day, then widened to 0.5: customers hashed between the two change arms.
    widened_at = T0 + timedelta(days=1)
    state = CanaryState(challenger_tag="recsys-ranker:v2", share=0.5, salt="s1", generation=2,
                        updated_at=widened_at.isoformat())  # fmt: skip
    write_canary_state(get_settings().canary_state, state)
    records = []
    for phase_start, share in ((T0, 0.1), (widened_at + timedelta(seconds=5), 0.5)):
        for i in range(2000):
            customer = f"c{i:04d}"
            variant = assign_variant(customer, salt="s1", challenger_share=share)
            records.append(record(customer, variant, phase_start + timedelta(seconds=10 * i)))
    with ServedLog(logs["served"]) as served:
        served.append(records)

    metadata, check = materialise()
    assert metadata["phase_started_at"] == widened_at.isoformat()
    assert metadata["served_records_before_phase"] == 2000
    assert metadata["conflicts"] == 0  # across both phases 803 customers changed arms
    assert metadata["champion_customers"] + metadata["challenger_customers"] == 2000
    assert metadata["expected_share"] == pytest.approx(0.5)
    assert not metadata["srm_mismatch"] and check.passed


def test_canary_share(monkeypatch):
    monkeypatch.delenv("RECSYS_CANARY_SHARE", raising=False)
    assert canary_share() == pytest.approx(0.1)
    monkeypatch.setenv("RECSYS_CANARY_SHARE", "0.25")
    assert canary_share() == pytest.approx(0.25)
    for bad in ("1.5", "-0.1", "ten"):
        monkeypatch.setenv("RECSYS_CANARY_SHARE", bad)
        with pytest.raises(ValueError, match="RECSYS_CANARY_SHARE"):
            canary_share()
    monkeypatch.setenv("RECSYS_CANARY_SHARE", "1")  # the canary's last step: valid, no test
    assert canary_share() == pytest.approx(1.0)


def test_check_name():
    assert SRM_CHECK in {key.name for key in ab_test_report.check_keys}


def test_a_share_of_one_is_no_experiment(logs, monkeypatch):
    monkeypatch.setenv("RECSYS_CANARY_SHARE", "1")  # the canary's last step: everyone challenger
    metadata, check = materialise()
    assert metadata["status"] == "no experiment running"
    assert metadata["reason"] == "the canary share is 1: one variant serves every customer"
    assert check.passed
