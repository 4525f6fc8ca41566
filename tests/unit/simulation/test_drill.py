"""The drill's pure parts: the bad model's misjoined candidates, the shoppers' tastes and their
reaction to a list, what the shoppers saw per variant, and the plan and refusals."""

from __future__ import annotations

from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pytest

from recsys_assets import cli
from recsys_assets.serving.model import CandidateIndex, ServingModel
from recsys_assets.simulation.drill import (
    BAD_MODEL,
    SLOW,
    Drill,
    DrillPlan,
    Observation,
    Tastes,
    challenger_of,
    misjoined,
    react,
    shopper_figures,
)


def index_of(lists: dict[str, list[str]]) -> CandidateIndex:
    """A candidate index of customer -> items, one score column (the item's position)."""
    offsets, items, start = {}, [], 0
    for customer, mine in lists.items():
        offsets[customer] = (start, start + len(mine))
        items += mine
        start += len(mine)
    return CandidateIndex(
        offsets=offsets,
        items=np.array(items, dtype=object),
        scores=np.arange(len(items), dtype=np.float64).reshape(-1, 1),
        columns=["rank"],
        bought=np.array([item.endswith("*") for item in items]),
    )


def candidates_of(index: CandidateIndex) -> dict[str, list[str]]:
    return {customer: list(index.lookup(customer)[0]) for customer in index.offsets}


LISTS = {"a": ["a1", "a2*"], "b": ["b1"], "c": ["c1", "c2", "c3*"]}


def test_misjoined_hands_each_customer_the_next_customers_candidates():
    index = index_of(LISTS)
    bad = misjoined(index)
    assert candidates_of(bad) == {"a": ["b1"], "b": ["c1", "c2", "c3*"], "c": ["a1", "a2*"]}
    # scores and bought flags move with their items
    _, scores = bad.lookup("b")
    assert scores[:, 0].tolist() == [3.0, 4.0, 5.0]
    assert bad.bought_mask("b").tolist() == [False, False, True]
    assert candidates_of(index) == LISTS  # the champion's index is left as it was


def test_misjoined_wraps_the_shift_and_keeps_tiny_indexes_whole():
    assert candidates_of(misjoined(index_of(LISTS), shift=4)) == candidates_of(
        misjoined(index_of(LISTS), shift=1)
    )
    assert candidates_of(misjoined(index_of(LISTS), shift=3)) == LISTS
    assert candidates_of(misjoined(index_of({"a": ["a1"]}))) == {"a": ["a1"]}
    assert len(misjoined(index_of({}))) == 0


def serving_model(index: CandidateIndex) -> ServingModel:
    return ServingModel(
        version="v1", booster=None, features=[], candidates=index, catalogue={}, popular=[],
        popular_by_country={}, data_end=pd.Timestamp("2024-01-01", tz="UTC"),
    )  # fmt: skip


def test_each_fault_has_its_challenger():
    champion = serving_model(index_of(LISTS))
    slow = challenger_of(champion, SLOW)
    assert slow.version == "v1-slow" and candidates_of(slow.candidates) == LISTS
    bad = challenger_of(champion, BAD_MODEL)
    assert bad.version == "v1-misjoined"
    assert candidates_of(bad.candidates) == candidates_of(misjoined(champion.candidates))
    assert champion.version == "v1" and candidates_of(champion.candidates) == LISTS


def test_tastes_are_the_items_each_customer_bought_with_mean_prices():
    purchases = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2"],
            "item_id": ["i1", "i2", "i1", "i3"],
            "unit_price": [2.0, None, 4.0, None],
        }
    )
    tastes = Tastes.from_purchases(purchases)
    assert tastes.liked == {"u1": frozenset({"i1", "i2"}), "u2": frozenset({"i1", "i3"})}
    assert tastes.prices == {"i1": 3.0}  # items without a price are left out


def test_tastes_come_from_the_warehouses_validated_purchases(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA events")
        con.execute(
            "CREATE TABLE events.validated_events AS SELECT * FROM (VALUES "
            "('u1', 'i1', 'purchase', 2.0), ('u1', 'i2', 'view', 1.0), "
            "('u2', 'i2', 'purchase', NULL)) t(user_id, item_id, event_type, unit_price)"
        )
    tastes = Drill.read_tastes(SimpleNamespace(warehouse_path=warehouse))
    assert tastes.liked == {"u1": frozenset({"i1"}), "u2": frozenset({"i2"})}
    assert tastes.prices == {"i1": 2.0}
    with pytest.raises(RuntimeError, match="no warehouse"):
        Drill.read_tastes(SimpleNamespace(warehouse_path=tmp_path / "missing.duckdb"))


ANSWER = {
    "request_id": "r1",
    "customer_id": "u1",
    "variant": "challenger",
    "items": [{"item_id": item, "score": 1.0, "name": item} for item in ("i1", "i2", "i3")],
}


def kinds_of(events: list[dict]) -> list[tuple[str, str]]:
    return [(event["item_id"], event["type"]) for event in events]


def test_a_shopper_clicks_and_buys_only_what_they_like():
    tastes = Tastes(liked={"u1": frozenset({"i1", "i3"})}, prices={"i1": 2.5},
                    click_probability=1.0, purchase_probability=1.0)  # fmt: skip
    events = react(ANSWER, tastes, np.random.default_rng(0))
    assert kinds_of(events) == [
        ("i1", "impression"), ("i1", "click"), ("i1", "purchase"),
        ("i2", "impression"),
        ("i3", "impression"), ("i3", "click"), ("i3", "purchase"),
    ]  # fmt: skip
    assert all(e["request_id"] == "r1" and e["variant"] == "challenger" for e in events)
    assert [e["position"] for e in events if e["type"] == "impression"] == [1, 2, 3]
    purchases = [e for e in events if e["type"] == "purchase"]
    # one order per list: a known unit price, else 1.0 per item
    assert {e["order_id"] for e in purchases} == {"drill-r1"}
    assert {e["order_value"] for e in purchases} == {3.5}
    assert [e["unit_price"] for e in purchases] == [2.5, None]
    assert all(e["quantity"] == 1 for e in purchases)


def test_a_shopper_who_likes_nothing_shown_only_sees_it():
    for tastes in (Tastes(liked={"u1": frozenset({"i9"})}, click_probability=1.0),
                   Tastes(liked={"u1": frozenset({"i1"})}, click_probability=0.0),
                   Tastes(liked={})):  # fmt: skip
        events = react(ANSWER, tastes, np.random.default_rng(0))
        assert {e["type"] for e in events} == {"impression"}
    assert react({**ANSWER, "items": []}, Tastes(liked={}), np.random.default_rng(0)) == []


def test_the_same_seed_gives_the_same_reactions():
    tastes = Tastes(liked={"u1": frozenset({"i1", "i2", "i3"})})
    runs = [
        [kinds_of(react(ANSWER, tastes, rng)) for _ in range(20)]
        for rng in (np.random.default_rng(7), np.random.default_rng(7))
    ]
    assert runs[0] == runs[1]
    clicks = sum(kind == "click" for run in runs[0] for _, kind in run)
    assert 0 < clicks < 60  # the probabilities, not all or nothing


def test_shopper_figures_per_variant():
    seen = [
        Observation(0.0, "champion", 5.0, 200, reacted=True, shown=10, clicks=2, purchases=1,
                    feedback_status=200),
        Observation(1.0, "champion", 7.0, 200, reacted=True, shown=10, clicks=0,
                    feedback_status=200),
        Observation(2.0, "error", 9.0, 500),
    ]  # fmt: skip
    figures = shopper_figures(seen)
    assert figures["answers"] == 2
    assert figures["click_through"] == pytest.approx(0.1)
    assert figures["conversion"] == pytest.approx(0.5)
    assert (figures["shown"], figures["clicks"], figures["converted_lists"]) == (20, 2, 1)
    # shoppers that did not react (the slow drill): latency only
    plain = shopper_figures([Observation(0.0, "champion", 5.0, 200)])
    assert set(plain) == {"answers", "p50_ms", "p99_ms"}


def test_the_plan_knows_its_faults():
    assert DrillPlan().fault == SLOW
    with pytest.raises(ValueError, match="fault must be one of"):
        DrillPlan(fault="typo")


@pytest.mark.parametrize("environment", ["acceptance", "prod"])
def test_the_bad_model_drill_is_refused_in_acceptance_and_prod(environment, monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_ENV", environment)
    drill = Drill(DrillPlan(fault=BAD_MODEL), tmp_path / "drill")
    with pytest.raises(RuntimeError, match=rf"a bad model .* refused in {environment}"):
        drill.prepare()
    assert not (tmp_path / "drill").exists()


def test_the_delay_is_for_the_slow_fault_only(capsys):
    assert cli.main(["drill", "--fault", "bad-model", "--delay-ms", "50"]) == 2
    assert "--delay-ms is for --fault slow only" in capsys.readouterr().err
