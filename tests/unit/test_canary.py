"""Canary routing: sticky assignment, share boundaries and accuracy, salts, configuration."""

from __future__ import annotations

import math

import pytest

from recsys_assets.lib.canary import (
    CANARY_SALT_VAR,
    CANARY_SHARE_VAR,
    CHALLENGER_TAG_VAR,
    DEFAULT_SHARE,
    VARIANT_CHALLENGER,
    VARIANT_CHAMPION,
    CanaryConfig,
    assign_variant,
    bucket,
)

IDS = [f"customer-{n}" for n in range(20_000)]


def _challengers(ids: list[str], salt: str, share: float) -> set[str]:
    return {
        i for i in ids if assign_variant(i, salt=salt, challenger_share=share) == VARIANT_CHALLENGER
    }


def test_assignment_is_sticky():
    for customer in ["12345", "never-seen", "", "ü-customer", *IDS[:200]]:
        first = assign_variant(customer, salt="exp-1", challenger_share=0.3)
        assert first in (VARIANT_CHAMPION, VARIANT_CHALLENGER)
        again = {assign_variant(customer, salt="exp-1", challenger_share=0.3) for _ in range(5)}
        assert again == {first}


def test_bucket_is_in_the_unit_interval_and_separates_salt_from_id():
    values = [bucket(i, "s") for i in IDS[:1000]]
    assert all(0.0 <= v < 1.0 for v in values)
    assert bucket("c", "ab") != bucket("bc", "a")


@pytest.mark.parametrize(("share", "variant"), [(0.0, VARIANT_CHAMPION), (1.0, VARIANT_CHALLENGER)])
def test_share_boundaries(share, variant):
    assert {assign_variant(i, salt="s", challenger_share=share) for i in IDS[:2000]} == {variant}


@pytest.mark.parametrize("share", [-0.1, 1.5, math.nan])
def test_share_outside_the_unit_interval_is_refused(share):
    with pytest.raises(ValueError, match="challenger_share"):
        assign_variant("1", salt="s", challenger_share=share)


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_realised_share_is_close_to_the_configured_one(share):
    realised = len(_challengers(IDS, "exp-1", share)) / len(IDS)
    assert abs(realised - share) < 0.01


def test_widening_the_share_only_moves_champions_to_the_challenger():
    narrow, wide = _challengers(IDS, "exp-1", 0.1), _challengers(IDS, "exp-1", 0.3)
    assert narrow <= wide


def test_another_salt_reshuffles_the_canary():
    share = 0.5
    first, second = _challengers(IDS, "exp-1", share), _challengers(IDS, "exp-2", share)
    overlap = len(first & second) / len(IDS)
    assert abs(overlap - share**2) < 0.015  # independent: P(both) = share^2 (0.25, sd 0.003)
    assert first != second


def test_config_from_an_empty_environment_has_no_canary():
    config = CanaryConfig.from_env({})
    assert config == CanaryConfig(challenger_tag=None, share=DEFAULT_SHARE, salt="")
    assert not config.enabled and config.effective_share == 0.0
    assert {config.assign(i) for i in IDS[:500]} == {VARIANT_CHAMPION}
    assert not CanaryConfig.from_env({CHALLENGER_TAG_VAR: "  "}).enabled


def test_config_from_env_reads_tag_share_and_salt():
    config = CanaryConfig.from_env(
        {CHALLENGER_TAG_VAR: "recsys-ranker:abc", CANARY_SHARE_VAR: "0.5"}
    )
    assert config.challenger_tag == "recsys-ranker:abc" and config.share == 0.5
    assert config.salt == "recsys-ranker:abc"  # default: each challenger reshuffles
    assert config.enabled and config.effective_share == 0.5
    assert config.assign("42") == assign_variant(
        "42", salt="recsys-ranker:abc", challenger_share=0.5
    )
    salted = CanaryConfig.from_env({CHALLENGER_TAG_VAR: "recsys-ranker:abc", CANARY_SALT_VAR: "x"})
    assert salted.salt == "x" and salted.share == DEFAULT_SHARE


@pytest.mark.parametrize("value", ["ten", "0,5", "nan", "inf", "-0.1", "1.01"])
def test_bad_share_in_the_environment_names_the_variable(value):
    with pytest.raises(ValueError, match=CANARY_SHARE_VAR):
        CanaryConfig.from_env({CHALLENGER_TAG_VAR: "recsys-ranker:abc", CANARY_SHARE_VAR: value})
    with pytest.raises(ValueError, match=CANARY_SHARE_VAR):  # checked without a challenger too
        CanaryConfig.from_env({CANARY_SHARE_VAR: value})


def test_config_checks_its_fields():
    with pytest.raises(ValueError, match="share"):
        CanaryConfig(challenger_tag="t", share=2.0, salt="t")
    with pytest.raises(ValueError, match="challenger_tag"):
        CanaryConfig(challenger_tag="", share=0.1, salt="")
