"""The staged incidents, end to end: `python -m recsys_assets drill` serves the demo's champion
with a faulty challenger over HTTP (a delayed one, or a bad model that only the shoppers'
clicks and purchases give away), the canary sensor's runs detect the breach and roll it back,
and the report carries the timeline, time to detect and time to recover."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.support import free_port, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def drill(example_shop_demo, tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m recsys_assets drill <args>`` on the example shop's demo, analysing every
    2 s: the finished process and its incident report."""
    workdir, demo = example_shop_demo
    assert demo.returncode == 0, demo.stderr
    drill_dir = tmp_path / "drill"
    done = run_cli(
        workdir, "drill", "--workdir", str(drill_dir), "--interval", "2",
        "--port", str(free_port()), *args,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads((drill_dir / "incident.json").read_text())


@pytest.mark.timeout(600)
def test_the_slow_challenger_is_detected_and_rolled_back_without_a_human(
    example_shop_demo, tmp_path
):
    done, report = drill(example_shop_demo, tmp_path, "--delay-ms", "100")

    # the shoppers met a slower challenger, and the service's metrics and traces show it
    shoppers = report["shoppers"]
    assert shoppers["challenger"]["p50_ms"] > shoppers["champion"]["p50_ms"] + 40
    # every challenger answer took over 100 ms: past the histogram's 0.1 s bucket (the
    # champion's tail is not compared: on a busy machine it can reach that far too)
    p99 = report["metrics_p99_upper_bound_s"]
    assert p99["challenger"] >= 0.25, p99
    traces = report["traces"]
    assert traces["challenger"]["spans"] > 0
    assert traces["challenger"]["mean_ms"] > traces["champion"]["mean_ms"] + 40

    # detected by the analysis on the p99 guardrail, rolled back by the canary analyser
    assert any("p99" in reason for reason in report["reasons"]), report["reasons"]
    assert report["mttd_s"] > 0
    assert report["canary_started"] <= report["first_challenger_answer"] < report["detected"]
    assert report["detected"] <= report["rolled_back"]
    assert report["rolled_back"] <= report["resolved"]
    # the service follows the state file within a second: customers stop meeting the
    # challenger moments after the rollback is applied
    assert 0 <= report["rollback_applied_s"] <= report["mttr_s"] < report["rollback_applied_s"] + 5
    kinds = [(e["source"], e["kind"]) for e in report["timeline"]]
    for expected in [("loop", "canary_started"), ("loop", "canary_decision"),
                     ("control", "allow:rollback"), ("loop", "rolled_back")]:  # fmt: skip
        assert expected in kinds, kinds
    rollback = next(e for e in report["timeline"] if e["kind"] == "allow:rollback")
    assert rollback["subject"] == "canary-analyser"
    assert "time to detect" in done.stdout and "timeline:" in done.stdout


@pytest.mark.timeout(600)
def test_the_bad_model_is_caught_on_clicks_and_purchases_and_rolled_back_without_a_human(
    example_shop_demo, tmp_path
):
    done, report = drill(example_shop_demo, tmp_path, "--fault", "bad-model")

    # the shoppers' tastes (what they really bought) give the champion clicks and orders; the
    # misjoined challenger, as fast and as error-free, gets clearly fewer
    champion, challenger = report["shoppers"]["champion"], report["shoppers"]["challenger"]
    assert champion["click_through"] > 0.05 and champion["conversion"] > 0.2, champion
    assert challenger["click_through"] < 0.85 * champion["click_through"], report["shoppers"]
    assert challenger["conversion"] < champion["conversion"], report["shoppers"]
    assert challenger["p50_ms"] < champion["p50_ms"] + 20
    assert report["errors"] == 0 and report["feedback_errors"] == 0

    # detected on the business guardrails (a busy machine may add a p99 breach; the error rate
    # never), rolled back by the canary analyser
    reasons = report["reasons"]
    assert any(r.startswith(("click-through", "conversion")) for r in reasons), reasons
    assert not any(r.startswith("error rate") for r in reasons), reasons
    assert report["canary_started"] <= report["first_challenger_answer"] < report["detected"]
    assert report["detected"] <= report["rolled_back"] <= report["resolved"]
    kinds = [(e["source"], e["kind"]) for e in report["timeline"]]
    for expected in [("loop", "canary_started"), ("loop", "canary_decision"),
                     ("control", "allow:rollback"), ("loop", "rolled_back")]:  # fmt: skip
        assert expected in kinds, kinds
    assert ("loop", "canary_promoted") not in kinds, kinds
    rollback = next(e for e in report["timeline"] if e["kind"] == "allow:rollback")
    assert rollback["subject"] == "canary-analyser"
    assert "click-through" in done.stdout and "timeline:" in done.stdout
