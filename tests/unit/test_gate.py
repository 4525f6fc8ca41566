"""The promotion gate on hand-made figures, boundaries included."""

import math

import pytest

from recsys_assets.lib.gate import quality_gate_decision

BUDGET = {"max_ndcg_drop": 0.02, "latency_budget_p99_ms": 10.0}


def challenger(ndcg=0.38, p99=5.0):
    return {"ndcg": ndcg, "latency": {"p99_ms": p99}}


def test_first_promotion_needs_only_an_evaluation_and_the_budget():
    decision = quality_gate_decision(challenger(), None, **BUDGET)
    assert decision.passed and decision.reasons == []
    assert decision.summary.startswith("passed")


def test_a_challenger_at_exactly_the_floor_passes_and_just_below_fails():
    champion = {"version": "v1", "ndcg": 0.40}
    floor = 0.40 * 0.98
    assert quality_gate_decision(challenger(ndcg=floor), champion, **BUDGET).passed
    worse = quality_gate_decision(challenger(ndcg=floor - 1e-6), champion, **BUDGET)
    assert not worse.passed
    assert "below the champion's 0.4000" in worse.reasons[0]
    assert worse.figures["ndcg_floor"] == pytest.approx(0.392)


def test_latency_over_budget_fails_and_at_budget_passes():
    assert quality_gate_decision(challenger(p99=10.0), None, **BUDGET).passed
    slow = quality_gate_decision(challenger(p99=10.01), None, **BUDGET)
    assert not slow.passed and "over the budget" in slow.reasons[0]


@pytest.mark.parametrize("ndcg", [None, "n/a", math.nan, 0.0])
def test_a_challenger_without_a_usable_evaluation_fails(ndcg):
    decision = quality_gate_decision(challenger(ndcg=ndcg), None, **BUDGET)
    assert not decision.passed and "no usable evaluation" in decision.reasons[0]


def test_missing_latency_fails_and_every_reason_is_listed():
    decision = quality_gate_decision({"ndcg": 0.1}, {"version": "v1", "ndcg": 0.4}, **BUDGET)
    assert not decision.passed and len(decision.reasons) == 2
    assert decision.summary.startswith("refused: ")
