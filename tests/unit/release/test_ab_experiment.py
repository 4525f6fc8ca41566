"""The A/B test report from the served and feedback logs: hand-checked fixtures, constructed
experiments with and without an AOV effect, conflicts, SRM and empty logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from recsys_assets.ingestion.feedback import FeedbackEvent, events_to_frame
from recsys_assets.release import ab_statistics as abtest
from recsys_assets.release.ab_experiment import (
    ANALYSED,
    ASSIGNMENT_COLUMNS,
    CHALLENGER,
    CHAMPION,
    NO_DATA,
    OUTCOME_COLUMNS,
    SINGLE_VARIANT,
    assignments,
    current_experiment,
    current_phase,
    experiment_report,
    outcomes,
    per_customer,
    per_order,
    write_ab_report,
)
from recsys_assets.serving.served_log import empty_frame

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def h(hours: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=hours)


def served(rows: list[tuple[str, str | None, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "variant", "ts"]).astype(
        {"customer_id": "string", "variant": "string"}
    )


def feedback(rows: list[tuple[str, str, str | None, float | None, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["customer_id", "feedback_type", "order_id", "order_value", "ts"]
    ).astype({"customer_id": "string", "order_id": "string", "order_value": "float64"})


def hand_served() -> pd.DataFrame:
    return served(
        [
            ("u1", CHAMPION, h(0)),
            ("u1", CHAMPION, h(2)),  # a repeat: first_seen stays h(0)
            ("u2", CHAMPION, h(1)),
            ("u3", CHALLENGER, h(0)),
            ("u4", CHALLENGER, h(1)),
            ("u5", CHAMPION, h(0)),
            ("u5", CHALLENGER, h(3)),  # served in both: a conflict
            ("u6", None, h(0)),  # no experiment for this record
        ]
    )


def hand_feedback() -> pd.DataFrame:
    return feedback(
        [
            ("u1", "purchase", "o1", 30.0, h(1)),
            ("u1", "purchase", "o1", 30.0, h(1)),  # second line of o1: one order value
            ("u1", "purchase", "o2", 50.0, h(5)),
            ("u2", "purchase", "o3", 20.0, h(0)),  # before u2's first_seen h(1)
            ("u3", "purchase", "o4", 40.0, h(2)),
            ("u3", "purchase", "o4", None, h(2)),  # a line without the value
            ("u3", "purchase", "o5", 60.0, h(3)),
            ("u4", "click", None, None, h(2)),  # not a purchase
            ("u4", "purchase", "o8", None, h(2)),  # no value on any line: no AOV
            ("u5", "purchase", "o6", 100.0, h(4)),  # conflicting customer
            ("u7", "purchase", "o7", 10.0, h(4)),  # never assigned
        ]
    )


# --- assignments ---------------------------------------------------------------------------


def test_assignments_one_row_per_customer_conflicts_counted():
    assigned = assignments(hand_served())
    assert list(assigned.columns) == list(ASSIGNMENT_COLUMNS)
    rows = {r.customer_id: (r.variant, r.first_seen) for r in assigned.itertuples()}
    assert rows == {
        "u1": (CHAMPION, h(0)),
        "u2": (CHAMPION, h(1)),
        "u3": (CHALLENGER, h(0)),
        "u4": (CHALLENGER, h(1)),
    }
    assert assigned.attrs["conflicts"] == 1
    assert assigned.attrs["conflict_customers"] == ["u5"]
    assert assigned.attrs["records"] == 8
    assert assigned.attrs["records_without_variant"] == 1


def test_assignments_of_an_empty_or_variant_free_log():
    for frame in (empty_frame(), served([("u1", None, h(0))])):
        assigned = assignments(frame)
        assert assigned.empty
        assert list(assigned.columns) == list(ASSIGNMENT_COLUMNS)
        assert assigned.attrs["conflicts"] == 0


# --- outcomes ------------------------------------------------------------------------------


def test_outcomes_hand_checked():
    assigned = assignments(hand_served())
    frame = outcomes(hand_feedback(), assigned)
    assert list(frame.columns) == list(OUTCOME_COLUMNS)
    customers = per_customer(frame).set_index("customer_id")
    assert customers.loc[["u1", "u2", "u3", "u4"], "orders"].tolist() == [2, 0, 2, 0]
    assert customers.loc[["u1", "u2", "u3", "u4"], "revenue"].tolist() == pytest.approx(
        [80.0, 0.0, 100.0, 0.0]
    )
    orders = per_order(frame)
    assert sorted(orders["order_id"]) == ["o1", "o2", "o4", "o5"]
    assert orders.set_index("order_id")["order_value"].to_dict() == pytest.approx(
        {"o1": 30.0, "o2": 50.0, "o4": 40.0, "o5": 60.0}
    )
    assert orders.set_index("order_id").loc["o1", "variant"] == CHAMPION
    assert frame.attrs["exclusions"] == {
        "purchase_lines_without_order_id": 0,
        "orders_without_value": 1,
        "orders_with_inconsistent_value": 0,
        "orders_of_conflicting_customers": 1,
        "orders_unassigned": 1,
        "orders_before_assignment": 1,
        "orders_outside_window": 0,
    }
    # every assigned customer has a row; a customer without orders exactly one
    assert len(frame) == 2 + 1 + 2 + 1


def test_outcomes_window():
    frame = outcomes(hand_feedback(), assignments(hand_served()), start=h(2), end=h(4))
    assert sorted(per_order(frame)["order_id"]) == ["o4", "o5"]  # o1 (h1) and o2 (h5) outside
    assert frame.attrs["exclusions"]["orders_outside_window"] == 2
    assert frame.attrs["window"] == {"start": h(2).isoformat(), "end": h(4).isoformat()}
    customers = per_customer(frame).set_index("customer_id")
    assert customers.loc["u1", "orders"] == 0


def test_outcomes_lines_without_order_id_and_inconsistent_values():
    assigned = assignments(served([("u1", CHAMPION, h(0))]))
    frame = outcomes(
        feedback(
            [
                ("u1", "purchase", None, 15.0, h(1)),  # two lines of one checkout
                ("u1", "purchase", None, 15.0, h(1)),
                ("u1", "purchase", None, 25.0, h(2)),  # another checkout
                ("u1", "purchase", "o9", 30.0, h(3)),
                ("u1", "purchase", "o9", 35.0, h(3.5)),  # disagrees: the earliest line wins
            ]
        ),
        assigned,
    )
    assert per_order(frame)["order_value"].tolist() == pytest.approx([15.0, 25.0, 30.0])
    assert frame.attrs["exclusions"]["purchase_lines_without_order_id"] == 3
    assert frame.attrs["exclusions"]["orders_with_inconsistent_value"] == 1


# --- report --------------------------------------------------------------------------------


def test_report_hand_checked():
    assigned = assignments(hand_served())
    report = experiment_report(
        assigned, outcomes(hand_feedback(), assigned), expected_share=0.5, n_boot=200, seed=1
    )
    json.dumps(report, allow_nan=False)  # JSON-able, no NaN
    assert report["status"] == ANALYSED
    assert (report["champion"], report["challenger"]) == (CHAMPION, CHALLENGER)
    champion, challenger = report["variants"][CHAMPION], report["variants"][CHALLENGER]
    assert champion["customers"] == 2 and challenger["customers"] == 2
    assert all(isinstance(row["orders"], int) for row in (champion, challenger))
    assert champion["customers_with_orders"] == 1 and challenger["customers_with_orders"] == 1
    assert champion["orders"] == 2 and challenger["orders"] == 2
    assert champion["conversion"] == pytest.approx(0.5)
    assert champion["aov"] == pytest.approx(40.0) and challenger["aov"] == pytest.approx(50.0)
    assert champion["revenue_per_customer"] == pytest.approx(40.0)
    assert challenger["revenue_per_customer"] == pytest.approx(50.0)
    # AOV CI: 40 +- t(0.975, 1) * sd / sqrt(2), sd = sqrt(200)
    assert champion["aov_ci_low"] == pytest.approx(40.0 - 12.7062047 * 10.0, rel=1e-6)
    assert champion["aov_ci_high"] == pytest.approx(40.0 + 12.7062047 * 10.0, rel=1e-6)
    assert report["lift"] == pytest.approx(0.25)
    assert report["difference"] == pytest.approx(10.0)
    # Welch: se = sqrt(100 + 100), t = 10 / se, df = 2; P(T_2 > t) = (1 - t / sqrt(t^2 + 2)) / 2
    t = 10.0 / np.sqrt(200.0)
    assert report["welch"]["df"] == pytest.approx(2.0)
    assert report["p_value"] == pytest.approx(1.0 - t / np.sqrt(t**2 + 2.0))
    assert report["srm"]["p_value"] == pytest.approx(1.0)
    assert report["verdict"] == abtest.UNDERPOWERED  # 2 orders, far fewer than needed
    assert report["conflicts"] == 1
    assert report["exclusions"]["customers_in_several_variants"] == 1
    assert report["exclusions"]["orders_of_conflicting_customers"] == 1
    assert any("several variants" in w for w in report["warnings"])
    assert sum(report["order_values"]["counts"][CHAMPION]) == 2


def constructed(
    lift: float, *, n_customers: int = 4000, share: float = 0.5, seed: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A served and a feedback frame: customers in champion / challenger by ``share``,
    Poisson(2) orders each after their first exposure, lognormal order values (AOV 50) scaled
    by ``1 + lift`` in the challenger."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i:05d}" for i in range(n_customers)]
    in_challenger = rng.random(n_customers) < share
    seen = T0 + pd.to_timedelta(rng.uniform(0, 24, n_customers), unit="h")
    served_frame = served(
        [
            (cid, CHALLENGER if ch else CHAMPION, ts)
            for cid, ch, ts in zip(ids, in_challenger, seen, strict=True)
        ]
    )
    n_orders = rng.poisson(2.0, n_customers)
    rows = []
    sigma = 0.5
    for i, (cid, ch, ts) in enumerate(zip(ids, in_challenger, seen, strict=True)):
        for k in range(n_orders[i]):
            value = 50.0 * np.exp(rng.normal(-(sigma**2) / 2, sigma))
            value *= 1.0 + lift if ch else 1.0
            rows.append((cid, "purchase", f"{cid}-{k}", value, ts + pd.Timedelta(hours=k + 1)))
    return served_frame, feedback(rows)


def test_known_effect_is_significant():
    served_frame, feedback_frame = constructed(0.10)
    assigned = assignments(served_frame)
    report = experiment_report(
        assigned, outcomes(feedback_frame, assigned), expected_share=0.5, seed=3
    )
    assert report["verdict"] == abtest.SIGNIFICANT_IMPROVEMENT
    assert report["p_value"] < 1e-6
    assert report["lift"] == pytest.approx(0.10, abs=0.03)
    low, high = report["lift_ci"]
    assert low < 0.10 < high
    boot_low, boot_high = report["lift_ci_bootstrap"]
    assert boot_low < 0.10 < boot_high
    assert boot_low == pytest.approx(low, abs=0.01) and boot_high == pytest.approx(high, abs=0.01)
    assert report["sample_size"]["reached"]
    assert not report["srm"]["mismatch"]
    total = sum(v["customers"] for v in report["variants"].values())
    assert total == 4000
    assert 0.8 < report["variants"][CHAMPION]["conversion"] < 0.92  # 1 - exp(-2) = 0.865


def test_no_effect_is_not_significant():
    served_frame, feedback_frame = constructed(0.0, seed=11)
    assigned = assignments(served_frame)
    report = experiment_report(
        assigned, outcomes(feedback_frame, assigned), expected_share=0.5, seed=3
    )
    assert report["verdict"] == abtest.INCONCLUSIVE
    assert report["p_value"] >= 0.05
    low, high = report["lift_ci"]
    assert low < 0.0 < high


def test_sample_ratio_mismatch_is_flagged():
    customers = [(f"c{i}", CHALLENGER if i < 6000 else CHAMPION, T0) for i in range(10_000)]
    assigned = assignments(served(customers))
    report = experiment_report(
        assigned, outcomes(feedback([]), assigned), expected_share=0.5, n_boot=10
    )
    assert report["srm"]["observed"] == {CHAMPION: 4000, CHALLENGER: 6000}
    assert report["srm"]["mismatch"]
    assert report["srm"]["p_value"] < 1e-50
    assert any("Sample-ratio mismatch" in w for w in report["warnings"])
    assert report["verdict"] == abtest.UNDERPOWERED  # no orders at all
    # the canary share 0.6 matches
    report = experiment_report(
        assigned, outcomes(feedback([]), assigned), expected_share=0.6, n_boot=10
    )
    assert not report["srm"]["mismatch"]


def test_empty_logs_say_no_experiment_data(tmp_path):
    assigned = assignments(empty_frame())
    report = experiment_report(
        assigned, outcomes(events_to_frame([]), assigned), expected_share=0.1
    )
    assert report["status"] == NO_DATA
    assert report["verdict"] is None and report["variants"] == {}
    assert "No experiment data" in report["message"]
    html_path, json_path = write_ab_report(report, tmp_path / "ab.html")
    assert "No experiment data" in html_path.read_text()
    assert json.loads(json_path.read_text()) == report


def test_only_conflicts_is_no_data():
    assigned = assignments(served([("u1", CHAMPION, h(0)), ("u1", CHALLENGER, h(1))]))
    report = experiment_report(assigned, outcomes(feedback([]), assigned), expected_share=0.1)
    assert report["status"] == NO_DATA
    assert report["conflicts"] == 1


def test_single_variant_gives_figures_without_a_test():
    assigned = assignments(served([("u1", CHAMPION, h(0)), ("u2", CHAMPION, h(0))]))
    frame = outcomes(feedback([("u1", "purchase", "o1", 20.0, h(1))]), assigned)
    report = experiment_report(assigned, frame, expected_share=0.1)
    assert report["status"] == SINGLE_VARIANT
    assert report["variants"][CHAMPION]["aov"] == pytest.approx(20.0)
    assert report["variants"][CHAMPION]["conversion"] == pytest.approx(0.5)
    assert report["verdict"] is None


def test_roles():
    rows = [("u1", "B", h(0)), ("u2", "A", h(0)), ("u3", "A", h(0)), ("u4", "B", h(0))]
    assigned = assignments(served(rows))
    frame = outcomes(feedback([]), assigned)
    report = experiment_report(assigned, frame, expected_share=0.5, n_boot=10)
    assert (report["champion"], report["challenger"]) == ("A", "B")
    report = experiment_report(
        assigned, frame, expected_share=0.5, n_boot=10, champion="B", challenger="A"
    )
    assert (report["champion"], report["challenger"]) == ("B", "A")
    three = assignments(served([*rows, ("u5", "C", h(0))]))
    report = experiment_report(three, outcomes(feedback([]), three), expected_share=0.5, n_boot=10)
    assert (report["champion"], report["challenger"]) == ("A", "B")  # a known pair wins
    assert report["exclusions"]["customers_in_other_variants"] == 1
    odd = assignments(served([("u1", "x", h(0)), ("u2", "y", h(0)), ("u3", "z", h(0))]))
    with pytest.raises(ValueError, match="name the champion and the challenger"):
        experiment_report(odd, outcomes(feedback([]), odd), expected_share=0.5)
    report = experiment_report(
        three,
        outcomes(feedback([]), three),
        expected_share=0.5,
        n_boot=10,
        champion="A",
        challenger="B",
    )
    assert report["exclusions"]["customers_in_other_variants"] == 1
    with pytest.raises(ValueError, match="expected_share"):
        experiment_report(assigned, frame, expected_share=1.0)


def test_feedback_log_frames_work_end_to_end(tmp_path):
    """The typed frames of FeedbackLog.read, and the page with its plots."""
    served_frame, _ = constructed(0.10, n_customers=400)
    events = [
        FeedbackEvent(
            request_id=f"r{i}",
            customer_id=row.customer_id,
            item_id="i1",
            feedback_type="purchase",
            ts=(row.ts + pd.Timedelta(hours=1)).floor("us").to_pydatetime(),
            order_id=f"o{i}",
            order_value=50.0 + (5.0 if row.variant == CHALLENGER else 0.0) + i % 7,
        )
        for i, row in enumerate(served_frame.itertuples())
    ]
    events.append(
        FeedbackEvent(
            request_id="late",
            customer_id="nobody",
            item_id="i1",
            feedback_type="impression",
            ts=datetime(2024, 3, 2, tzinfo=UTC),
        )
    )
    assigned = assignments(served_frame)
    report = experiment_report(
        assigned, outcomes(events_to_frame(events), assigned), expected_share=0.5, n_boot=200
    )
    assert report["status"] == ANALYSED
    assert report["lift"] > 0
    html_path, json_path = write_ab_report(report, tmp_path / "out" / "ab_test.html")
    page = html_path.read_text()
    assert "Plotly" in page and "AOV per variant" in page and "Conversion per variant" in page
    assert report["verdict"] in page
    assert json_path == tmp_path / "out" / "ab_test.json"
    assert json.loads(json_path.read_text())["lift"] == pytest.approx(report["lift"])


def test_the_current_experiment_starts_at_its_challengers_first_record():
    frame = pd.DataFrame(
        [
            ("a", "challenger", "v2", h(0)),  # an earlier experiment's challenger
            ("a", "champion", "v1", h(1)),
            ("b", "champion", "v1", h(2)),
            ("a", "challenger", "v3", h(3)),  # the current challenger's first record
            ("b", "champion", "v1", h(4)),
        ],
        columns=["customer_id", "variant", "model_version", "ts"],
    )
    current = current_experiment(frame, "v3")
    assert current["ts"].tolist() == [h(3), h(4)]
    assignment = assignments(current)
    assert assignment.attrs["conflicts"] == 0 and len(assignment) == 2
    assert assignments(frame).attrs["conflicts"] == 1  # "a" in both arms across experiments
    assert current_experiment(frame, "v9").empty  # not served yet: nothing to analyse


def test_the_current_phase_starts_when_the_share_changed_plus_the_settling_time():
    frame = pd.DataFrame({"customer_id": list("abcd"), "ts": [h(0), h(1), h(2), h(3)]})
    assert current_phase(frame, h(1))["customer_id"].tolist() == ["b", "c", "d"]  # at: in
    settled = current_phase(frame, h(1).isoformat(), settle_s=3600)
    assert settled["customer_id"].tolist() == ["c", "d"]
    naive = current_phase(frame, h(2).tz_localize(None))  # a naive time is UTC
    assert naive["customer_id"].tolist() == ["c", "d"]
    assert current_phase(frame, h(4)).empty
