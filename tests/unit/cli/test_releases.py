"""``python -m recsys_assets canary promote``: how a release manager promotes a canary that
awaits approval (prod), through the policy, and who may not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys_assets.access.control import CONTROL_KEYS_VAR, OPERATOR_KEY_VAR, control_audit_path
from recsys_assets.cli import main
from recsys_assets.monitoring import loop
from recsys_assets.release.canary.routing import CanaryState, read_canary_state, write_canary_state
from tests.secret_scan import SECRETS

MANAGER_KEY = SECRETS["control_release_manager"]
SRE_KEY = SECRETS["control_sre"]
TAG = "recsys-ranker:v2"


@pytest.fixture
def prod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Prod's canary (v2 at share 0.5) in scratch files; the registry and the release ledger
    are recorders (BentoML fixes its store once per process)."""
    paths = {"state": tmp_path / "canary.json", "loop": tmp_path / "loop" / "events.jsonl"}
    write_canary_state(paths["state"], CanaryState(TAG, 0.5, TAG, generation=3))
    for name, value in {
        "RECSYS_ENV": "prod", "RECSYS_CANARY_STATE": str(paths["state"]),
        "RECSYS_LOOP_LOG": str(paths["loop"]), "BENTOML_HOME": str(tmp_path / "bentoml"),
        CONTROL_KEYS_VAR: f"{MANAGER_KEY}:alice:release_manager;{SRE_KEY}:bob:sre",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    calls: dict[str, list] = {"stages": [], "releases": []}
    monkeypatch.setattr(
        "recsys_assets.serving.registry.set_stage",
        lambda tag, stage, **labels: calls["stages"].append((tag, stage)),
    )

    def ledger(tag, environment, *, released_by, reason):
        calls["releases"].append((tag, environment, released_by.id, reason))
        return {"release_id": "prod-v2-abc", "bento_tag": None}

    monkeypatch.setattr("recsys_assets.release.ledger.release_canary_winner", ledger)
    return {**paths, **calls, "monkeypatch": monkeypatch}


def promote(prod: dict, key: str | None) -> int:
    if key is None:
        prod["monkeypatch"].delenv(OPERATOR_KEY_VAR, raising=False)
    else:
        prod["monkeypatch"].setenv(OPERATOR_KEY_VAR, key)
    return main(["canary", "promote", "--reason", "CAB-123"])


def test_a_release_manager_promotes_the_canary_in_prod(prod, capsys):
    assert promote(prod, MANAGER_KEY) == 0
    out = capsys.readouterr().out
    assert f"promoted {TAG}: share 0.5 -> 1, by alice" in out and "prod-v2-abc" in out
    state = read_canary_state(prod["state"])
    assert (state.share, state.updated_by, state.generation) == (1.0, "alice", 4)
    assert prod["stages"] == [(TAG, "promoted")]
    assert prod["releases"] == [(TAG, "prod", "alice", "CAB-123")]
    [event] = loop.LoopLog(prod["loop"]).read([loop.CANARY_PROMOTED])
    assert event["by"] == "alice" and event["reasons"] == ["CAB-123"]
    [line] = [json.loads(x) for x in control_audit_path(prod["loop"]).read_text().splitlines()]
    assert (line["subject"], line["action"], line["effect"]) == ("alice", "promote", "allow")
    assert MANAGER_KEY not in out
    assert promote(prod, MANAGER_KEY) == 0  # promoted already: nothing to do again
    assert "already has share 1" in capsys.readouterr().out and len(prod["stages"]) == 1


@pytest.mark.parametrize("key", [SRE_KEY, None])
def test_anyone_else_is_denied_and_nothing_changes(prod, capsys, key):
    before = prod["state"].read_text()
    assert promote(prod, key) == 3
    err = capsys.readouterr().err
    assert "may not promote in prod" in err
    assert prod["state"].read_text() == before
    assert prod["stages"] == prod["releases"] == [] and not prod["loop"].exists()


def test_without_a_canary_there_is_nothing_to_promote(prod, capsys):
    write_canary_state(prod["state"], CanaryState(None, 0.0, TAG, generation=4))
    assert promote(prod, MANAGER_KEY) == 2
    assert "no canary is running" in capsys.readouterr().err
