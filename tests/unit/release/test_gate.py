"""The promotion gate on hand-made figures, boundaries included."""

import math

import pytest

from recsys_assets.release.gate import quality_gate_decision

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


def test_advisory_latency_warns_without_refusing():
    slow = quality_gate_decision(challenger(p99=10.01), None, **BUDGET, latency_blocks=False)
    assert slow.passed and slow.reasons == []
    assert slow.warnings == ["p99 latency 10.01 ms is over the budget 10.0 ms"]
    assert "; warning: p99 latency 10.01 ms" in slow.summary
    # Advisory latency never rescues a challenger refused for its quality.
    bad = quality_gate_decision(challenger(ndcg=0.0, p99=11), None, **BUDGET, latency_blocks=False)
    assert not bad.passed and len(bad.reasons) == 1 and len(bad.warnings) == 1


@pytest.mark.parametrize("ndcg", [None, "n/a", math.nan, 0.0])
def test_a_challenger_without_a_usable_evaluation_fails(ndcg):
    decision = quality_gate_decision(challenger(ndcg=ndcg), None, **BUDGET)
    assert not decision.passed and "no usable evaluation" in decision.reasons[0]


def test_missing_latency_fails_and_every_reason_is_listed():
    decision = quality_gate_decision({"ndcg": 0.1}, {"version": "v1", "ndcg": 0.4}, **BUDGET)
    assert not decision.passed and len(decision.reasons) == 2
    assert decision.summary.startswith("refused: ")


# --- paired comparison on the same customers --------------------------------------------------


def per_user(values: list[float]) -> dict[str, float]:
    return {f"C{i:03d}": v for i, v in enumerate(values)}


def test_paired_difference_hand_checked():
    from recsys_assets.evaluation.protocol import paired_ndcg_difference

    figures = paired_ndcg_difference(per_user([0.5, 1.0]), per_user([0.5, 0.5]), n=500)
    assert figures["relative"] == pytest.approx(0.5)  # 0.75 / 0.5 - 1
    assert figures["n_users"] == 2
    assert -1e-9 <= figures["low"] <= figures["relative"] <= figures["high"] <= 1.0 + 1e-9
    empty = paired_ndcg_difference({"a": 1.0}, {"b": 1.0})
    assert empty["n_users"] == 0 and math.isnan(empty["relative"])


def test_paired_gate_lets_a_model_within_the_noise_through():
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 300)
    champion = {"version": "v1", "ndcg": 0.5, "per_user_ndcg": per_user(list(base))}
    # 4% lower on average, but customer by customer it is a coin toss: not worse beyond doubt
    noisy = np.clip(base * 0.96 + rng.normal(0, 0.25, 300), 0, 1)
    ch = challenger(ndcg=float(noisy.mean())) | {"per_user_ndcg": per_user(list(noisy))}
    decision = quality_gate_decision(ch, champion, **BUDGET)
    assert decision.passed, decision.reasons
    assert decision.figures["paired"]["low"] < -0.02 < decision.figures["paired"]["high"]


def test_paired_gate_refuses_a_model_worse_beyond_doubt():
    values = [0.2 + 0.002 * i for i in range(300)]
    champion = {"version": "v1", "ndcg": 0.5, "per_user_ndcg": per_user(values)}
    worse = [v * 0.8 for v in values]
    ch = challenger(ndcg=0.4) | {"per_user_ndcg": per_user(worse)}
    decision = quality_gate_decision(ch, champion, **BUDGET)
    assert not decision.passed
    assert "-20.0% against the champion on the same 300 customers" in decision.reasons[0]


def test_paired_gate_records_the_rule_and_its_figures():
    # Hand-checked: the challenger scores 0.4 where the champion scored 0.5 on both customers.
    champion = {"version": "v1", "ndcg": 0.5, "per_user_ndcg": per_user([0.5, 0.5])}
    ch = challenger(ndcg=0.4) | {"per_user_ndcg": per_user([0.4, 0.4])}
    decision = quality_gate_decision(ch, champion, **BUDGET)
    assert decision.figures["ndcg_rule"] == "paired"
    why = decision.figures["ndcg_rule_why"]
    assert why == "both carry per-customer NDCG on the same 2 customers"
    paired = decision.figures["paired"]
    assert paired["n_users"] == 2
    # every resample has the same ratio: 0.8 / 1.0 - 1
    assert (paired["relative"], paired["low"], paired["high"]) == pytest.approx((-0.2,) * 3)
    assert decision.reasons == [
        "ndcg is -20.0% against the champion on the same 2 customers "
        "(95% interval -20.0% to -20.0%): worse than -2% beyond doubt"
    ]


def test_per_customer_figures_on_other_customers_leave_the_point_rule_to_decide():
    # One customer in common of two each: not the same customers, so no pairs (a paired
    # figure on C000 alone would say -5%); the point rule holds 0.38 against 0.4 * 0.98 = 0.392.
    champion = {"version": "v1", "ndcg": 0.4, "per_user_ndcg": {"C000": 0.4, "C002": 0.4}}
    ch = challenger(ndcg=0.38) | {"per_user_ndcg": {"C000": 0.38, "C001": 0.38}}
    decision = quality_gate_decision(ch, champion, **BUDGET)
    assert decision.figures["ndcg_rule"] == "point"
    assert decision.figures["ndcg_rule_why"] == (
        "per-customer NDCG on different customers (challenger 2, champion 2, 1 in common)"
    )
    assert "paired" not in decision.figures
    assert decision.reasons == ["ndcg 0.3800 is below the champion's 0.4000 minus 2% (0.3920)"]


def test_a_champion_without_per_customer_figures_says_why_the_point_rule_decided():
    champion = {"version": "v1", "ndcg": 0.4, "basis": "recorded, other split"}
    ch = challenger(ndcg=0.395) | {"per_user_ndcg": per_user([0.395])}
    decision = quality_gate_decision(ch, champion, **BUDGET)
    assert decision.passed  # 0.395 >= 0.392
    assert decision.figures["ndcg_rule"] == "point"
    assert decision.figures["ndcg_rule_why"] == (
        "the champion has no per-customer NDCG (recorded, other split)"
    )


def test_a_paired_difference_that_is_not_a_number_falls_back_to_the_point_rule():
    # The champion scored 0 on every common customer: no relative difference exists.
    champion = {"version": "v1", "ndcg": 0.4, "per_user_ndcg": per_user([0.0, 0.0])}
    ch = challenger(ndcg=0.3) | {"per_user_ndcg": per_user([0.3, 0.3])}
    decision = quality_gate_decision(ch, champion, **BUDGET)
    assert decision.figures["ndcg_rule"] == "point"
    assert decision.figures["ndcg_rule_why"].startswith(
        "the paired difference on 2 customers is not a number"
    )
    assert decision.reasons == ["ndcg 0.3000 is below the champion's 0.4000 minus 2% (0.3920)"]


@pytest.mark.parametrize("champion_ndcg", [math.nan, None, "n/a"])
def test_a_champion_whose_ndcg_is_not_a_number_refuses_the_challenger(champion_ndcg):
    champion = {"version": "v1", "ndcg": champion_ndcg}
    decision = quality_gate_decision(challenger(ndcg=0.38), champion, **BUDGET)
    assert not decision.passed
    assert decision.reasons == [
        f"the champion's ndcg is {champion_ndcg!r}, not a number: nothing to hold the "
        "challenger against"
    ]
    assert decision.figures["ndcg_rule"] == "none"
    # Per-customer figures do not rescue it either: the champion's record is broken.
    paired = quality_gate_decision(
        challenger(ndcg=0.38) | {"per_user_ndcg": per_user([0.38])},
        champion | {"per_user_ndcg": per_user([0.1])},
        **BUDGET,
    )
    assert not paired.passed and "not a number" in paired.reasons[0]


def test_the_rule_without_a_champion_is_none():
    decision = quality_gate_decision(challenger(), None, **BUDGET)
    assert (decision.figures["ndcg_rule"], decision.figures["ndcg_rule_why"]) == (
        "none",
        "no champion yet",
    )


def _with_baseline(ours: dict, theirs: dict, *, chosen: str = "ranker", name="popularity"):
    figures = challenger(ndcg=sum(ours.values()) / len(ours))
    figures["per_user_ndcg"] = ours
    figures["selection"] = {"chosen": chosen}
    figures["baseline"] = {
        "name": name, "ndcg": sum(theirs.values()) / len(theirs), "per_user_ndcg": theirs,
    }  # fmt: skip
    return figures


def test_a_challenger_worse_than_the_best_simple_model_beyond_doubt_is_refused():
    theirs = {f"u{i}": 0.5 for i in range(30)}
    ours = {u: 0.4 for u in theirs}  # -20% on every customer
    decision = quality_gate_decision(_with_baseline(ours, theirs), None, **BUDGET)
    assert not decision.passed
    assert (
        "against the best simple model popularity on the same 30 customers" in (decision.reasons[0])
    )
    assert decision.figures["baseline_rule"] == "paired"
    assert decision.figures["baseline_paired"]["relative"] == pytest.approx(-0.2)


def test_a_challenger_level_with_the_best_simple_model_passes():
    theirs = {f"u{i}": 0.5 for i in range(30)}
    ours = {u: 0.5 for u in theirs}
    decision = quality_gate_decision(_with_baseline(ours, theirs), None, **BUDGET)
    assert decision.passed
    assert decision.figures["baseline"] == "popularity"
    assert decision.figures["baseline_ndcg"] == pytest.approx(0.5)


def test_the_simple_model_itself_passes_the_baseline_rule_by_definition():
    theirs = {f"u{i}": 0.5 for i in range(30)}
    figures = _with_baseline(theirs, theirs, chosen="popularity")
    decision = quality_gate_decision(figures, None, **BUDGET)
    assert decision.passed
    assert decision.figures["baseline_rule"] == "none"
    assert decision.figures["baseline_rule_why"] == "the challenger is popularity"


def test_the_baseline_on_other_customers_falls_back_to_the_point_rule():
    ours = {"u1": 0.3, "u2": 0.3}
    theirs = {"u1": 0.5, "u3": 0.5}
    decision = quality_gate_decision(_with_baseline(ours, theirs), None, **BUDGET)
    assert not decision.passed
    assert decision.figures["baseline_rule"] == "point"
    assert "best simple model 2, 1 in common" in decision.figures["baseline_rule_why"]
    assert decision.figures["baseline_floor"] == pytest.approx(0.49)
    assert "below the best simple model popularity's 0.5000" in decision.reasons[0]


def test_without_a_baseline_the_rule_does_not_apply_and_says_so():
    decision = quality_gate_decision(challenger(), None, **BUDGET)
    assert decision.figures["baseline_rule"] == "none"
    assert decision.figures["baseline_rule_why"] == "no simple model was scored"
