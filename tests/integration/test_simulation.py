"""The closed loop, end to end: the small simulation against the real service (minutes).

``python -m recsys_assets simulate --small`` as a user runs it: the synthetic shop's history is
ingested, a model is trained, gated, promoted and served over HTTP; simulated shoppers ask it
for lists and buy by their hidden tastes; on the drift day a segment's tastes turn, and the
retraining sensor, the gate and a blue-green deployment must bring a better model to them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recsys_assets.monitoring import loop
from tests.conftest import PROJECT_ROOT
from tests.integration.support import cli_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1_800)]


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("simulation")
    done = subprocess.run(
        [sys.executable, "-m", "recsys_assets", "simulate", "--small",
         "--workdir", str(workdir / "sim"), "--port", str(free_port())],
        cwd=PROJECT_ROOT, env=cli_env(workdir), capture_output=True, text=True, timeout=1_800,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((workdir / "sim" / "reports" / "simulation-summary.json").read_text())
    events = loop.LoopLog(workdir / "sim" / "logs" / "loop.jsonl").read()
    return workdir / "sim", summary, events, done.stdout


def after(events: list[dict], kind: str, ts: str, **match) -> list[dict]:
    return [
        e for e in events
        if e["kind"] == kind and e["ts"] > ts and all(e.get(k) == v for k, v in match.items())
    ]  # fmt: skip


def test_the_sensor_detects_the_drift_and_a_retrained_model_serves(simulation):
    _, summary, events, _ = simulation
    (landed,) = [e for e in events if e["kind"] == loop.DRIFT_LANDED]
    stale = [e for e in events if e["kind"] == loop.SERVING and e["ts"] < landed["ts"]][-1]
    fired = after(events, loop.DECISION, landed["ts"], fire=True)
    assert fired, "the retraining sensor never fired after the drift landed"
    detection = fired[0]
    served = after(events, loop.SERVING, detection["ts"])
    assert served, "no model was deployed after the detection"
    assert served[0]["model_version"] != stale["model_version"]
    assert after(events, loop.PROMOTED, detection["ts"], model_version=served[0]["model_version"])
    kpis = summary["kpis"]
    assert kpis["mttd"]["latest_s"] is not None and kpis["mttr"]["latest_s"] is not None
    assert kpis["mttd"]["latest_s"] >= 0 and kpis["mttr"]["latest_s"] > 0


def test_every_decision_is_logged_with_its_values(simulation):
    _, _, events, _ = simulation
    decisions = [e for e in events if e["kind"] == loop.DECISION]
    assert decisions
    for decision in decisions:
        assert isinstance(decision["fire"], bool) and decision["reason"]
        assert "thresholds" in decision["values"]
        assert "performance_drop" in decision["values"]


def test_the_retrained_model_converts_the_drifted_segment_better_than_the_stale_one(simulation):
    _, summary, _, _ = simulation
    drifted = summary["recovery"]["drifted"]
    assert summary["recovery"]["stale_days"], "the stale model served no day after the drift"
    assert summary["recovery"]["retrained_days"], "the retrained model served no day"
    assert drifted["retrained_model"] > drifted["stale_model_after_drift"]


def test_the_report_and_the_timeline_are_written(simulation):
    workdir, summary, _, stdout = simulation
    html = (workdir / "reports" / "simulation.html").read_text()
    assert "drifted" in html and "drift landed" in html
    events = [entry["event"] for entry in summary["timeline"]]
    assert "drift landed" in events and "new model serving" in events
    assert "MTTD" in stdout and "conversion, drifted" in stdout
