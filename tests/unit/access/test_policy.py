"""Access control: the shipped policy's full allow/deny matrix, the engine, credentials, audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recsys_assets.access.policy import (
    ACTIONS,
    CREDENTIAL_EXPIRED,
    DEFAULT_POLICY_PATH,
    ENVIRONMENTS,
    NOT_CONFIGURED,
    UNAUTHENTICATED,
    AuditLog,
    CredentialError,
    DataPlaneGate,
    PolicyError,
    Resource,
    Subject,
    api_keys_from_environment,
    audit_log_path,
    authorize,
    bearer_token,
    hash_api_key,
    load_policy,
    parse_api_keys,
    parse_policy,
    subject_for_api_key,
)
from tests.secret_scan import SECRETS

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[3] / "docs" / "access-control.md"

# One subject per role, with the kind it really has. "intern" is a role the policy never names.
SUBJECTS = {
    "pipeline": Subject.service("dagster-pipeline", "pipeline"),
    "canary": Subject.service("canary-analyser", "canary"),
    "release_manager": Subject.human("alice", "release_manager"),
    "sre": Subject.human("bob", "sre"),
    "storefront": Subject.service("storefront-web", "storefront"),
    "analyst": Subject.human("carol", "analyst"),
    "recommender": Subject.service("recommender-service", "recommender"),
    "intern": Subject.human("dave", "intern"),
}

# The expected matrix, written out by hand: changing the policy means changing this table.
# role -> action -> environments where it is allowed; anything not listed is denied.
EVERY_ENV = {"dev", "test", "acceptance", "prod"}
BELOW_PROD = {"dev", "test", "acceptance"}
EXPECTED_ALLOWED: dict[str, dict[str, set[str]]] = {
    "pipeline": {"promote": BELOW_PROD, "deploy": BELOW_PROD},
    "canary": {"rollback": EVERY_ENV, "set_canary_share": EVERY_ENV, "promote": BELOW_PROD},
    "release_manager": {
        "promote": EVERY_ENV,
        "deploy": EVERY_ENV,
        "rollback": EVERY_ENV,
        "set_canary_share": EVERY_ENV,
    },
    "sre": {"rollback": EVERY_ENV},
    "storefront": {"read_recommendations": EVERY_ENV, "send_feedback": EVERY_ENV},
    "analyst": {"read_customer_features": EVERY_ENV},
    "recommender": {"read_customer_features": EVERY_ENV},
    "intern": {},
}
EXPECTED_RULE = {
    ("pipeline", "promote", "prod"): "deny-pipeline-release-to-prod",
    ("pipeline", "deploy", "prod"): "deny-pipeline-release-to-prod",
    ("canary", "promote", "prod"): "deny-canary-release-to-prod",
    ("canary", "deploy", "prod"): "deny-canary-release-to-prod",
}


@pytest.fixture(scope="module")
def policy():
    return load_policy(DEFAULT_POLICY_PATH)


def test_the_matrix_covers_every_action_and_environment():
    assert set(ACTIONS) == {
        "promote",
        "deploy",
        "rollback",
        "set_canary_share",
        "read_recommendations",
        "send_feedback",
        "read_customer_features",
    }
    assert set(ENVIRONMENTS) == EVERY_ENV
    assert set(EXPECTED_ALLOWED) == set(SUBJECTS)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("role", list(SUBJECTS))
def test_the_shipped_policy_matrix(policy, role, action, environment):
    decision = policy.decide(
        SUBJECTS[role], action, Resource.for_action(action, environment), now=NOW
    )
    expected = environment in EXPECTED_ALLOWED[role].get(action, set())
    assert decision.allowed is expected, decision.reason
    if expected:
        assert decision.rule_id and decision.rule_id.startswith("allow-")
    else:
        assert decision.rule_id == EXPECTED_RULE.get((role, action, environment))


def test_right_role_wrong_kind_is_denied(policy):
    prod_model = Resource.for_action("promote", "prod")
    service_posing_as_manager = Subject.service("bot", "release_manager")
    assert not policy.decide(service_posing_as_manager, "promote", prod_model, now=NOW).allowed
    human_posing_as_pipeline = Subject.human("eve", "pipeline")
    dev_model = Resource.for_action("deploy", "dev")
    assert not policy.decide(human_posing_as_pipeline, "deploy", dev_model, now=NOW).allowed
    human_posing_as_canary = Subject.human("eve", "canary")
    assert not policy.decide(human_posing_as_canary, "rollback", prod_model, now=NOW).allowed


def test_api_key_subjects_never_reach_the_control_plane(policy):
    keys = parse_api_keys("k" * 32 + ":ops-script:release_manager")
    subject = subject_for_api_key(keys, "k" * 32)
    for action in ("promote", "deploy", "rollback", "set_canary_share"):
        decision = policy.decide(subject, action, Resource.for_action(action, "dev"), now=NOW)
        assert not decision.allowed


def test_deny_by_default_for_unknown_role_action_and_missing_attributes(policy):
    decision = policy.decide(
        SUBJECTS["intern"], "read_recommendations", Resource.of("dev", "recommendations")
    )
    assert (decision.allowed, decision.rule_id) == (False, None)
    assert "deny by default" in decision.reason
    unknown_action = policy.decide(
        SUBJECTS["release_manager"], "drop_tables", Resource.of("dev", "model")
    )
    assert (unknown_action.allowed, unknown_action.rule_id) == (False, None)
    assert "unknown action" in unknown_action.reason
    no_role = policy.decide(
        Subject("nobody"), "read_recommendations", Resource.of("dev", "recommendations")
    )
    assert not no_role.allowed
    no_environment = policy.decide(
        SUBJECTS["storefront"], "read_recommendations", Resource({"type": "recommendations"})
    )
    assert not no_environment.allowed


def test_an_action_on_the_wrong_resource_or_plane_is_denied(policy):
    manager = SUBJECTS["release_manager"]
    wrong_type = policy.decide(manager, "promote", Resource.of("dev", "recommendations"), now=NOW)
    assert not wrong_type.allowed and "applies to a model" in wrong_type.reason
    wrong_plane = Resource({"environment": "dev", "type": "model", "plane": "data"})
    assert not policy.decide(manager, "promote", wrong_plane, now=NOW).allowed


EXPLICIT_DENY = {
    "version": 1,
    "rules": [
        {
            "id": "allow-ops-everything",
            "description": "Ops may do anything anywhere.",
            "effect": "allow",
            "actions": "*",
            "conditions": {"subject.role": "ops"},
        },
        {
            "id": "deny-ops-prod",
            "description": "Except in prod.",
            "effect": "deny",
            "actions": ["promote", "deploy"],
            "conditions": {"resource.environment": "prod"},
        },
        {
            "id": "allow-ops-prod-again",
            "description": "A later allow does not undo the deny.",
            "effect": "allow",
            "actions": ["promote"],
            "conditions": {"subject.role": "ops", "resource.environment": "prod"},
        },
    ],
}


def test_explicit_deny_beats_any_allow_whatever_the_order():
    ops = Subject.human("olga", "ops")
    for rules in (EXPLICIT_DENY["rules"], list(reversed(EXPLICIT_DENY["rules"]))):
        policy = parse_policy({"version": 1, "rules": rules})
        denied = policy.decide(ops, "promote", Resource.for_action("promote", "prod"), now=NOW)
        assert (denied.allowed, denied.rule_id) == (False, "deny-ops-prod")
        allowed = policy.decide(ops, "promote", Resource.for_action("promote", "dev"), now=NOW)
        assert allowed.allowed
        rollback = policy.decide(ops, "rollback", Resource.for_action("rollback", "prod"), now=NOW)
        assert rollback.allowed


def test_conditions_not_in_and_same_as():
    policy = parse_policy(
        {
            "version": 1,
            "rules": [
                {
                    "id": "allow-own-team",
                    "description": "Teams read their own features, except contractors.",
                    "effect": "allow",
                    "actions": ["read_customer_features"],
                    "conditions": {
                        "subject.team": {"same_as": "resource.team"},
                        "subject.role": {"not_in": ["contractor"]},
                    },
                }
            ],
        }
    )
    features = Resource.of("dev", "customer_features", team="growth")
    action = "read_customer_features"
    assert policy.decide(Subject.human("a", "analyst", team="growth"), action, features).allowed
    assert not policy.decide(Subject.human("b", "analyst", team="search"), action, features).allowed
    contractor = Subject.human("c", "contractor", team="growth")
    assert not policy.decide(contractor, action, features).allowed
    assert not policy.decide(Subject.human("d", "analyst"), action, features).allowed
    no_team = Resource.of("dev", "customer_features")
    assert not policy.decide(Subject.human("e", "analyst", team="growth"), action, no_team).allowed


# --- credentials ---------------------------------------------------------------------------

STOREFRONT_KEY = SECRETS["policy_storefront"]
EXPIRED_KEY = SECRETS["policy_expired"]
ANALYST_KEY = SECRETS["policy_analyst"]
KEYS_SECRET = (
    f"{STOREFRONT_KEY}:storefront-web:storefront:2026-01-01T00:00:00+00:00;"
    f" {EXPIRED_KEY}:old-client:storefront:2025-05-01T00:00:00Z;"
    f"{ANALYST_KEY}:carol:analyst"
)
ALL_KEYS = (STOREFRONT_KEY, EXPIRED_KEY, ANALYST_KEY)


def test_parse_api_keys_keeps_hashes_and_subjects_only():
    keys = parse_api_keys(KEYS_SECRET)
    assert set(keys) == {hash_api_key(key) for key in ALL_KEYS}
    storefront = keys[hash_api_key(STOREFRONT_KEY)]
    assert storefront.id == "storefront-web" and storefront.role == "storefront"
    assert storefront.expires_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert keys[hash_api_key(ANALYST_KEY)].expires_at is None
    assert parse_api_keys("") == {} and parse_api_keys(" ; ") == {}


def test_known_tampered_and_missing_keys(policy):
    keys = parse_api_keys(KEYS_SECRET)
    assert subject_for_api_key(keys, STOREFRONT_KEY).id == "storefront-web"
    assert subject_for_api_key(keys, STOREFRONT_KEY[:-1] + "X") is None
    assert subject_for_api_key(keys, STOREFRONT_KEY + " ") is None
    assert subject_for_api_key(keys, hash_api_key(STOREFRONT_KEY)) is None
    assert subject_for_api_key(keys, "") is None
    assert subject_for_api_key(keys, None) is None
    assert subject_for_api_key({}, STOREFRONT_KEY) is None
    analyst = subject_for_api_key(keys, ANALYST_KEY)
    forbidden = policy.decide(
        analyst, "send_feedback", Resource.for_action("send_feedback", "prod"), now=NOW
    )
    assert not forbidden.allowed and forbidden.reason != CREDENTIAL_EXPIRED  # 403, not 401


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_an_expired_credential_is_denied_everywhere(policy, environment):
    keys = parse_api_keys(KEYS_SECRET)
    expired = subject_for_api_key(keys, EXPIRED_KEY)
    resource = Resource.for_action("read_recommendations", environment)
    decision = policy.decide(expired, "read_recommendations", resource, now=NOW)
    assert decision == type(decision)(False, None, CREDENTIAL_EXPIRED)
    valid = subject_for_api_key(keys, STOREFRONT_KEY)
    assert policy.decide(valid, "read_recommendations", resource, now=NOW).allowed
    after = datetime(2026, 1, 1, tzinfo=UTC)
    assert policy.decide(valid, "read_recommendations", resource, now=after).reason == (
        CREDENTIAL_EXPIRED
    )


def test_expiry_on_human_subjects_and_unreadable_expiry_fail_closed(policy):
    prod_model = Resource.for_action("promote", "prod")
    tomorrow = NOW + timedelta(days=1)
    manager = Subject.human("alice", "release_manager", expires_at=tomorrow)
    assert policy.decide(manager, "promote", prod_model, now=NOW).allowed
    naive_yesterday = (NOW - timedelta(days=1)).replace(tzinfo=None)
    lapsed = Subject.human("alice", "release_manager", expires_at=naive_yesterday)
    assert policy.decide(lapsed, "promote", prod_model, now=NOW).reason == CREDENTIAL_EXPIRED
    garbled = Subject.human("alice", "release_manager", expires_at="next tuesday")
    assert policy.decide(garbled, "promote", prod_model, now=NOW).reason == CREDENTIAL_EXPIRED
    wrong_type = Subject.human("alice", "release_manager", expires_at=12345)
    assert not policy.decide(wrong_type, "promote", prod_model, now=NOW).allowed


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("tooshort:someone:storefront", "shorter than 16"),
        ("a-key-that-is-long-enough:storefront", "expected <key>:<subject_id>:<role>"),
        ("a-key-that-is-long-enough::storefront", "empty subject id or role"),
        ("a-key-that-is-long-enough:web:storefront:someday", "(web): the expiry is not"),
        (
            "a-key-that-is-long-enough:web:storefront;a-key-that-is-long-enough:app:storefront",
            "entry #2 (app): the key is already used by web",
        ),
    ],
)
def test_malformed_api_key_secrets_never_echo_the_key(secret, message):
    with pytest.raises(CredentialError) as raised:
        parse_api_keys(secret)
    assert message in str(raised.value)
    key = secret.split(":", 1)[0]
    assert key not in str(raised.value) and key not in repr(raised.value)


def test_api_keys_from_the_environment_or_a_secret_file(tmp_path):
    inline = api_keys_from_environment({"RECSYS_API_KEYS": KEYS_SECRET})
    assert len(inline) == 3
    secret_file = tmp_path / "api-keys"
    secret_file.write_text(KEYS_SECRET.replace(";", "\n") + "\n")
    from_file = api_keys_from_environment({"RECSYS_API_KEYS_FILE": str(secret_file)})
    assert from_file == inline
    assert api_keys_from_environment({}) == {}
    with pytest.raises(CredentialError, match="not both"):
        api_keys_from_environment(
            {"RECSYS_API_KEYS": KEYS_SECRET, "RECSYS_API_KEYS_FILE": str(secret_file)}
        )
    with pytest.raises(CredentialError, match="cannot read"):
        api_keys_from_environment({"RECSYS_API_KEYS_FILE": str(tmp_path / "missing")})


# --- audit ---------------------------------------------------------------------------------


def test_the_audit_log_records_every_allow_and_deny(policy, tmp_path):
    audit = AuditLog(tmp_path / "audit" / "decisions.jsonl")
    keys = parse_api_keys(KEYS_SECRET)
    requests = [
        (SUBJECTS["pipeline"], "deploy", Resource.for_action("deploy", "acceptance")),
        (SUBJECTS["pipeline"], "deploy", Resource.for_action("deploy", "prod")),
        (SUBJECTS["intern"], "rollback", Resource.for_action("rollback", "dev")),
        (subject_for_api_key(keys, EXPIRED_KEY), "send_feedback", Resource.of("prod", "feedback")),
        (
            subject_for_api_key(keys, "forged-key-000000000"),
            "send_feedback",
            Resource.of("prod", "feedback"),
        ),
    ]
    decisions = [authorize(policy, *request, audit, now=NOW) for request in requests]
    assert [d.allowed for d in decisions] == [True, False, False, False, False]
    entries = audit.entries()
    assert len(entries) == len(requests)
    for entry, (subject, action, resource), decision in zip(
        entries, requests, decisions, strict=True
    ):
        assert entry["time"] == NOW.isoformat()
        assert entry["subject"] == (subject.id if subject else None)
        assert entry["action"] == action
        assert entry["resource"] == dict(resource.attributes)
        assert entry["effect"] == decision.effect
        assert entry["rule_id"] == decision.rule_id
        assert entry["reason"] == decision.reason
    assert entries[0]["subject_attributes"] == {"kind": "service", "role": "pipeline"}
    assert entries[0]["rule_id"] == "allow-pipeline-release-below-prod"
    assert entries[1]["rule_id"] == "deny-pipeline-release-to-prod"
    assert entries[2]["rule_id"] is None and "deny by default" in entries[2]["reason"]
    assert entries[3]["reason"] == CREDENTIAL_EXPIRED
    assert entries[3]["subject_attributes"]["expires_at"] == "2025-05-01T00:00:00+00:00"
    assert entries[4]["subject"] is None and entries[4]["reason"] == "unauthenticated"


def test_no_secret_reaches_the_audit_log_a_repr_or_an_error(policy, tmp_path):
    audit = AuditLog(tmp_path / "decisions.jsonl")
    keys = parse_api_keys(KEYS_SECRET)
    subject = subject_for_api_key(keys, STOREFRONT_KEY)
    for presented in (*ALL_KEYS, STOREFRONT_KEY[:-1] + "X"):
        authorize(
            policy,
            subject_for_api_key(keys, presented),
            "read_recommendations",
            Resource.for_action("read_recommendations", "prod"),
            audit,
            now=NOW,
        )
    leaky = Subject.service("svc", "storefront", api_key=STOREFRONT_KEY, db_password="hunter2!")
    authorize(policy, leaky, "send_feedback", Resource.of("dev", "feedback"), audit, now=NOW)
    log_text = audit.path.read_text()
    assert "hunter2!" not in log_text
    shown = [log_text, repr(keys), repr(subject), str(subject), repr(audit)]
    for secret in (
        f"{STOREFRONT_KEY}:web:storefront;{STOREFRONT_KEY}:app:storefront",
        f"{STOREFRONT_KEY}:web:storefront:not-a-date",
        f"{STOREFRONT_KEY}:web",
    ):
        with pytest.raises(CredentialError) as raised:
            parse_api_keys(secret)
        shown += [str(raised.value), repr(raised.value)]
    for text in shown:
        for key in ALL_KEYS:
            assert key not in text
    assert hash_api_key(STOREFRONT_KEY) not in log_text


# --- loading and validating policy files -------------------------------------------------------

GOOD_RULE = """
  - id: allow-storefront
    description: Storefront reads.
    effect: allow
    actions: [read_recommendations]
    conditions:
      subject.role: storefront
"""


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["the policy file is empty"]),
        ("# nothing but a comment\n", ["the policy file is empty"]),
        ("version: 1\nrules: []\n", ["'rules'", "non-empty list"]),
        ("- id: x\n", ["expected a mapping with 'version' and 'rules'"]),
        ("rules: [" + GOOD_RULE, ["not valid YAML"]),
        ("rules:" + GOOD_RULE, ["'version'", "expected 1"]),
        ("version: 1\nowner: me\nrules:" + GOOD_RULE, ["unknown top-level field 'owner'"]),
        (
            "version: 1\nrules:" + GOOD_RULE.replace("effect: allow", "effect: permit"),
            ["'allow-storefront'", "'effect'", "unknown effect 'permit'"],
        ),
        (
            "version: 1\nrules:"
            + GOOD_RULE.replace("[read_recommendations]", "[read_recommendations, delete]"),
            ["'allow-storefront'", "'actions'", "unknown action 'delete'"],
        ),
        (
            "version: 1\nrules:"
            + GOOD_RULE.replace("role: storefront\n", "role: {like: store*}\n"),
            ["'allow-storefront'", "'conditions.subject.role'", "unknown operator 'like'"],
        ),
        (
            "version: 1\nrules:" + GOOD_RULE + GOOD_RULE,
            ["'allow-storefront'", "'id'", "duplicate rule id"],
        ),
        (
            "version: 1\nrules:" + GOOD_RULE.replace("conditions:", "condition:"),
            ["'allow-storefront'", "'condition'", "unknown field"],
        ),
        (
            "version: 1\nrules:"
            + GOOD_RULE.replace("subject.role: storefront", "resource.environment: production"),
            ["'conditions.resource.environment'", "unknown value 'production'"],
        ),
        (
            "version: 1\nrules:" + GOOD_RULE.replace("subject.role", "role"),
            ["'conditions.role'", "subject.<attribute> or resource.<attribute>"],
        ),
        (
            "version: 1\nrules:" + GOOD_RULE.replace("role: storefront\n", "role: {in: []}\n"),
            ["'conditions.subject.role'", "non-empty list"],
        ),
        (
            "version: 1\nrules:"
            + GOOD_RULE.replace("role: storefront\n", "role: {same_as: team}\n"),
            ["'conditions.subject.role'", "same_as takes"],
        ),
        (
            "version: 1\nrules:" + GOOD_RULE.replace("subject.role: storefront", "{}"),
            ["'allow-storefront'", "'conditions'"],
        ),
        (
            "version: 1\nrules:" + GOOD_RULE.replace("    description: Storefront reads.\n", ""),
            ["'allow-storefront'", "'description'"],
        ),
        (
            "version: 1\nrules:" + GOOD_RULE.replace("id: allow-storefront", "id: Allow Store"),
            ["rule #1", "'id'"],
        ),
        ("version: 1\nrules:\n  - just a string\n", ["rule #1 is not a mapping"]),
    ],
)
def test_malformed_policy_files_give_clear_errors(tmp_path, text, fragments):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    message = str(raised.value)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_a_missing_policy_file_is_a_clear_error(tmp_path):
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "nope.yaml")


def test_the_good_rule_alone_loads(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nrules:" + GOOD_RULE)
    policy = load_policy(path)
    assert [rule.id for rule in policy.rules] == ["allow-storefront"]


def test_the_docs_list_every_shipped_rule(policy):
    docs = DOCS.read_text()
    for rule in policy.rules:
        assert f"`{rule.id}`" in docs, rule.id


def test_round_trip_of_an_audit_entry_is_plain_json(policy, tmp_path):
    audit = AuditLog(tmp_path / "a.jsonl")
    entry = audit.record(
        SUBJECTS["sre"],
        "rollback",
        Resource.for_action("rollback", "prod"),
        policy.decide(SUBJECTS["sre"], "rollback", Resource.for_action("rollback", "prod")),
    )
    assert json.loads(audit.path.read_text()) == entry


def test_the_audit_log_fsyncs_unless_told_not_to(policy, tmp_path, monkeypatch):
    synced: list[int] = []
    monkeypatch.setattr("recsys_assets.access.policy.os.fsync", synced.append)
    resource = Resource.for_action("rollback", "prod")
    decision = policy.decide(SUBJECTS["sre"], "rollback", resource, now=NOW)
    AuditLog(tmp_path / "durable.jsonl").record(SUBJECTS["sre"], "rollback", resource, decision)
    assert len(synced) == 1
    fast = AuditLog(tmp_path / "fast.jsonl", fsync=False)
    fast.record(SUBJECTS["sre"], "rollback", resource, decision)
    assert len(synced) == 1 and len(fast.entries()) == 1  # written (flushed), not fsynced


# --- the data plane gate -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (f"Bearer {STOREFRONT_KEY}", STOREFRONT_KEY),
        (f"bearer   {STOREFRONT_KEY}  ", STOREFRONT_KEY),
        (f"BEARER {STOREFRONT_KEY}", STOREFRONT_KEY),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        (f"Basic {STOREFRONT_KEY}", None),
        (STOREFRONT_KEY, None),
        (f"Bearer {STOREFRONT_KEY} extra", None),
        (f"Token {STOREFRONT_KEY}", None),
    ],
)
def test_bearer_token(header, token):
    assert bearer_token(header) == token


def test_audit_log_path_follows_the_feedback_log_unless_set(tmp_path):
    feedback = tmp_path / "feedback" / "feedback.jsonl"
    assert audit_log_path(feedback, {}) == tmp_path / "feedback" / "audit.jsonl"
    assert audit_log_path(feedback, {"RECSYS_AUDIT_LOG": "/x/a.jsonl"}) == Path("/x/a.jsonl")


def _gate(tmp_path, environment="prod", environ=None, **kwargs):
    environ = {"RECSYS_API_KEYS": KEYS_SECRET} if environ is None else environ
    return DataPlaneGate.from_environment(
        environment, tmp_path / "audit.jsonl", environ=environ, **kwargs
    )


def test_the_gate_answers_200_401_403_and_audits_each(tmp_path):
    gate = _gate(tmp_path)
    assert gate.enforced and gate.ready and gate.warning is None
    bearer = f"Bearer {STOREFRONT_KEY}"
    now = datetime(2025, 6, 1, tzinfo=UTC)
    answers = [
        gate.admit("read_recommendations", bearer, now=now),
        gate.admit("send_feedback", bearer, now=now),
        gate.admit("read_recommendations", None, now=now),
        gate.admit("read_recommendations", f"Basic {STOREFRONT_KEY}", now=now),
        gate.admit("read_recommendations", "Bearer forged-key-0000000000", now=now),
        gate.admit("send_feedback", f"Bearer {ANALYST_KEY}", now=now),  # policy denies
        gate.admit("read_recommendations", f"Bearer {EXPIRED_KEY}", now=now),  # expired
    ]
    assert [a.status for a in answers] == [200, 200, 401, 401, 401, 403, 403]
    assert [a.allowed for a in answers] == [True, True, False, False, False, False, False]
    entries = AuditLog(tmp_path / "audit.jsonl").entries()
    assert len(entries) == len(answers)
    assert [e["subject"] for e in entries] == [
        "storefront-web", "storefront-web", None, None, None, "carol", "old-client",
    ]  # fmt: skip
    assert [e["rule_id"] for e in entries][:2] == ["allow-storefront"] * 2
    assert entries[2]["reason"] == UNAUTHENTICATED and entries[6]["reason"] == CREDENTIAL_EXPIRED
    assert entries[5]["resource"] == {"environment": "prod", "type": "feedback", "plane": "data"}
    text = (tmp_path / "audit.jsonl").read_text()
    for key in ALL_KEYS:
        assert key not in text and hash_api_key(key) not in text
    assert all(key not in repr(gate) for key in ALL_KEYS)


@pytest.mark.parametrize("environment", ["dev", "test"])
def test_without_keys_dev_and_test_are_open_with_a_warning(tmp_path, environment):
    gate = _gate(tmp_path, environment, environ={})
    assert gate.ready and not gate.enforced
    assert "RECSYS_API_KEYS" in gate.warning
    assert gate.admit("send_feedback", None).status == 200
    assert not (tmp_path / "audit.jsonl").exists()  # nothing decided, nothing audited


@pytest.mark.parametrize("environment", ["acceptance", "prod"])
def test_without_keys_acceptance_and_prod_are_never_ready(tmp_path, environment):
    gate = _gate(tmp_path, environment, environ={})
    assert not gate.ready and gate.enforced
    assert "RECSYS_API_KEYS" in gate.error and environment in gate.error
    answer = gate.admit("read_recommendations", f"Bearer {STOREFRONT_KEY}")
    assert answer.status == 503 and answer.decision.reason == NOT_CONFIGURED
    [entry] = AuditLog(tmp_path / "audit.jsonl").entries()
    assert entry["effect"] == "deny" and entry["subject"] is None


def test_a_malformed_secret_or_policy_fails_closed_in_every_environment(tmp_path):
    secret = f"{STOREFRONT_KEY}:web:storefront:someday"
    gate = _gate(tmp_path, "dev", environ={"RECSYS_API_KEYS": secret})
    assert not gate.ready and "expiry" in gate.error and STOREFRONT_KEY not in gate.error
    assert gate.admit("read_recommendations", f"Bearer {STOREFRONT_KEY}").status == 503
    broken = tmp_path / "policy.yaml"
    broken.write_text("version: 2\n")
    gate = _gate(tmp_path, "test", policy_path=broken)
    assert not gate.ready and "version" in gate.error
    assert gate.admit("read_recommendations", f"Bearer {STOREFRONT_KEY}").status == 503
