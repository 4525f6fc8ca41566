"""The canary analysis: per-variant figures and the wait/rollback/widen/promote decision."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from recsys_assets.ingestion.feedback import FeedbackEvent, events_to_frame
from recsys_assets.monitoring import loop
from recsys_assets.release.canary import analysis as ca
from recsys_assets.serving.served_log import FRAME_DTYPES

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def served_frame(rows: list[tuple[str, str | None, str | None]]) -> pd.DataFrame:
    """A served frame of (request_id, variant, fallback_reason) rows."""
    return pd.DataFrame(
        {
            "ts": [T0] * len(rows),
            "request_id": [r[0] for r in rows],
            "customer_id": [f"cust-{r[0]}" for r in rows],
            "model_version": ["v2" if r[1] == "challenger" else "v1" for r in rows],
            "variant": [r[1] for r in rows],
            "items": [["i1", "i2"]] * len(rows),
            "scores": [[0.9, 0.5]] * len(rows),
            "fallback_reason": [r[2] for r in rows],
            "as_of": [T0.isoformat()] * len(rows),
        },
        columns=list(FRAME_DTYPES),
    ).astype(FRAME_DTYPES)


def event(request_id: str, kind: str, variant: str | None = None, **kwargs) -> FeedbackEvent:
    return FeedbackEvent(
        request_id=request_id,
        customer_id=f"cust-{request_id}",
        item_id=kwargs.pop("item_id", "i1"),
        feedback_type=kind,
        ts=T0,
        variant=variant,
        **kwargs,
    )


def hand_made() -> tuple[pd.DataFrame, pd.DataFrame]:
    served = served_frame(
        [
            ("r1", "champion", None),
            ("r2", "champion", None),
            ("r3", "champion", None),
            ("r4", "champion", "no_candidates"),
            ("r5", "challenger", None),
            ("r6", "challenger", None),
            ("r7", None, None),  # no variant: in no one's figures
        ]
    )
    feedback = events_to_frame(
        [
            event("r1", "impression", "champion", item_id="i1"),
            event("r1", "impression", "champion", item_id="i2"),
            event("r2", "impression"),  # no variant: the served log says champion
            event("r5", "impression", "challenger"),
            event("r1", "click", "champion"),
            event("r5", "click"),  # no variant: challenger
            # order o1 has two lines; order_value is the whole order's
            event("r1", "purchase", "champion", item_id="i1", order_id="o1", order_value=100.0),
            event("r1", "purchase", "champion", item_id="i2", order_id="o1", order_value=100.0),
            event("r2", "purchase", order_id="o2", order_value=50.0),
            event("r5", "purchase", "challenger", order_id="o3", order_value=30.0),
            event("rX", "purchase", "champion", order_id="o4", order_value=999.0),  # not served
        ]
    )
    return served, feedback


def test_variant_figures_by_hand():
    served, feedback = hand_made()
    figures = ca.variant_figures(
        served,
        feedback,
        latency={"champion": [0.1, 0.2, 0.3, 0.4]},
        errors={"challenger": 2},
    )
    champ, chall = figures["champion"], figures["challenger"]
    assert champ["requests"] == 4 and chall["requests"] == 2
    assert champ["errors"] == 0 and champ["error_rate"] == 0.0
    assert chall["errors"] == 2 and chall["error_rate"] == pytest.approx(2 / 4)
    assert champ["fallbacks"] == 1 and champ["fallback_rate"] == pytest.approx(0.25)
    assert chall["fallback_rate"] == 0.0
    assert (champ["impressions"], champ["clicks"]) == (3, 1)
    assert champ["click_through"] == pytest.approx(1 / 3)
    assert (chall["impressions"], chall["clicks"], chall["click_through"]) == (1, 1, 1.0)
    assert champ["converted_lists"] == 2 and champ["conversion"] == pytest.approx(0.5)
    assert chall["converted_lists"] == 1 and chall["conversion"] == pytest.approx(0.5)
    assert champ["orders"] == 2  # o1 (two lines) and o2; o4 quotes no served list
    assert champ["revenue"] == pytest.approx(150.0) and champ["aov"] == pytest.approx(75.0)
    assert chall["orders"] == 1 and chall["aov"] == pytest.approx(30.0)
    assert champ["latency_samples"] == 4
    assert champ["p50_ms"] == pytest.approx(250.0)
    assert champ["p99_ms"] == pytest.approx(397.0)  # linear: 300 + 0.97 * 100
    assert chall["latency_samples"] == 0 and chall["p50_ms"] is None and chall["p99_ms"] is None


def test_feedback_without_a_variant_column_joins_the_served_log():
    served, feedback = hand_made()
    with_column = ca.variant_figures(served, feedback)
    without = ca.variant_figures(served, feedback.drop(columns=["variant"]))
    assert without == with_column


def test_empty_logs_give_zeros_and_no_rates():
    served, feedback = hand_made()
    figures = ca.variant_figures(served.iloc[:0], feedback.iloc[:0])
    for row in figures.values():
        assert row["requests"] == row["orders"] == row["clicks"] == 0
        assert row["conversion"] is None and row["error_rate"] is None and row["aov"] is None


def test_purchase_without_order_id_is_an_order_of_its_own():
    served = served_frame([("r1", "challenger", None)])
    feedback = events_to_frame(
        [
            event("r1", "purchase", item_id="a", order_value=10.0),
            event("r1", "purchase", item_id="b", order_value=20.0),
        ]
    )
    chall = ca.variant_figures(served, feedback)["challenger"]
    assert chall["orders"] == 2 and chall["aov"] == pytest.approx(15.0)
    assert chall["converted_lists"] == 1


# --- Scenarios: frames -> figures -> decision -------------------------------------------------


def scenario(
    lists: tuple[int, int],
    converted: tuple[int, int] = (0, 0),
    fallbacks: tuple[int, int] = (0, 0),
    clicked: tuple[int, int] = (0, 0),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(champion, challenger) served lists (one impression each), how many were followed by an
    order, fallbacks, clicks."""
    rows, events = [], []
    for variant, n, bought, fell, clicks in zip(
        ("champion", "challenger"), lists, converted, fallbacks, clicked, strict=True
    ):
        for i in range(n):
            request_id = f"{variant}-{i}"
            rows.append((request_id, variant, "cold_start" if i < fell else None))
            events.append(event(request_id, "impression", variant))
            if i < clicks:
                events.append(event(request_id, "click", variant))
            if i < bought:
                events.append(
                    event(request_id, "purchase", variant, order_id=request_id, order_value=50.0)
                )
    return served_frame(rows), events_to_frame(events)


def decide(
    lists=(1000, 1000),
    converted=(300, 300),
    fallbacks=(0, 0),
    *,
    share: float = 0.1,
    latency=None,
    errors=None,
    policy: ca.CanaryPolicy | None = None,
    clicked=(0, 0),
) -> ca.CanaryDecision:
    served, feedback = scenario(lists, converted, fallbacks, clicked)
    figures = ca.variant_figures(served, feedback, latency=latency, errors=errors)
    return ca.canary_decision(figures, policy or ca.CanaryPolicy(), current_share=share)


def test_a_clean_canary_widens_to_the_next_step():
    decision = decide(share=0.1)
    assert decision.action == ca.WIDEN and decision.next_share == 0.25
    assert "widen from 0.1 to 0.25" in decision.reasons[0]
    assert any("p99 latency not judged" in r for r in decision.reasons)
    assert decision.guardrails["conversion"]["status"] == ca.CLEAN
    assert decision.figures["challenger"]["requests"] == 1000


@pytest.mark.parametrize(("share", "widened"), [(0.0, 0.1), (0.25, 0.5), (0.3, 0.5)])
def test_widening_goes_to_the_first_step_above(share, widened):
    decision = decide(share=share)
    assert (decision.action, decision.next_share) == (ca.WIDEN, widened)


@pytest.mark.parametrize("share", [0.5, 0.75, 1.0])
def test_clean_where_the_next_step_is_every_customer_promotes(share):
    decision = decide(share=share)
    assert decision.action == ca.PROMOTE and decision.next_share == 1.0
    assert "promote" in decision.reasons[0]


def test_a_last_step_below_one_promotes_from_there():
    policy = ca.CanaryPolicy(steps=(0.1, 0.3))
    assert decide(share=0.1, policy=policy).action == ca.WIDEN
    assert decide(share=0.3, policy=policy).action == ca.PROMOTE


def test_five_times_the_latency_rolls_back_naming_p99():
    latency = {"champion": [0.05] * 300, "challenger": [0.25] * 300}
    decision = decide(latency=latency)
    assert decision.action == ca.ROLLBACK and decision.next_share == 0.0
    assert len(decision.reasons) == 1
    assert decision.reasons[0].startswith("p99 latency: challenger 250.0 ms vs champion 50.0 ms")
    assert "5.00x, limit 1.50x" in decision.reasons[0]
    assert decision.guardrails["p99_latency"]["ratio"] == pytest.approx(5.0)


def test_an_environment_s_tighter_latency_guardrail_rolls_back_what_the_defaults_widen():
    import dataclasses

    from recsys_assets.config import get_settings

    latency = {"champion": [0.010] * 300, "challenger": [0.013] * 300}  # 1.3x, 3 ms slower
    environment = get_settings("test").canary  # the environment file's policy: the defaults
    assert decide(latency=latency, policy=environment).action == ca.WIDEN
    tighter = dataclasses.replace(environment, max_p99_ratio=1.2, min_p99_increase_ms=2.0)
    decision = decide(latency=latency, policy=tighter)
    assert decision.action == ca.ROLLBACK
    [reason] = decision.reasons
    assert "1.30x, limit 1.20x (and +2 ms)" in reason


def test_latency_with_too_few_samples_is_not_judged():
    latency = {"champion": [0.05] * 300, "challenger": [0.25] * 199}
    decision = decide(latency=latency)
    assert decision.action == ca.WIDEN
    assert decision.guardrails["p99_latency"]["status"] == ca.NOT_JUDGED


def test_three_percent_errors_roll_back_naming_the_error_rate():
    decision = decide(lists=(1000, 970), converted=(300, 291), errors={"challenger": 30})
    assert decision.figures["challenger"]["error_rate"] == pytest.approx(0.03)
    assert decision.action == ca.ROLLBACK
    [reason] = decision.reasons
    assert reason.startswith("error rate: challenger 3.00% (30 of 1000 requests)")
    assert "champion 0.00%" in reason and "+3.00 points, limit +1.00 points" in reason


def test_a_challenger_failing_every_request_is_judged_on_its_errors():
    decision = decide(lists=(1000, 0), converted=(300, 0), errors={"challenger": 300})
    assert decision.action == ca.ROLLBACK
    assert decision.reasons[0].startswith("error rate: challenger 100.00%")


def test_slightly_lower_conversion_that_is_noise_widens():
    # 26.7% vs 30% on 300 lists each: ratio 0.89 < 0.9 but z = -0.91, p = 0.18
    decision = decide(lists=(300, 300), converted=(90, 80))
    guard = decision.guardrails["conversion"]
    assert guard["ratio"] == pytest.approx(80 / 90)
    assert guard["p_value"] == pytest.approx(0.1825, abs=0.002)
    assert decision.action == ca.WIDEN


def test_clearly_worse_conversion_rolls_back():
    decision = decide(lists=(1000, 1000), converted=(300, 100))
    assert decision.action == ca.ROLLBACK and decision.next_share == 0.0
    [reason] = decision.reasons
    assert reason.startswith("conversion: challenger 10.00% (100 of 1000 lists)")
    assert "champion 30.00%" in reason and "significantly worse" in reason
    assert decision.guardrails["conversion"]["p_value"] < 1e-20


def test_several_breaches_are_all_named():
    decision = decide(
        converted=(300, 100),
        fallbacks=(0, 100),
        errors={"challenger": 100},
        latency={"champion": [0.05] * 300, "challenger": [0.25] * 300},
    )
    assert decision.action == ca.ROLLBACK
    assert [r.split(":")[0] for r in decision.reasons] == [
        "error rate",
        "p99 latency",
        "fallback rate",
        "conversion",
    ]


def test_too_few_requests_wait():
    decision = decide(lists=(1000, 150), converted=(300, 0), share=0.25)
    assert decision.action == ca.WAIT and decision.next_share == 0.25
    assert "challenger 150 and champion 1000 requests" in decision.reasons[0]
    assert decision.guardrails == {}


# --- Boundaries: a value equal to its threshold is within limits -------------------------------


def test_error_rate_exactly_at_the_limit_is_clean_above_breaches():
    at = decide(lists=(200, 198), converted=(0, 0), errors={"challenger": 2})
    assert at.figures["challenger"]["error_rate"] == 0.01
    assert at.action == ca.WIDEN
    above = decide(lists=(200, 197), converted=(0, 0), errors={"challenger": 3})
    assert above.action == ca.ROLLBACK


def test_p99_ratio_exactly_at_the_limit_is_clean_above_breaches():
    at = decide(latency={"champion": [0.25] * 200, "challenger": [0.375] * 200})
    assert at.guardrails["p99_latency"]["ratio"] == 1.5
    assert at.action == ca.WIDEN
    above = decide(latency={"champion": [0.25] * 200, "challenger": [0.376] * 200})
    assert above.action == ca.ROLLBACK


def test_fallback_rate_exactly_at_the_limit_is_clean_above_breaches():
    at = decide(lists=(200, 200), converted=(0, 0), fallbacks=(0, 10))
    assert at.guardrails["fallback_rate"]["increase"] == 0.05
    assert at.action == ca.WIDEN
    above = decide(lists=(200, 200), converted=(0, 0), fallbacks=(0, 11))
    assert above.action == ca.ROLLBACK
    assert above.reasons[0].startswith("fallback rate: challenger 5.50% (11 of 200 lists)")


def test_conversion_ratio_exactly_at_the_limit_is_clean_below_breaches():
    # 45% vs 50% on 2000 lists each is significant (z = -3.2): only the ratio decides
    at = decide(lists=(2000, 2000), converted=(1000, 900))
    guard = at.guardrails["conversion"]
    assert guard["ratio"] == 0.9 and guard["p_value"] < 0.05
    assert at.action == ca.WIDEN
    below = decide(lists=(2000, 2000), converted=(1000, 899))
    assert below.action == ca.ROLLBACK


def test_min_requests_exactly_reached_decides():
    assert decide(lists=(200, 200), converted=(0, 0)).action == ca.WIDEN
    assert decide(lists=(200, 199), converted=(0, 0)).action == ca.WAIT


# --- The z-test, the policy, the loop's event kinds -------------------------------------------


def test_conversion_z_test_by_hand():
    z, p = ca.conversion_z_test(300, 1000, 100, 1000)
    pooled = 0.2
    se = (pooled * (1 - pooled) * (2 / 1000)) ** 0.5
    assert z == pytest.approx(-0.2 / se)
    assert p == pytest.approx(0.0, abs=1e-20)
    assert ca.conversion_z_test(0, 100, 0, 100) == (0.0, 0.5)
    assert ca.conversion_z_test(0, 0, 0, 100) == (None, None)


def test_no_champion_conversion_is_not_judged():
    decision = decide(lists=(300, 300), converted=(0, 0))
    assert decision.guardrails["conversion"]["status"] == ca.NOT_JUDGED
    assert decision.action == ca.WIDEN


def test_policy_defaults_and_validation():
    policy = ca.CanaryPolicy()
    assert policy.min_requests == 200
    assert policy.max_error_rate_increase == 0.01
    assert policy.max_p99_ratio == 1.5
    assert policy.max_fallback_rate_increase == 0.05
    assert policy.min_conversion_ratio == 0.9
    assert policy.alpha == 0.05
    assert policy.steps == (0.1, 0.25, 0.5, 1.0)
    for bad in (
        {"min_requests": 0},
        {"max_p99_ratio": 0.0},
        {"alpha": 1.0},
        {"steps": ()},
        {"steps": (0.5, 0.25)},
        {"steps": (0.5, 1.5)},
    ):
        with pytest.raises(ValueError):
            ca.CanaryPolicy(**bad)


def test_current_share_is_validated():
    served, feedback = scenario((10, 10))
    figures = ca.variant_figures(served, feedback)
    with pytest.raises(ValueError, match="current_share"):
        ca.canary_decision(figures, current_share=1.5)


def test_decision_as_event_is_json():
    import json

    decision = decide(converted=(300, 100))
    record = json.loads(json.dumps(decision.as_event(), allow_nan=False))
    assert record["action"] == "rollback" and record["next_share"] == 0.0
    assert record["figures"]["challenger"]["converted_lists"] == 100


def test_loop_knows_the_canary_event_kinds():
    canary = (loop.CANARY_DECISION, loop.ROLLED_BACK, loop.CANARY_WIDENED, loop.CANARY_PROMOTED)
    start = loop.EVENT_KINDS.index(loop.CANARY_DECISION)
    assert loop.EVENT_KINDS[start : start + 4] == canary  # decision, then what was applied
    assert loop.CANARY_DECISION == "canary_decision" and loop.ROLLED_BACK == "rolled_back"
    assert (loop.CANARY_WIDENED, loop.CANARY_PROMOTED) == ("canary_widened", "canary_promoted")


def test_served_latency_takes_finite_latency_ms_per_variant_in_seconds():
    served = served_frame([("a", "champion", None), ("b", "champion", None),
                           ("c", "challenger", None), ("d", None, None)])  # fmt: skip
    assert ca.served_latency(served) == {}  # no latency measured: nothing, p99 not judged
    served["latency_ms"] = [4.0, float("nan"), 60.0, 1.0]
    assert ca.served_latency(served) == {"champion": [0.004], "challenger": [0.06]}
    assert ca.served_latency(served.drop(columns="latency_ms")) == {}


# --- Error counts from the service's /metrics ------------------------------------------------

METRICS = """\
# HELP recsys_errors_total Requests that failed inside the service, by endpoint and variant
# TYPE recsys_errors_total counter
recsys_errors_total{endpoint="recommend",variant="champion"} 2.0
recsys_errors_total{endpoint="recommend",variant="challenger"} 37.0
recsys_errors_total{endpoint="feedback",variant="none"} 5.0
# HELP recsys_canary_share Configured share of customers routed to the challenger
# TYPE recsys_canary_share gauge
recsys_canary_share 0.5
# HELP recsys_fallbacks_total Requests served the popularity fallback
# TYPE recsys_fallbacks_total counter
recsys_fallbacks_total{reason="unknown_customer",variant="challenger"} 9.0
"""


def test_errors_from_metrics_takes_recommend_errors_per_variant():
    assert ca.errors_from_metrics(METRICS) == {"champion": 2, "challenger": 37}
    assert ca.errors_from_metrics(METRICS, endpoint="feedback") == {"champion": 0, "challenger": 0}


def test_errors_from_metrics_sums_other_labels_and_defaults_to_zero():
    text = (
        'recsys_errors_total{endpoint="recommend",variant="challenger",pod="a"} 3\n'
        'recsys_errors_total{endpoint="recommend",variant="challenger",pod="b"} 4\n'
    )
    assert ca.errors_from_metrics(text) == {"champion": 0, "challenger": 7}
    assert ca.errors_from_metrics("") == {"champion": 0, "challenger": 0}  # nothing failed yet


def test_errors_from_metrics_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="no variant label"):
        ca.errors_from_metrics('recsys_errors_total{endpoint="recommend"} 3\n')
    with pytest.raises(ValueError, match="does not parse"):
        ca.errors_from_metrics("<html>not metrics</html>\n")


def test_unknown_error_counts_are_not_judged_with_the_reason():
    served, feedback = scenario((1000, 1000), (300, 300))
    figures = ca.variant_figures(served, feedback)
    decision = ca.canary_decision(
        figures, current_share=0.1, errors_not_judged="the service's metrics could not be read"
    )
    guard = decision.guardrails["error_rate"]
    assert guard["status"] == ca.NOT_JUDGED and guard["increase"] is None
    assert decision.action == ca.WIDEN
    assert "error rate not judged: the service's metrics could not be read" in decision.reasons


def test_a_challenger_shoppers_click_less_is_rolled_back_on_click_through():
    decision = decide(clicked=(300, 200))
    assert decision.action == ca.ROLLBACK
    (reason,) = decision.reasons
    assert reason.startswith("click-through: challenger 20.00% (200 of 1000 impressions)")
    assert "significantly worse" in reason
    assert decision.guardrails["click_through"]["ratio"] == pytest.approx(2 / 3)


def test_click_through_within_noise_is_clean_and_without_clicks_not_judged():
    assert decide(clicked=(300, 290)).guardrails["click_through"]["status"] == ca.CLEAN
    assert decide().guardrails["click_through"]["status"] == ca.NOT_JUDGED


def test_more_clicks_than_impressions_is_not_judged():
    served, feedback = scenario((300, 300), clicked=(300, 300))
    doubled = pd.concat([feedback, feedback[feedback["feedback_type"] == "click"]])
    figures = ca.variant_figures(served, doubled)
    decision = ca.canary_decision(figures, current_share=0.1)
    guardrail = decision.guardrails["click_through"]
    assert guardrail["status"] == ca.NOT_JUDGED
    assert (
        guardrail["text"] == "click-through not judged: more click-through events than impressions"
    )


def test_a_promotion_waits_until_conversion_can_be_judged():
    # clean on every judged guardrail at the last step, but no purchases yet on either side
    waiting = decide(converted=(0, 0), share=0.5)
    assert waiting.action == ca.WAIT and waiting.next_share == 0.5
    assert waiting.reasons[0].startswith("promotion waits until conversion can be judged")
    assert waiting.guardrails["conversion"]["status"] == ca.NOT_JUDGED
    # widening below the last step does not wait for it
    assert decide(converted=(0, 0), share=0.1).action == ca.WIDEN
    # a policy that does not need it promotes on the technical guardrails alone
    eager = ca.CanaryPolicy(promote_needs=())
    assert decide(converted=(0, 0), share=0.5, policy=eager).action == ca.PROMOTE


def test_promote_needs_names_known_guardrails_only():
    with pytest.raises(ValueError, match=r"promote_needs names unknown guardrail\(s\) \['aov'\]"):
        ca.CanaryPolicy(promote_needs=("aov",))


# --- One experiment's records, and waiting when the errors cannot be read ---------------------


def timed_frame(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    """A served frame of (request_id, variant, model_version, minutes after T0) rows."""
    frame = served_frame([(r[0], r[1], None) for r in rows])
    frame["model_version"] = pd.array([r[2] for r in rows], dtype="string")
    frame["ts"] = pd.Series(
        [T0 + pd.Timedelta(minutes=r[3]) for r in rows], dtype=FRAME_DTYPES["ts"]
    )
    return frame


def test_experiment_records_are_the_experiments_own():
    served = timed_frame([
        ("old-champ", "champion", "v1", 0), ("old-chall", "challenger", "v1b", 0),  # before
        ("champ", "champion", "v1", 60), ("chall", "challenger", "v2", 60),
        ("straggler", "challenger", "v1b", 61),  # the earlier challenger, after the start
        ("champ-2", "champion", "v1", 90),
    ])  # fmt: skip
    feedback = events_to_frame([
        event("old-chall", "purchase", "challenger", order_id="o1", order_value=10.0),
        event("chall", "purchase", "challenger", order_id="o2", order_value=20.0),
        event("straggler", "click", "challenger"),
    ])  # fmt: skip
    # no start recorded: from the first list of the challenger's own version (minute 60)
    assert ca.experiment_start(served, "v2") == pd.Timestamp(T0) + pd.Timedelta(minutes=60)
    kept, bought = ca.experiment_records(served, feedback, challenger_version="v2")
    assert list(kept["request_id"]) == ["champ", "chall", "champ-2"]
    assert list(bought["request_id"]) == ["chall"]
    # a recorded start wins
    since = (T0 + pd.Timedelta(minutes=75)).isoformat()
    kept, bought = ca.experiment_records(served, feedback, challenger_version="v2", since=since)
    assert list(kept["request_id"]) == ["champ-2"] and bought.empty
    # a challenger that has served nothing yet: no record is its experiment's
    assert ca.experiment_start(served, "v3") is None
    kept, bought = ca.experiment_records(served, feedback, challenger_version="v3")
    assert kept.empty and bought.empty


def test_an_earlier_challengers_lists_do_not_meet_min_requests():
    old = [(f"o-{v}-{i}", v, "v1" if v == "champion" else "v1b", 0)
           for v in ("champion", "challenger") for i in range(300)]  # fmt: skip
    new = [(f"n-{v}-{i}", v, "v1" if v == "champion" else "v2", 60)
           for v in ("champion", "challenger") for i in range(10)]  # fmt: skip
    served = timed_frame(old + new)
    empty = events_to_frame([])
    everything = ca.canary_decision(ca.variant_figures(served, empty), current_share=0.1)
    assert everything.action == ca.WIDEN  # what judging the whole log did
    kept, feedback = ca.experiment_records(served, empty, challenger_version="v2")
    decision = ca.canary_decision(ca.variant_figures(kept, feedback), current_share=0.1)
    assert decision.action == ca.WAIT
    assert decision.reasons[0].startswith("waiting for traffic: challenger 10 and champion 10")


UNREADABLE = "the service's metrics at http://svc:3000/metrics could not be read (refused)"


@pytest.mark.parametrize("share", [0.1, 0.5])  # it would widen, it would promote
def test_unreadable_error_counts_hold_the_canary_where_it_is(share):
    served, feedback = scenario((1000, 1000), (300, 300))
    figures = ca.variant_figures(served, feedback)
    decision = ca.canary_decision(figures, current_share=share, errors_not_judged=UNREADABLE,
                                  hold=UNREADABLE)  # fmt: skip
    assert (decision.action, decision.next_share) == (ca.WAIT, share)
    assert decision.reasons[0] == (
        f"waiting at share {share:g}, neither widening nor promoting: {UNREADABLE}"
    )
    assert f"error rate not judged: {UNREADABLE}" in decision.reasons
    assert decision.guardrails["error_rate"]["status"] == ca.NOT_JUDGED


def test_unreadable_error_counts_still_roll_back_a_breach():
    served, feedback = scenario((1000, 1000), (300, 100))
    figures = ca.variant_figures(served, feedback)
    decision = ca.canary_decision(figures, current_share=0.1, errors_not_judged=UNREADABLE,
                                  hold=UNREADABLE)  # fmt: skip
    assert decision.action == ca.ROLLBACK
    assert decision.reasons[0].startswith("conversion: challenger 10.00%")
