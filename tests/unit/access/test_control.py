"""The control plane's door: service identities, operator keys, audit lines, denies."""

import json

import pytest

from recsys_assets.access.control import (
    CANARY_ANALYSER,
    CONTROL_KEYS_FILE_VAR,
    CONTROL_KEYS_VAR,
    OPERATOR_KEY_VAR,
    PIPELINE,
    AccessDenied,
    authorize_control,
    control_audit_path,
    operator_subject,
)
from recsys_assets.access.policy import CredentialError
from tests.secret_scan import SECRETS

MANAGER_KEY = SECRETS["control_release_manager"]
SRE_KEY = SECRETS["control_sre"]
EXPIRED_KEY = SECRETS["control_expired"]
CONTROL_KEYS = (
    f"{MANAGER_KEY}:alice:release_manager;{SRE_KEY}:bob:sre;"
    f"{EXPIRED_KEY}:mallory:release_manager:2020-01-01T00:00:00Z"
)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_audit_log_sits_beside_the_loop_log(tmp_path):
    loop_log = tmp_path / "loop" / "prod" / "events.jsonl"
    assert control_audit_path(loop_log) == tmp_path / "loop" / "prod" / "control-audit.jsonl"


def test_an_operator_key_names_a_human_with_a_role():
    subject = operator_subject({CONTROL_KEYS_VAR: CONTROL_KEYS, OPERATOR_KEY_VAR: MANAGER_KEY})
    assert subject.id == "alice"
    assert subject.attributes["kind"] == "human"
    assert subject.role == "release_manager"


@pytest.mark.parametrize("presented", ["", "   ", "not-a-known-key-at-all", MANAGER_KEY[:-1]])
def test_a_missing_or_unknown_operator_key_is_nobody(presented):
    assert operator_subject({CONTROL_KEYS_VAR: CONTROL_KEYS, OPERATOR_KEY_VAR: presented}) is None


def test_operator_keys_come_from_a_secret_file_too(tmp_path):
    secret = tmp_path / "control-keys"
    secret.write_text(CONTROL_KEYS.replace(";", "\n"))
    environ = {CONTROL_KEYS_FILE_VAR: str(secret), OPERATOR_KEY_VAR: SRE_KEY}
    assert operator_subject(environ).id == "bob"


def test_a_malformed_control_secret_names_the_variable_not_the_key():
    with pytest.raises(CredentialError) as raised:
        operator_subject({CONTROL_KEYS_VAR: "tiny-k3y:alice:release_manager"})
    assert CONTROL_KEYS_VAR in str(raised.value) and "tiny-k3y" not in str(raised.value)


@pytest.mark.parametrize(
    ("subject", "action", "environment"),
    [
        (PIPELINE, "promote", "dev"),
        (PIPELINE, "deploy", "acceptance"),
        (CANARY_ANALYSER, "rollback", "prod"),
        (CANARY_ANALYSER, "set_canary_share", "prod"),
        (CANARY_ANALYSER, "promote", "acceptance"),
    ],
)
def test_service_identities_do_their_jobs_and_each_allow_is_audited(
    tmp_path, subject, action, environment
):
    audit = tmp_path / "control-audit.jsonl"
    decision = authorize_control(subject, action, environment, audit_path=audit, model_version="v1")
    assert decision.allowed
    (entry,) = lines(audit)
    assert entry["subject"] == subject.id and entry["effect"] == "allow"
    assert entry["resource"]["environment"] == environment
    assert entry["resource"]["model_version"] == "v1"


@pytest.mark.parametrize(
    ("subject", "action", "environment", "reason"),
    [
        (PIPELINE, "promote", "prod", "deny-pipeline-release-to-prod"),
        (PIPELINE, "rollback", "dev", "deny by default"),
        (CANARY_ANALYSER, "promote", "prod", "deny-canary-release-to-prod"),
        (CANARY_ANALYSER, "deploy", "test", "deny by default"),
        (None, "rollback", "dev", "unauthenticated"),
    ],
)
def test_a_deny_raises_names_the_rule_and_is_audited(
    tmp_path, subject, action, environment, reason
):
    audit = tmp_path / "control-audit.jsonl"
    with pytest.raises(AccessDenied) as raised:
        authorize_control(subject, action, environment, audit_path=audit)
    assert reason in str(raised.value) and environment in str(raised.value)
    assert not raised.value.decision.allowed
    (entry,) = lines(audit)
    assert entry["effect"] == "deny" and entry["action"] == action


def test_an_expired_operator_key_is_denied_and_no_key_reaches_the_audit_log(tmp_path):
    audit = tmp_path / "control-audit.jsonl"
    expired = operator_subject({CONTROL_KEYS_VAR: CONTROL_KEYS, OPERATOR_KEY_VAR: EXPIRED_KEY})
    with pytest.raises(AccessDenied, match="credential expired"):
        authorize_control(expired, "promote", "prod", audit_path=audit)
    manager = operator_subject({CONTROL_KEYS_VAR: CONTROL_KEYS, OPERATOR_KEY_VAR: MANAGER_KEY})
    assert authorize_control(manager, "promote", "prod", audit_path=audit).allowed
    text = audit.read_text()
    assert all(key not in text for key in (MANAGER_KEY, SRE_KEY, EXPIRED_KEY))
    assert [e["effect"] for e in lines(audit)] == ["deny", "allow"]


def test_an_sre_rolls_back_in_prod_but_does_not_promote(tmp_path):
    audit = tmp_path / "control-audit.jsonl"
    sre = operator_subject({CONTROL_KEYS_VAR: CONTROL_KEYS, OPERATOR_KEY_VAR: SRE_KEY})
    assert authorize_control(sre, "rollback", "prod", audit_path=audit).allowed
    with pytest.raises(AccessDenied):
        authorize_control(sre, "promote", "prod", audit_path=audit)
