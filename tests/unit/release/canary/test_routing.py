"""Canary routing: sticky assignment, share boundaries and accuracy, salts, configuration."""

from __future__ import annotations

import json
import math
import os

import pytest

from recsys_assets.release.canary import routing as canary
from recsys_assets.release.canary.routing import (
    CANARY_SALT_VAR,
    CANARY_SHARE_VAR,
    CHALLENGER_TAG_VAR,
    DEFAULT_SHARE,
    VARIANT_CHALLENGER,
    VARIANT_CHAMPION,
    CanaryConfig,
    CanaryState,
    assign_variant,
    bucket,
    current_config,
    read_canary_state,
    write_canary_state,
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


# --- The canary state file -------------------------------------------------------------------

STATE = CanaryState(challenger_tag="recsys-ranker:v2", share=0.25, salt="exp-7", generation=3,
                    updated_at="2024-03-01T10:00:00+00:00", updated_by="canary-analyser",
                    reason="widen: clean")  # fmt: skip


def test_state_round_trip(tmp_path):
    path = tmp_path / "loop" / "canary.json"  # the folder is made
    assert read_canary_state(path) is None  # no file: the environment bootstraps
    write_canary_state(path, STATE)
    assert read_canary_state(path) == STATE
    assert STATE.config() == CanaryConfig("recsys-ranker:v2", 0.25, "exp-7")
    assert json.loads(path.read_text())["generation"] == 3
    assert os.stat(path).st_mode & 0o777 == 0o644  # readable by a service running as another user


def test_state_write_is_atomic_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "canary.json"
    write_canary_state(path, STATE)
    inode = os.stat(path).st_ino
    newer = STATE.changed(challenger_tag=None, share=0.0, updated_by="me", reason="rollback")
    write_canary_state(path, newer)
    assert os.stat(path).st_ino != inode  # renamed over the old file, not rewritten in place
    assert read_canary_state(path) == newer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary.json"]

    def crash(source, target):
        raise OSError("disk gone")

    monkeypatch.setattr(canary.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_canary_state(path, STATE)
    assert read_canary_state(path) == newer  # the old document, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary.json"]


def test_state_generation_counts_changes_and_keeps_the_salt():
    rolled = STATE.changed(challenger_tag=None, share=0.0, updated_by="canary-analyser",
                           reason="rollback: p99")  # fmt: skip
    assert rolled.generation == STATE.generation + 1 and rolled.salt == STATE.salt
    assert rolled.updated_at > STATE.updated_at and rolled.reason == "rollback: p99"
    assert not rolled.config().enabled
    boot = CanaryState.bootstrap(CanaryConfig("recsys-ranker:v2", 0.1, "recsys-ranker:v2"))
    assert boot.generation == 0 and boot.updated_by == "environment"


def test_the_state_records_when_the_experiment_started(tmp_path):
    started = STATE.started_at or "2024-03-01T09:00:00.000+00:00"
    state = CanaryState("recsys-ranker:v2", 0.1, "exp-7", 1, started_at=started)
    widened = state.changed(challenger_tag="recsys-ranker:v2", share=0.25, updated_by="a",
                            reason="widen")  # fmt: skip
    assert widened.started_at == started  # the same experiment, wider
    rolled = widened.changed(challenger_tag=None, share=0.0, updated_by="a", reason="rollback")
    assert rolled.started_at == ""  # no experiment any more
    path = tmp_path / "canary.json"
    write_canary_state(path, widened)
    assert read_canary_state(path).started_at == started
    older = {k: v for k, v in STATE.as_json().items() if k != "started_at"}  # before the field
    path.write_text(json.dumps(older))
    assert read_canary_state(path).started_at == ""
    with pytest.raises(ValueError, match="started_at"):
        CanaryState("recsys-ranker:v2", 0.1, "exp-7", 1, started_at=None)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"challenger_tag": null, "share": 0.1, "salt": ""}', "missing field"),
        ('{"challenger_tag": "t", "share": 1.5, "salt": "", "generation": 1}', "share"),
        ('{"challenger_tag": "t", "share": 0.1, "salt": "", "generation": -1}', "generation"),
        ('{"challenger_tag": "", "share": 0.1, "salt": "", "generation": 1}', "challenger_tag"),
        ("", "not valid JSON"),  # a half-written file from some other writer
    ],
)
def test_a_corrupt_state_file_names_the_path_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "canary.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as raised:
        read_canary_state(path)
    assert str(path) in str(raised.value)


def test_the_state_file_overrides_the_environment(tmp_path):
    path = tmp_path / "canary.json"
    environ = {CHALLENGER_TAG_VAR: "recsys-ranker:v9", CANARY_SHARE_VAR: "0.5"}
    config, state = current_config(path, environ)
    assert state is None and config.challenger_tag == "recsys-ranker:v9"  # the bootstrap
    write_canary_state(path, STATE)
    config, state = current_config(path, environ)
    assert state == STATE and config == STATE.config()
