"""The closed-loop simulation's shoppers: hidden tastes, click model, payloads, metrics, report."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.ingestion.feedback import FeedbackEvent
from recsys_assets.ingestion.synthetic import (
    CATEGORY,
    LatentUsers,
    NewItems,
    PreferenceShift,
    SeasonalBoost,
    SyntheticConfig,
    category_names,
    generate_events,
    item_catalogue,
    user_segment,
)
from recsys_assets.simulation.shoppers import (
    GROUPS,
    METRIC_COLUMNS,
    Reaction,
    ShopperBehaviour,
    Shoppers,
    _markers,
    daily_metrics,
    examine,
    feedback_bodies,
    order_id_for,
    organic_events,
    reactions_frame,
    respond,
    to_feedback_payload,
    write_json,
    write_report,
)

SHIFT = PreferenceShift(
    target_categories=("Garden",), start=date(2024, 1, 20), strength=0.8, user_fraction=0.4
)
BOOST = SeasonalBoost(category="Christmas", start="2024-01-26", end="2024-02-01", factor=3.0)
CFG = SyntheticConfig(
    n_users=300, n_items=240, days=40, preference_shifts=(SHIFT,), seasonal_boosts=(BOOST,)
)
BEFORE_SHIFT = datetime(2024, 1, 12, 12, tzinfo=UTC)
AFTER_SHIFT = datetime(2024, 1, 23, 12, tzinfo=UTC)  # shift fully on, boost not yet
IN_BOOST = datetime(2024, 1, 28, 12, tzinfo=UTC)
DRAWS = 2_000


@pytest.fixture(scope="module")
def shoppers() -> Shoppers:
    return Shoppers(CFG)


@pytest.fixture(scope="module")
def latent() -> LatentUsers:
    return LatentUsers(CFG)


def _items_of(shoppers: Shoppers, categories: list[str], n: int = 10) -> list[str]:
    """n items cycling over the categories (cheapest first within each)."""
    cat = shoppers.catalogue.sort_values([CATEGORY, c.UNIT_PRICE])
    pools = [list(cat.loc[cat[CATEGORY] == name, c.ITEM_ID]) for name in categories]
    return [str(pools[i % len(pools)][i // len(pools)]) for i in range(n)]


def _order_rate(shoppers: Shoppers, user: str, items: list[str], ts: datetime) -> float:
    """Share of DRAWS seeded lists that led to an order (seeds 0..DRAWS-1)."""
    ordered = 0
    for seed in range(DRAWS):
        rng = np.random.default_rng(seed)
        reactions = respond(shoppers, user, items, ts, rng, request_id=f"r{seed}")
        ordered += any(r.feedback_type == "purchase" for r in reactions)
    return ordered / DRAWS


# --- Shoppers -------------------------------------------------------------------------------


def test_shoppers_expose_users_devices_countries_and_the_catalogue(shoppers):
    assert len(shoppers.user_ids) == CFG.n_users
    assert shoppers.user_ids[0] == "U00001"
    assert shoppers.categories == category_names(CFG)
    countries = {name for name, _ in CFG.countries}
    devices = {name for name, _ in CFG.devices}
    assert set(shoppers.users[c.HOME_COUNTRY]) <= countries
    assert set(shoppers.users[c.DEVICE]) <= devices
    assert shoppers.home_country("U00005") == shoppers.users[c.HOME_COUNTRY].iloc[4]
    assert shoppers.device("U00005") in devices
    pd.testing.assert_frame_equal(shoppers.catalogue, item_catalogue(CFG))
    # the geometric mean of a category's catalogue prices
    garden = shoppers.catalogue.loc[shoppers.catalogue[CATEGORY] == "Garden", c.UNIT_PRICE]
    assert shoppers.typical_price["Garden"] == pytest.approx(np.exp(np.log(garden).mean()))
    assert shoppers.unit_price("I00001") == pytest.approx(shoppers.catalogue[c.UNIT_PRICE][0])
    assert shoppers.unit_price("nope") is None
    with pytest.raises(KeyError, match="unknown shopper"):
        shoppers.home_country("U99999")


def test_taste_before_any_drift_is_the_base_taste(shoppers, latent):
    taste = shoppers.taste_at(list(shoppers.user_ids), BEFORE_SHIFT)
    np.testing.assert_allclose(taste, latent.taste)
    np.testing.assert_allclose(taste.sum(axis=1), 1.0)
    assert shoppers.taste_at([], BEFORE_SHIFT).shape == (0, CFG.n_categories)


def test_preference_shift_moves_the_segment_only_and_from_its_start(shoppers, latent):
    drifted = sorted(shoppers.drifted_users())
    control = sorted(set(shoppers.user_ids) - set(drifted))
    garden = np.eye(CFG.n_categories)[shoppers.categories.index("Garden")]
    u, v = drifted[0], control[0]
    iu, iv = shoppers.user_ids.index(u), shoppers.user_ids.index(v)

    after = shoppers.taste_at([u, v], AFTER_SHIFT)
    np.testing.assert_allclose(after[0], 0.2 * latent.taste[iu] + 0.8 * garden)
    np.testing.assert_allclose(after[1], latent.taste[iv])
    just_before = datetime(2024, 1, 19, 23, 59, 59, tzinfo=UTC)
    np.testing.assert_allclose(shoppers.taste_at([u], just_before)[0], latent.taste[iu])
    # 01:00 at UTC+2 is 23:00 UTC the day before: still before the shift; naive means UTC
    local = datetime(2024, 1, 20, 1, tzinfo=timezone(timedelta(hours=2)))
    np.testing.assert_allclose(shoppers.taste_at([u], local)[0], latent.taste[iu])
    naive = shoppers.taste_at([u], AFTER_SHIFT.replace(tzinfo=None))
    np.testing.assert_allclose(naive[0], after[0])


def test_a_ramped_shift_is_half_way_after_half_its_ramp():
    shift = PreferenceShift(
        target_categories=("Garden", "Toys"), start=date(2024, 1, 10), strength=0.6, ramp_days=4
    )
    config = SyntheticConfig(n_users=50, n_items=40, days=20, preference_shifts=(shift,))
    shoppers, latent = Shoppers(config), LatentUsers(config)
    user = sorted(shoppers.drifted_users())[0]
    i = shoppers.user_ids.index(user)
    target = np.zeros(config.n_categories)
    target[[shoppers.categories.index("Garden"), shoppers.categories.index("Toys")]] = 0.5
    taste = shoppers.taste_at([user], datetime(2024, 1, 12, tzinfo=UTC))[0]
    np.testing.assert_allclose(taste, 0.7 * latent.taste[i] + 0.3 * target)


def test_seasonal_boost_multiplies_its_category_inside_its_window(shoppers, latent):
    user = sorted(set(shoppers.user_ids) - shoppers.drifted_users())[0]
    i = shoppers.user_ids.index(user)
    k = shoppers.categories.index("Christmas")
    inside = shoppers.taste_at([user], IN_BOOST)[0]
    assert inside[k] == pytest.approx(3.0 * latent.taste[i, k])
    np.testing.assert_allclose(np.delete(inside, k), np.delete(latent.taste[i], k))
    at_end = shoppers.taste_at([user], datetime(2024, 2, 1, tzinfo=UTC))[0]  # end is exclusive
    assert at_end[k] == pytest.approx(latent.taste[i, k])


def test_drifted_users_are_the_union_of_the_segments():
    other = PreferenceShift(
        target_categories=("Toys",), start=date(2024, 1, 5), user_fraction=0.1, country="Germany"
    )
    config = SyntheticConfig(n_users=300, n_items=240, days=40, preference_shifts=(SHIFT, other))
    expected = user_segment(config, SHIFT) | user_segment(config, other)
    assert Shoppers(config).drifted_users() == expected
    assert len(user_segment(config, SHIFT)) == 120
    assert Shoppers(SyntheticConfig(n_users=20, n_items=20, days=5)).drifted_users() == set()


def test_active_sample_is_distinct_seeded_and_favours_active_users(shoppers):
    day = date(2024, 1, 3)
    first = shoppers.active_sample(day, 30, np.random.default_rng(7))
    assert first == shoppers.active_sample(day, 30, np.random.default_rng(7))
    assert len(first) == len(set(first)) == 30
    assert set(first) <= set(shoppers.user_ids)
    assert shoppers.active_sample(day, 0, np.random.default_rng(7)) == []
    everyone = shoppers.active_sample(day, 10_000, np.random.default_rng(7))
    assert sorted(everyone) == sorted(shoppers.user_ids)
    with pytest.raises(ValueError, match="negative"):
        shoppers.active_sample(day, -1, np.random.default_rng(7))
    # the most active tenth of the users is drawn far more often than the least active tenth
    activity = shoppers.users.set_index(c.USER_ID)["activity"]
    top = set(activity.nlargest(30).index)
    bottom = set(activity.nsmallest(30).index)
    rng = np.random.default_rng(0)
    counts = {"top": 0, "bottom": 0}
    for _ in range(200):
        sample = set(shoppers.active_sample(day, 20, rng))
        counts["top"] += len(sample & top)
        counts["bottom"] += len(sample & bottom)
    assert counts["top"] > 5 * max(counts["bottom"], 1)


# --- The click model ------------------------------------------------------------------------


def test_examine_decays_with_position():
    assert examine(1) == pytest.approx(1.0)
    assert examine(3) == pytest.approx(0.5)
    np.testing.assert_allclose(examine(np.array([1, 7])), [1.0, 1 / 3])


def test_empty_list_gives_no_reaction_and_draws_nothing(shoppers):
    rng = np.random.default_rng(3)
    assert respond(shoppers, "U00001", [], BEFORE_SHIFT, rng, request_id="r") == []
    assert rng.random() == np.random.default_rng(3).random()
    assert shoppers.order_probability("U00001", [], BEFORE_SHIFT) == 0.0


def test_every_item_gets_an_impression_and_unknown_ones_nothing_more(shoppers):
    items = ["I00001", "NOPE", "I00002", "I00001"]  # an unknown item and a repeat
    for seed in range(200):
        reactions = respond(
            shoppers, "U00002", items, BEFORE_SHIFT, np.random.default_rng(seed), request_id="q"
        )
        shown = [r for r in reactions if r.feedback_type == "impression"]
        assert [(r.item_id, r.position) for r in shown] == [
            (it, p + 1) for p, it in enumerate(items)
        ]
        assert all(r.ts == BEFORE_SHIFT for r in shown)
        assert shown[1].unit_price is None
        assert shown[0].unit_price == pytest.approx(shoppers.unit_price("I00001"))
        assert {r.position for r in reactions if r.feedback_type != "impression"} <= {1, 3}
        assert all(r.request_id == "q" and r.customer_id == "U00002" for r in reactions)
    attraction = shoppers.attraction("U00002", items, BEFORE_SHIFT)
    assert attraction[1] == 0.0
    assert attraction[0] > 0.0


def test_funnel_order_ids_values_and_timestamps_are_consistent(shoppers):
    user = "U00003"
    items = _items_of(shoppers, list(shoppers.categories))
    behaviour = ShopperBehaviour(max_click=1.0, cart_rate=0.8, purchase_rate=0.8)
    orders = 0
    for seed in range(300):
        request_id = f"{seed:032x}"
        reactions = respond(
            shoppers,
            user,
            items,
            BEFORE_SHIFT,
            np.random.default_rng(seed),
            request_id=request_id,
            behaviour=behaviour,
        )
        assert [r.ts for r in reactions] == sorted(r.ts for r in reactions)
        assert all(r.ts.tzinfo is UTC for r in reactions)
        by_type = {kind: {} for kind in ("impression", "click", "add_to_cart", "purchase")}
        for r in reactions:
            assert r.position not in by_type[r.feedback_type]  # once per type and position
            by_type[r.feedback_type][r.position] = r
        for click in by_type["click"].values():
            assert click.ts >= BEFORE_SHIFT + timedelta(seconds=3)
        for p, cart in by_type["add_to_cart"].items():
            assert cart.ts > by_type["click"][p].ts
            assert 1 <= cart.quantity <= 6
        purchases = list(by_type["purchase"].values())
        if purchases:
            orders += 1
            assert {r.order_id for r in purchases} == {order_id_for(request_id)}
            assert order_id_for(request_id).startswith("R") and len(order_id_for(request_id)) == 11
            value = sum(r.quantity * r.unit_price for r in purchases)
            assert all(r.order_value == pytest.approx(value) for r in purchases)
            for r in purchases:
                cart = by_type["add_to_cart"][r.position]
                assert r.ts > cart.ts and r.quantity == cart.quantity
                assert r.unit_price == pytest.approx(shoppers.unit_price(r.item_id))
            assert len({r.ts for r in purchases}) == 1  # one checkout
        else:
            assert all(r.order_id is None for r in reactions)
    assert 30 < orders < 300  # both branches were exercised


def test_respond_is_deterministic_given_the_rng(shoppers):
    items = _items_of(shoppers, list(shoppers.categories))
    runs = [
        respond(shoppers, "U00004", items, AFTER_SHIFT, np.random.default_rng(s), request_id="x")
        for s in (11, 11, 12)
    ]
    assert runs[0] == runs[1]
    behaviour = ShopperBehaviour(max_click=1.0, cart_rate=1.0, purchase_rate=1.0)
    a, b = (
        respond(
            shoppers,
            "U00004",
            items,
            AFTER_SHIFT,
            np.random.default_rng(s),
            request_id="x",
            behaviour=behaviour,
        )
        for s in (11, 12)
    )
    assert a != b


def test_a_sure_purchase_is_hand_checked(shoppers, latent):
    """Cheapest item of the favourite category at the top, every knob at 1: always one order."""
    user = "U00001"
    favourite = shoppers.categories[int(np.argmax(latent.taste[0]))]
    item = _items_of(shoppers, [favourite], n=1)[0]  # cheapest: price factor >= 1
    sure = ShopperBehaviour(max_click=1.0, cart_rate=1.0, purchase_rate=1.0)
    assert shoppers.attraction(user, [item], BEFORE_SHIFT, sure)[0] == pytest.approx(1.0)
    assert shoppers.order_probability(user, [item], BEFORE_SHIFT, sure) == pytest.approx(1.0)
    reactions = respond(
        shoppers,
        user,
        [item],
        BEFORE_SHIFT,
        np.random.default_rng(0),
        request_id="abc",
        behaviour=sure,
    )
    assert [r.feedback_type for r in reactions] == [
        "impression",
        "click",
        "add_to_cart",
        "purchase",
    ]
    purchase = reactions[-1]
    price = shoppers.unit_price(item)
    assert purchase.order_value == pytest.approx(round(purchase.quantity * price, 2))
    assert purchase.order_id == order_id_for("abc")
    never = ShopperBehaviour(max_click=0.0)
    quiet = respond(
        shoppers,
        user,
        [item],
        BEFORE_SHIFT,
        np.random.default_rng(0),
        request_id="abc",
        behaviour=never,
    )
    assert [r.feedback_type for r in quiet] == ["impression"]


def test_items_before_their_launch_cannot_be_clicked():
    new = NewItems(category="Toys", launch="2024-01-10", n_items=3)
    config = SyntheticConfig(n_users=30, n_items=40, days=20, new_items=(new,))
    shoppers = Shoppers(config)
    new_ids = list(shoppers.catalogue[c.ITEM_ID].iloc[-3:])
    before = datetime(2024, 1, 9, 23, tzinfo=UTC)
    after = datetime(2024, 1, 10, 1, tzinfo=UTC)
    toy_fan = shoppers.user_ids[int(np.argmax(LatentUsers(config).taste[:, 3]))]
    assert np.all(shoppers.attraction(toy_fan, new_ids, before) == 0.0)
    assert np.all(shoppers.attraction(toy_fan, new_ids, after) > 0.0)


def test_a_list_too_long_for_the_service_is_refused(shoppers):
    with pytest.raises(ValueError, match="at most"):
        respond(
            shoppers,
            "U00001",
            ["I00001"] * (c.MAX_K + 1),
            BEFORE_SHIFT,
            np.random.default_rng(0),
            request_id="r",
        )


def test_behaviour_knobs_are_checked():
    with pytest.raises(ValueError, match="max_click"):
        ShopperBehaviour(max_click=1.5)
    with pytest.raises(ValueError, match="price_factor_bounds"):
        ShopperBehaviour(price_factor_bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="quantity_p"):
        ShopperBehaviour(quantity_p=0.0)


def test_favourite_category_converts_far_better_than_categories_without_taste(shoppers, latent):
    control = set(shoppers.user_ids) - shoppers.drifted_users()
    fans = [
        i
        for i, u in enumerate(shoppers.user_ids)
        if u in control and latent.taste[i].max() > 0.6 and (latent.taste[i] < 0.01).sum() >= 2
    ]
    assert fans, "the fixture has users with concentrated tastes"
    i = fans[0]
    user = shoppers.user_ids[i]
    favourite = shoppers.categories[int(np.argmax(latent.taste[i]))]
    cold = [shoppers.categories[k] for k in np.flatnonzero(latent.taste[i] < 0.01)]
    hot_list, cold_list = _items_of(shoppers, [favourite]), _items_of(shoppers, cold)

    hot = _order_rate(shoppers, user, hot_list, BEFORE_SHIFT)
    chilly = _order_rate(shoppers, user, cold_list, BEFORE_SHIFT)
    assert hot > 0.15
    assert hot >= 3 * max(chilly, 1 / DRAWS)
    # the simulation agrees with the exact probability of an order
    exact = shoppers.order_probability(user, hot_list, BEFORE_SHIFT)
    assert hot == pytest.approx(exact, abs=0.04)
    assert exact >= 10 * shoppers.order_probability(user, cold_list, BEFORE_SHIFT)
    # clicks too: the favourite list is clicked far more often
    assert (
        shoppers.attraction(user, hot_list, BEFORE_SHIFT).mean()
        > 10 * shoppers.attraction(user, cold_list, BEFORE_SHIFT).mean()
    )


def test_after_the_shift_a_drifted_user_wants_the_target_not_the_old_favourite(shoppers, latent):
    garden = shoppers.categories.index("Garden")
    candidates = [
        i
        for i, u in enumerate(shoppers.user_ids)
        if u in shoppers.drifted_users()
        and latent.taste[i, garden] < 0.05
        and latent.taste[i].max() > 0.4
    ]
    assert candidates
    i = candidates[0]
    user = shoppers.user_ids[i]
    favourite = shoppers.categories[int(np.argmax(latent.taste[i]))]
    target_list, old_list = _items_of(shoppers, ["Garden"]), _items_of(shoppers, [favourite])

    target_before = _order_rate(shoppers, user, target_list, BEFORE_SHIFT)
    target_after = _order_rate(shoppers, user, target_list, AFTER_SHIFT)
    old_before = _order_rate(shoppers, user, old_list, BEFORE_SHIFT)
    old_after = _order_rate(shoppers, user, old_list, AFTER_SHIFT)
    assert target_after > 3 * max(target_before, 1 / DRAWS)
    assert old_after < 0.6 * old_before
    # a control user's response does not move (no boost on these categories)
    control = sorted(set(shoppers.user_ids) - shoppers.drifted_users())[0]
    for items in (target_list, old_list):
        assert shoppers.order_probability(control, items, AFTER_SHIFT) == pytest.approx(
            shoppers.order_probability(control, items, BEFORE_SHIFT)
        )


def test_a_seasonal_boost_raises_the_boosted_category(shoppers, latent):
    k = shoppers.categories.index("Christmas")
    control = set(shoppers.user_ids) - shoppers.drifted_users()
    affinity = latent.taste[:, k] / latent.taste.max(axis=1)
    user = next(
        u for i, u in enumerate(shoppers.user_ids) if u in control and 0.05 < affinity[i] < 0.3
    )
    items = _items_of(shoppers, ["Christmas"])
    inside = shoppers.order_probability(user, items, IN_BOOST)
    outside = shoppers.order_probability(user, items, AFTER_SHIFT)
    assert inside > 2 * outside


# --- Feedback payloads ----------------------------------------------------------------------


def _sample_reactions(shoppers: Shoppers) -> list[Reaction]:
    sure = ShopperBehaviour(max_click=1.0, cart_rate=1.0, purchase_rate=1.0)
    items = [*_items_of(shoppers, list(shoppers.categories)), "UNKNOWN"]
    return respond(
        shoppers,
        "U00001",
        items,
        BEFORE_SHIFT,
        np.random.default_rng(1),
        request_id="0123456789abcdef0123456789abcdef",
        behaviour=sure,
    )


def test_feedback_payload_matches_the_service_model(shoppers):
    reactions = _sample_reactions(shoppers)
    payload = to_feedback_payload(reactions)
    assert len(payload) == len(reactions)
    assert {e["type"] for e in payload} == {"impression", "click", "add_to_cart", "purchase"}
    impression = payload[0]
    assert impression == {
        "request_id": "0123456789abcdef0123456789abcdef",
        "customer_id": "U00001",
        "item_id": reactions[0].item_id,
        "type": "impression",
        "timestamp": "2024-01-12T12:00:00.000+00:00",
        "quantity": 1,
        "unit_price": reactions[0].unit_price,
        "position": 1,
    }  # None fields (order id, order value) left out
    unknown = [e for e in payload if e["item_id"] == "UNKNOWN"]
    assert len(unknown) == 1 and "unit_price" not in unknown[0]
    purchase = next(e for e in payload if e["type"] == "purchase")
    assert purchase["order_id"] == order_id_for("0123456789abcdef0123456789abcdef")
    assert purchase["order_value"] > 0
    json.dumps(payload, allow_nan=False)  # plain JSON
    for event in payload:  # the feedback log accepts each one
        record = {**event, "feedback_type": event["type"], "ts": event["timestamp"]}
        del record["type"], record["timestamp"]
        FeedbackEvent.from_record(record)

    from bentos.recommender.schemas import FeedbackRequest  # the service's request schema

    body = FeedbackRequest.model_validate_json(json.dumps({"events": payload}))  # as served
    assert len(body.events) == len(payload)


def test_feedback_bodies_respect_the_service_limit(shoppers):
    reactions = _sample_reactions(shoppers) * 100
    bodies = feedback_bodies(reactions, max_events=1_000)
    assert [len(b["events"]) for b in bodies] == [1_000] * (len(reactions) // 1_000) + (
        [len(reactions) % 1_000] if len(reactions) % 1_000 else []
    )
    assert feedback_bodies([]) == []
    with pytest.raises(ValueError):
        feedback_bodies(reactions, max_events=0)


def test_reactions_frame_is_typed(shoppers):
    frame = reactions_frame(_sample_reactions(shoppers))
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert frame["position"].dtype == "int64"
    assert frame["order_value"].isna().sum() == (frame["feedback_type"] != "purchase").sum()
    assert reactions_frame([]).empty


# --- Organic events -------------------------------------------------------------------------


def test_organic_events_are_the_days_of_the_generated_frame():
    config = SyntheticConfig(n_users=80, n_items=60, days=6)
    days = [organic_events(config, config.start + timedelta(days=d)) for d in range(config.days)]
    pd.testing.assert_frame_equal(
        pd.concat(days, ignore_index=True), generate_events(config).reset_index(drop=True)
    )
    day = days[2]
    assert not day.empty
    assert (day[c.EVENT_TS].dt.date == date(2024, 1, 3)).all()
    outside = organic_events(config, date(2023, 12, 31))
    assert outside.empty and list(outside.columns) == list(day.columns)
    assert organic_events(config, config.end).empty
    # a copy: changing it leaves the cache alone
    day.loc[:, c.QUANTITY] = -1
    assert (organic_events(config, date(2024, 1, 3))[c.QUANTITY] > 0).all()


def test_a_never_active_user_still_reacts():
    config = SyntheticConfig(n_users=80, n_items=60, days=3, sessions_per_user_per_week=0.5)
    seen = set(generate_events(config)[c.USER_ID])
    shoppers = Shoppers(config)
    quiet = next(u for u in shoppers.user_ids if u not in seen)
    reactions = respond(
        shoppers,
        quiet,
        ["I00001", "I00002"],
        datetime(2024, 1, 2, tzinfo=UTC),
        np.random.default_rng(0),
        request_id="r",
    )
    assert [r.feedback_type for r in reactions[:2]] == ["impression", "impression"]


# --- Daily metrics --------------------------------------------------------------------------

D1, D2, D3 = date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)


def _lists() -> pd.DataFrame:
    rows = [
        (D1, "r1", "U1", "v1", False),
        (D1, "r2", "U2", "v1", False),
        (D1, "r3", "U3", "v2", True),
        (D2, "r4", "U1", "v2", False),
        (D2, "r5", "U1", "v2", False),
        (D3, "r6", "U2", "vb", False),
        (D3, "r7", "U3", "va", False),
    ]
    return pd.DataFrame(
        rows, columns=["day", "request_id", "customer_id", "model_version", "fallback"]
    )


def _reactions() -> pd.DataFrame:
    def line(rid, kind, item, qty=1, price=None, order=None):
        return {
            "request_id": rid,
            "feedback_type": kind,
            "item_id": item,
            "quantity": qty,
            "unit_price": price,
            "order_id": order,
        }

    rows = [line("r1", "impression", i) for i in ("I1", "I2", "I3")]
    rows += [line("r1", "click", "I1"), line("r1", "add_to_cart", "I1", 2)]
    rows += [line("r1", "click", "I2"), line("r1", "add_to_cart", "I2", 1)]
    rows += [
        line("r1", "purchase", "I1", 2, 5.0, "O1"),
        line("r1", "purchase", "I2", 1, 10.0, "O1"),
    ]
    rows += [line("r2", "impression", i) for i in ("I1", "I2")] + [line("r2", "click", "I1")]
    rows += [line("r3", "impression", i) for i in ("I1", "I2")]
    rows += [line("r4", "impression", i) for i in ("I4", "I5")] + [line("r4", "click", "I4")]
    rows += [line("r4", "purchase", "I4", 3, 4.0, "O4")]
    rows += [line("r5", "impression", i) for i in ("I4", "I5")]
    rows += [line("rX", "purchase", "I9", 9, 99.0, "OX")]  # no such list: ignored
    return pd.DataFrame(rows)


def _row(metrics: pd.DataFrame, day: date, group: str) -> pd.Series:
    found = metrics[(metrics["day"] == day) & (metrics["group"] == group)]
    assert len(found) == 1
    return found.iloc[0]


def test_daily_metrics_hand_checked():
    m = daily_metrics(_lists(), _reactions(), drifted={"U1"})
    assert list(m.columns) == list(METRIC_COLUMNS)
    assert len(m) == 9 and list(m["group"][:3]) == list(GROUPS)

    d = _row(m, D1, "drifted")
    assert (d.lists, d.shoppers, d.impressions, d.clicks, d.orders) == (1, 1, 3, 2, 1)
    assert d.ctr == pytest.approx(2 / 3)
    assert (d.conversion, d.revenue, d.aov, d.revenue_per_list) == pytest.approx((1, 20, 20, 20))
    assert d.fallback_share == pytest.approx(0.0)

    o = _row(m, D1, "others")
    assert (o.lists, o.shoppers, o.impressions, o.clicks, o.orders) == (2, 2, 4, 1, 0)
    assert (o.ctr, o.conversion, o.revenue, o.revenue_per_list) == pytest.approx((0.25, 0, 0, 0))
    assert math.isnan(o.aov)
    assert o.fallback_share == pytest.approx(0.5)

    a = _row(m, D1, "all")
    assert (a.lists, a.shoppers, a.orders) == (3, 3, 1)
    assert (a.ctr, a.conversion, a.aov) == pytest.approx((3 / 7, 1 / 3, 20))
    assert a.revenue_per_list == pytest.approx(20 / 3)
    assert a.fallback_share == pytest.approx(1 / 3)
    assert set(m.loc[m["day"] == D1, "model_version"]) == {"v1"}  # 2 lists of v1, 1 of v2

    d2 = _row(m, D2, "drifted")
    assert (d2.lists, d2.shoppers, d2.orders) == (2, 1, 1)
    assert (d2.ctr, d2.conversion, d2.revenue, d2.aov, d2.revenue_per_list) == pytest.approx(
        (0.25, 0.5, 12, 12, 6)
    )
    empty = _row(m, D2, "others")  # nobody of the group shopped: a row all the same
    assert (empty.lists, empty.shoppers, empty.orders, empty.revenue) == (0, 0, 0, 0.0)
    assert all(math.isnan(empty[k]) for k in ("ctr", "conversion", "aov", "revenue_per_list"))
    assert _row(m, D2, "all").model_version == "v2"
    assert _row(m, D3, "all").model_version == "va"  # a tie goes to the first by name
    assert _row(m, D3, "all").ctr != _row(m, D3, "all").ctr  # no impressions: NaN


def test_daily_metrics_edge_cases():
    assert daily_metrics(_lists().iloc[:0], _reactions(), {"U1"}).empty
    assert list(daily_metrics(_lists().iloc[:0], _reactions(), set()).columns) == list(
        METRIC_COLUMNS
    )
    quiet = daily_metrics(_lists(), _reactions().iloc[:0], {"U1"})
    assert (quiet["orders"] == 0).all() and (quiet["revenue"] == 0).all()
    assert quiet.loc[quiet["lists"] > 0, "conversion"].eq(0).all()
    # the service's field name "type" is accepted too
    renamed = _reactions().rename(columns={"feedback_type": "type"})
    pd.testing.assert_frame_equal(
        daily_metrics(_lists(), renamed, {"U1"}), daily_metrics(_lists(), _reactions(), {"U1"})
    )


def test_daily_metrics_on_simulated_reactions(shoppers):
    sure = ShopperBehaviour(max_click=1.0, cart_rate=1.0, purchase_rate=1.0)
    items = _items_of(shoppers, list(shoppers.categories))
    users = shoppers.active_sample(D1, 5, np.random.default_rng(0))
    lists, reactions = [], []
    for n, user in enumerate(users):
        rid = f"req{n}"
        lists.append({"day": D1, "request_id": rid, "customer_id": user, "model_version": "v"})
        lists[-1]["fallback"] = False
        reactions += respond(
            shoppers,
            user,
            items,
            BEFORE_SHIFT,
            np.random.default_rng(n),
            request_id=rid,
            behaviour=sure,
        )
    frame = reactions_frame(reactions)
    m = daily_metrics(pd.DataFrame(lists), frame, shoppers.drifted_users())
    total = _row(m, D1, "all")
    buys = frame[frame["feedback_type"] == "purchase"]
    assert total.lists == 5 and total.impressions == 50
    assert total.orders == buys["order_id"].nunique()
    assert total.revenue == pytest.approx((buys["quantity"] * buys["unit_price"]).sum())
    assert total.revenue == pytest.approx(buys.drop_duplicates("order_id")["order_value"].sum())


# --- Report ---------------------------------------------------------------------------------

TIMELINE = [
    {"day": D1, "wall_ts": "2024-05-01T10:00:00+00:00", "event": "drift_injected", "detail": "x"},
    {"day": D2, "wall_ts": "2024-05-01T10:01:00+00:00", "event": "drift_detected", "detail": "<p"},
    {"day": D2, "wall_ts": "2024-05-01T10:02:00+00:00", "event": "retraining_triggered"},
    {"day": D3, "wall_ts": "2024-05-01T10:09:00+00:00", "event": "new_model_serving"},
    {"day": D3, "wall_ts": "2024-05-01T10:09:30+00:00", "event": "checkpoint", "detail": "ok"},
]


def test_write_report_writes_html_and_json(tmp_path):
    metrics = daily_metrics(_lists(), _reactions(), drifted={"U1"})
    path = write_report(
        metrics, TIMELINE, tmp_path / "out" / "sim.html", title="Drift & recovery", drift_day=D1
    )
    assert path == tmp_path / "out" / "sim.html" and path.exists()
    page = path.read_text()
    assert "Drift &amp; recovery" in page
    for name in (*GROUPS, *(entry["event"] for entry in TIMELINE)):
        assert name in page
    assert "&lt;p" in page  # details are escaped
    assert "<script src=" not in page and "Plotly" in page  # plotly.js inlined
    assert "drift detected" in page and "new model serving" in page  # marker labels

    document = json.loads(path.with_suffix(".json").read_text())
    assert document["title"] == "Drift & recovery" and document["drift_day"] == "2024-01-01"
    assert len(document["metrics"]) == len(metrics)
    assert document["metrics"][1]["aov"] is None  # NaN -> null
    assert [e["event"] for e in document["timeline"]] == [e["event"] for e in TIMELINE]
    again = write_json(metrics, [], tmp_path / "f.json", title="t")
    assert json.loads(again.read_text())["timeline"] == []


def test_report_markers_follow_the_events_of_note():
    markers = _markers(TIMELINE, D1, ("drift_injected", "drift_detected", "new_model_serving"))
    assert markers == [
        ("2024-01-01", "drift injected"),  # drift_day and the timeline's entry: one marker
        ("2024-01-02", "drift detected"),
        ("2024-01-03", "new model serving"),
    ]
    assert len(_markers(TIMELINE, None, None)) == len(TIMELINE)


def test_write_report_copes_with_empty_metrics(tmp_path):
    empty = daily_metrics(_lists().iloc[:0], _reactions(), set())
    path = write_report(empty, [], tmp_path / "empty.html", title="nothing yet")
    assert "nothing yet" in path.read_text()
