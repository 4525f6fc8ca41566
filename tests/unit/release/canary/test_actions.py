"""Applying canary decisions: the state file, the registry, the loop log and the policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recsys_assets.access.control import control_audit_path
from recsys_assets.access.policy import DEFAULT_POLICY_PATH
from recsys_assets.monitoring import loop
from recsys_assets.release.canary import analysis as ca
from recsys_assets.release.canary.actions import (
    APPLIED,
    NOTHING,
    REFUSED,
    STALE,
    apply_decision,
    release_winner,
)
from recsys_assets.release.canary.routing import (
    CANARY_SHARE_VAR,
    CHALLENGER_TAG_VAR,
    CanaryState,
    read_canary_state,
    write_canary_state,
)

TAG = "recsys-ranker:v2"
BREACH = "p99 latency: challenger 60.0 ms vs champion 6.0 ms: 10.00x"
AWAITING = "awaiting approval"  # actions.AWAITING: a promotion left to a release manager


def decision(action: str, next_share: float) -> ca.CanaryDecision:
    guardrails = {"p99_latency": {"status": ca.BREACHED}, "conversion": {"status": ca.CLEAN}}
    reasons = [BREACH] if action == ca.ROLLBACK else [f"all clean: {action}"]
    return ca.CanaryDecision(action, next_share, reasons, {}, guardrails)


class Registry:
    """A stand-in for the BentoML registry: records each stage change."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, tag: str, stage: str, **labels: str) -> str:
        self.calls.append((tag, stage, labels))
        return f"{tag} marked {stage}"


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    paths = {"state": tmp_path / "canary.json", "loop": tmp_path / "loop" / "events.jsonl"}
    write_canary_state(paths["state"], CanaryState(TAG, 0.25, "salt-1", generation=4))
    return paths


def apply(paths, made: ca.CanaryDecision, *, share: float = 0.25, tag: str = TAG, **kwargs):
    registry = kwargs.pop("set_stage", None) or Registry()
    applied = apply_decision(
        made,
        challenger_tag=tag,
        decided_share=share,
        state_path=paths["state"],
        environment=kwargs.pop("environment", "test"),
        loop_log=paths["loop"],
        detected_at="2024-03-01T10:00:00.000+00:00",
        set_stage=registry,
        **kwargs,
    )
    return applied, registry


def audit(paths) -> list[dict]:
    text = control_audit_path(paths["loop"]).read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_rollback_removes_the_challenger_marks_the_registry_and_logs(paths):
    applied, registry = apply(paths, decision(ca.ROLLBACK, 0.0))
    assert applied.outcome == APPLIED
    state = read_canary_state(paths["state"])
    assert state.challenger_tag is None and state.share == 0.0
    assert state.generation == 5 and state.salt == "salt-1"
    assert state.updated_by == "canary-analyser" and BREACH in state.reason
    assert registry.calls == [(TAG, "rolled_back", {"rollback_reason": "canary-p99_latency"})]
    [event] = loop.LoopLog(paths["loop"]).read([loop.ROLLED_BACK])
    assert event["challenger_tag"] == TAG and event["model_version"] == "v2"
    assert event["reasons"] == [BREACH]
    assert event["detected_at"] == "2024-03-01T10:00:00.000+00:00"
    [line] = audit(paths)
    assert (line["subject"], line["action"], line["effect"]) == ("canary-analyser", "rollback",
                                                                  "allow")  # fmt: skip
    assert applied.as_metadata()["generation"] == 5


def test_widen_sets_the_next_share(paths):
    applied, registry = apply(paths, decision(ca.WIDEN, 0.5))
    assert applied.outcome == APPLIED and "0.25 -> 0.5" in applied.detail
    state = read_canary_state(paths["state"])
    assert (state.challenger_tag, state.share, state.generation) == (TAG, 0.5, 5)
    assert registry.calls == []
    [event] = loop.LoopLog(paths["loop"]).read([loop.CANARY_WIDENED])
    assert event["from_share"] == 0.25 and event["share"] == 0.5
    assert audit(paths)[0]["action"] == "set_canary_share"


def test_promote_gives_the_challenger_everyone(paths):
    applied, registry = apply(paths, decision(ca.PROMOTE, 1.0))
    assert applied.outcome == APPLIED
    state = read_canary_state(paths["state"])
    assert (state.challenger_tag, state.share) == (TAG, 1.0)
    assert registry.calls == [(TAG, "promoted", {})]
    [event] = loop.LoopLog(paths["loop"]).read([loop.CANARY_PROMOTED])
    assert event["by"] == "canary-analyser"
    [line] = audit(paths)  # the policy's promote was asked, and allowed in test
    assert (line["action"], line["effect"], line["rule_id"]) == (
        "promote", "allow", "allow-canary-promote-below-prod")  # fmt: skip


def test_a_promotion_is_recorded_as_the_environments_release(paths):
    recorded: list[tuple] = []

    def ledger(tag: str, environment: str, reason: str, released_by) -> str:
        recorded.append((tag, environment, reason, released_by.id))
        return "release test-v2 recorded"

    applied, _ = apply(paths, decision(ca.PROMOTE, 1.0), record_release=ledger)
    assert recorded == [(TAG, "test", "promoted by the canary at share 0.25: all clean: promote",
                         "canary-analyser")]  # fmt: skip
    assert applied.release == applied.as_metadata()["release"] == "release test-v2 recorded"
    [event] = loop.LoopLog(paths["loop"]).read([loop.CANARY_PROMOTED])
    assert event["release"] == "release test-v2 recorded"
    rolled, _ = apply(paths, decision(ca.ROLLBACK, 0.0), share=1.0, record_release=ledger)
    assert len(recorded) == 1 and rolled.release is None  # only a promotion releases


def test_a_ledger_that_fails_does_not_undo_the_promotion(paths, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("ledger is read-only")

    monkeypatch.setattr("recsys_assets.release.ledger.release_canary_winner", broken)
    assert release_winner(TAG, "test", "r") == "release not recorded (OSError: ledger is read-only)"
    applied, _ = apply(paths, decision(ca.PROMOTE, 1.0))
    assert applied.outcome == APPLIED and read_canary_state(paths["state"]).share == 1.0
    assert applied.release == "release not recorded (OSError: ledger is read-only)"


def without_rule(tmp_path: Path, rule_id: str) -> Path:
    """The shipped policy without one rule, as a scratch file."""
    policy = yaml.safe_load(Path(DEFAULT_POLICY_PATH).read_text())
    assert rule_id in [r["id"] for r in policy["rules"]]
    policy["rules"] = [r for r in policy["rules"] if r["id"] != rule_id]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def ledger_recorder(recorded: list) -> object:
    def ledger(tag: str, environment: str, reason: str, released_by) -> str:
        recorded.append((tag, environment, released_by.id))
        return f"release {environment}-v2 recorded"

    return ledger


def test_in_prod_a_clean_canary_awaits_a_release_manager(paths):
    before = paths["state"].read_text()
    recorded: list = []
    applied, registry = apply(paths, decision(ca.PROMOTE, 1.0), environment="prod",
                              record_release=ledger_recorder(recorded))  # fmt: skip
    assert applied.outcome == AWAITING
    assert "canary-analyser may not promote in prod" in applied.detail
    assert "python -m recsys_assets canary promote" in applied.detail
    # nothing changed: the share, the registry, the release ledger
    assert paths["state"].read_text() == before and registry.calls == [] and recorded == []
    [line] = audit(paths)
    assert (line["action"], line["effect"], line["rule_id"]) == (
        "promote", "deny", "deny-canary-release-to-prod")  # fmt: skip
    [event] = loop.LoopLog(paths["loop"]).read()
    assert event["kind"] == loop.AWAITING_APPROVAL and event["challenger_tag"] == TAG
    assert (event["share"], event["generation"], event["model_version"]) == (0.25, 4, "v2")
    assert event["reasons"] == ["all clean: promote"]
    assert event["approve_with"] == "python -m recsys_assets canary promote"
    assert applied.event == event
    # the analysis decides the same every run while it waits: one event for the state
    again, _ = apply(paths, decision(ca.PROMOTE, 1.0), environment="prod")
    assert again.outcome == AWAITING
    assert len(loop.LoopLog(paths["loop"]).read()) == 1 and len(audit(paths)) == 2


@pytest.mark.parametrize("environment", ["dev", "test", "acceptance"])
def test_below_prod_the_promotion_is_the_policys_to_allow(paths, tmp_path, environment):
    allowed, _ = apply(paths, decision(ca.PROMOTE, 1.0), environment=environment,
                       record_release=ledger_recorder([]))  # fmt: skip
    assert allowed.outcome == APPLIED and read_canary_state(paths["state"]).share == 1.0
    write_canary_state(paths["state"], CanaryState(TAG, 0.25, "salt-1", generation=6))
    # the same canary where the policy no longer lets the analyser promote: it waits
    denying = without_rule(tmp_path, "allow-canary-promote-below-prod")
    recorded: list = []
    waiting, registry = apply(
        paths, decision(ca.PROMOTE, 1.0), environment=environment, policy_path=denying,
        record_release=ledger_recorder(recorded),
    )  # fmt: skip
    assert waiting.outcome == AWAITING and "deny by default" in waiting.detail
    assert read_canary_state(paths["state"]).share == 0.25
    assert registry.calls == [] and recorded == []
    assert [e["action"] for e in audit(paths)] == ["promote", "promote"]
    assert [e["effect"] for e in audit(paths)] == ["allow", "deny"]


def test_a_release_manager_promotes_the_canary_that_awaits_approval(paths):
    from recsys_assets.access.control import AccessDenied
    from recsys_assets.access.policy import Subject
    from recsys_assets.release.canary.actions import promote_challenger

    apply(paths, decision(ca.PROMOTE, 1.0), environment="prod")  # awaiting approval
    recorded: list = []

    def promote(subject, registry):
        return promote_challenger(
            TAG, subject=subject, reason="CAB-123", state_path=paths["state"],
            environment="prod", loop_log=paths["loop"], set_stage=registry,
            record_release=ledger_recorder(recorded),
        )  # fmt: skip

    before, registry = paths["state"].read_text(), Registry()
    with pytest.raises(AccessDenied, match="bob may not promote in prod"):
        promote(Subject.human("bob", "sre"), registry)
    assert paths["state"].read_text() == before and registry.calls == [] and recorded == []
    applied = promote(Subject.human("alice", "release_manager"), registry)
    assert applied.outcome == APPLIED and "by alice" in applied.detail
    state = read_canary_state(paths["state"])
    assert (state.challenger_tag, state.share, state.updated_by) == (TAG, 1.0, "alice")
    assert (state.generation, state.salt) == (5, "salt-1")
    assert registry.calls == [(TAG, "promoted", {})]
    assert recorded == [(TAG, "prod", "alice")] and applied.release == "release prod-v2 recorded"
    [event] = loop.LoopLog(paths["loop"]).read([loop.CANARY_PROMOTED])
    assert (event["by"], event["reasons"], event["from_share"]) == ("alice", ["CAB-123"], 0.25)
    lines = [(e["subject"], e["action"], e["effect"]) for e in audit(paths)]
    assert lines == [("canary-analyser", "promote", "deny"), ("bob", "promote", "deny"),
                     ("alice", "promote", "allow")]  # fmt: skip
    assert promote(Subject.human("alice", "release_manager"), registry).outcome == NOTHING


def test_wait_changes_nothing(paths):
    before = paths["state"].read_text()
    applied, registry = apply(paths, decision(ca.WAIT, 0.25))
    assert applied.outcome == NOTHING
    assert paths["state"].read_text() == before and registry.calls == []
    assert not paths["loop"].exists() and not control_audit_path(paths["loop"]).exists()


def test_a_policy_deny_changes_nothing_and_is_audited(paths, tmp_path):
    policy = yaml.safe_load(Path(DEFAULT_POLICY_PATH).read_text())
    policy["rules"] = [r for r in policy["rules"] if r["id"] != "allow-canary-analyser"]
    denying = tmp_path / "policy.yaml"
    denying.write_text(yaml.safe_dump(policy))
    before = paths["state"].read_text()
    applied, registry = apply(paths, decision(ca.ROLLBACK, 0.0), policy_path=denying)
    assert applied.outcome == REFUSED
    assert "canary-analyser may not rollback in test" in applied.detail
    assert paths["state"].read_text() == before and registry.calls == []
    assert loop.LoopLog(paths["loop"]).read() == []
    [line] = audit(paths)
    assert line["effect"] == "deny" and line["resource"]["model_version"] == "v2"


def test_applying_twice_or_a_stale_decision_changes_nothing(paths):
    apply(paths, decision(ca.ROLLBACK, 0.0))
    after = paths["state"].read_text()
    again, registry = apply(paths, decision(ca.ROLLBACK, 0.0))  # the same decision again
    assert again.outcome == STALE and "now serves no challenger" in again.detail
    assert paths["state"].read_text() == after and registry.calls == []
    assert len(loop.LoopLog(paths["loop"]).read([loop.ROLLED_BACK])) == 1
    other, _ = apply(paths, decision(ca.WIDEN, 0.5), tag="recsys-ranker:v1")
    assert other.outcome == STALE


def test_a_decision_made_at_another_share_is_stale(paths):
    applied, _ = apply(paths, decision(ca.WIDEN, 0.25), share=0.1)  # widened since
    assert applied.outcome == STALE and read_canary_state(paths["state"]).share == 0.25


def test_without_a_state_file_the_environment_is_the_starting_point(tmp_path):
    paths = {"state": tmp_path / "canary.json", "loop": tmp_path / "events.jsonl"}
    environ = {CHALLENGER_TAG_VAR: TAG, CANARY_SHARE_VAR: "0.1"}
    applied, _ = apply(paths, decision(ca.WIDEN, 0.25), share=0.1, environ=environ)
    assert applied.outcome == APPLIED
    state = read_canary_state(paths["state"])
    assert (state.challenger_tag, state.share, state.salt, state.generation) == (TAG, 0.25, TAG, 1)


def test_promoting_a_promoted_challenger_again_changes_nothing(paths):
    apply(paths, decision(ca.PROMOTE, 1.0))
    after = paths["state"].read_text()
    again, registry = apply(paths, decision(ca.PROMOTE, 1.0), share=1.0)
    assert again.outcome == NOTHING and "already has share 1" in again.detail
    assert paths["state"].read_text() == after and registry.calls == []
    assert len(loop.LoopLog(paths["loop"]).read([loop.CANARY_PROMOTED])) == 1


# --- set_canary: a canary started, reshaped or stopped by hand --------------------------------


def by_hand(paths, *, challenger, share, subject=None, environ=None):
    from recsys_assets.access.policy import Subject
    from recsys_assets.release.canary.actions import set_canary

    return set_canary(
        challenger_tag=challenger, share=share,
        subject=subject or Subject.human("alice", "release_manager"), reason="by hand",
        state_path=paths["state"], environment="prod", loop_log=paths["loop"],
        environ=environ or {},
    )  # fmt: skip


def test_a_new_challenger_is_a_new_experiment_with_its_own_salt(paths):
    state = by_hand(paths, challenger="recsys-ranker:v3", share=0.1)
    assert (state.challenger_tag, state.share, state.salt) == (
        "recsys-ranker:v3",
        0.1,
        "recsys-ranker:v3",
    )
    assert state.generation == 5 and state.updated_by == "alice"
    assert state.started_at == state.updated_at != ""  # the experiment's start
    assert read_canary_state(paths["state"]) == state
    [event] = loop.LoopLog(paths["loop"]).read()
    assert event["kind"] == loop.CANARY_STARTED and event["by"] == "alice"
    [audit] = [json.loads(x) for x in control_audit_path(paths["loop"]).read_text().splitlines()]
    assert (audit["action"], audit["effect"]) == ("set_canary_share", "allow")


def test_reshaping_keeps_the_salt_and_stopping_removes_the_challenger(paths):
    widened = by_hand(paths, challenger=TAG, share=0.5)
    assert widened.salt == "salt-1" and widened.share == 0.5
    stopped = by_hand(paths, challenger=None, share=0.3)
    assert stopped.challenger_tag is None and stopped.share == 0.0
    kinds = [e["kind"] for e in loop.LoopLog(paths["loop"]).read()]
    assert kinds == [loop.CANARY_WIDENED, loop.ROLLED_BACK]


def test_an_experiment_keeps_its_start_while_it_widens_and_loses_it_when_stopped(paths):
    started = by_hand(paths, challenger="recsys-ranker:v3", share=0.1)
    widened = by_hand(paths, challenger="recsys-ranker:v3", share=0.5)
    assert widened.started_at == started.started_at == started.updated_at != ""
    assert widened.updated_at >= started.updated_at
    assert by_hand(paths, challenger=None, share=0.0).started_at == ""


def test_a_deny_or_a_bad_share_changes_nothing(paths):
    from recsys_assets.access.control import AccessDenied
    from recsys_assets.access.policy import Subject

    before = paths["state"].read_text()
    with pytest.raises(AccessDenied):
        by_hand(paths, challenger=TAG, share=0.5, subject=Subject.service("bot", "pipeline"))
    with pytest.raises(ValueError, match="share"):
        by_hand(paths, challenger=TAG, share=1.5)
    assert paths["state"].read_text() == before
    assert loop.LoopLog(paths["loop"]).read() == []
