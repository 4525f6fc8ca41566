"""The error counters' baseline of a canary experiment: deltas per replica, one per experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys_assets.release.canary.baseline import (
    ErrorBaseline,
    Experiment,
    baseline_path,
    error_deltas,
    experiment_errors,
    read_baseline,
)
from recsys_assets.release.canary.routing import CanaryConfig, CanaryState

A, B = "http://a:3000", "http://b:3000"
V2 = Experiment("recsys-ranker:v2", "salt-1", "2024-03-01T10:00:00.000+00:00")


def test_the_baseline_sits_beside_the_canary_state(tmp_path):
    state = tmp_path / "loop" / "prod" / "canary.json"
    assert baseline_path(state) == tmp_path / "loop" / "prod" / "canary.baseline.json"


def test_errors_since_the_baseline_per_replica_by_hand():
    baseline = {A: {"champion": 5, "challenger": 7}}
    now = {A: {"champion": 8, "challenger": 10}, B: {"champion": 1, "challenger": 2}}
    # A: 3 and 3 since; B is a replica added since, all its errors are the experiment's
    assert error_deltas(now, baseline) == {"champion": 4, "challenger": 5}
    # A restarted (its challenger counter fell below the baseline): it counts from 0 again
    assert error_deltas({A: {"champion": 9, "challenger": 2}}, baseline) == {
        "champion": 9, "challenger": 2}  # fmt: skip
    assert error_deltas({}, baseline) == {"champion": 0, "challenger": 0}


def test_the_first_analysis_records_the_baseline_and_the_next_counts_from_it(tmp_path):
    path = tmp_path / "canary.baseline.json"
    errors, baseline, note = experiment_errors(
        path, V2, {A: {"champion": 5, "challenger": 7}}, now="2024-03-01T10:00:30.000+00:00"
    )
    assert errors == {"champion": 0, "challenger": 0}
    assert note.startswith("error counters' baseline recorded at 2024-03-01T10:00:30")
    assert read_baseline(path) == baseline == ErrorBaseline(
        V2, "2024-03-01T10:00:30.000+00:00", {A: {"champion": 5, "challenger": 7}})  # fmt: skip
    errors, kept, note = experiment_errors(
        path, V2, {A: {"champion": 6, "challenger": 47}}, now="2024-03-01T10:01:00.000+00:00"
    )
    assert errors == {"champion": 1, "challenger": 40} and note is None and kept == baseline
    # another experiment (the same challenger started again) gets a baseline of its own
    again = Experiment(V2.challenger_tag, V2.salt, "2024-03-02T09:00:00.000+00:00")
    errors, fresh, note = experiment_errors(
        path, again, {A: {"champion": 6, "challenger": 47}}, now="2024-03-02T09:00:10.000+00:00"
    )
    assert errors == {"champion": 0, "challenger": 0} and note is not None
    assert json.loads(path.read_text())["started_at"] == again.started_at
    assert fresh.counters == {A: {"champion": 6, "challenger": 47}}


def test_a_baseline_that_does_not_read_is_replaced_and_said_so(tmp_path):
    path = tmp_path / "canary.baseline.json"
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_baseline(path)
    errors, _, note = experiment_errors(path, V2, {A: {"challenger": 3}}, now="2024-03-01T10:00Z")
    assert errors == {"champion": 0, "challenger": 0}
    assert "previous file was replaced" in note and "not valid JSON" in note
    assert read_baseline(path).counters == {A: {"champion": 0, "challenger": 3}}
    path.write_text(json.dumps({**read_baseline(path).as_json(), "counters": {A: {"x": -1}}}))
    with pytest.raises(ValueError, match="integers >= 0"):
        read_baseline(path)
    assert read_baseline(Path(tmp_path / "missing.json")) is None


def test_the_experiment_is_the_challenger_its_salt_and_its_start():
    config = CanaryConfig("recsys-ranker:v2", 0.25, "salt-1")
    state = CanaryState("recsys-ranker:v2", 0.25, "salt-1", 3, started_at=V2.started_at)
    assert Experiment.of(config, state) == V2
    assert Experiment.of(config, None) == Experiment("recsys-ranker:v2", "salt-1", "")
    with pytest.raises(ValueError, match="no challenger"):
        Experiment.of(CanaryConfig(None), None)
