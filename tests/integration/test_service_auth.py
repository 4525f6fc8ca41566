"""Access control on the served bento: API keys, the policy, the audit log, no key in any log."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from recsys_assets.access.policy import AuditLog, DataPlaneGate, hash_api_key
from recsys_assets.core import constants as c
from recsys_assets.ingestion.feedback import FeedbackLog
from recsys_assets.serving.served_log import SERVED_LOG_VAR
from tests.integration.support import cli_env, free_port, served
from tests.secret_scan import SECRETS

pytestmark = pytest.mark.integration

BENTOML = str(Path(sys.executable).parent / "bentoml")

STOREFRONT_KEY = SECRETS["storefront"]  # may read recommendations and send feedback
ANALYST_KEY = SECRETS["analyst"]  # reads customer features; no recommendations, no feedback
EXPIRED_KEY = SECRETS["expired_storefront"]  # a storefront key past its expiry
UNKNOWN_KEY = SECRETS["unknown"]
KEYS = (STOREFRONT_KEY, ANALYST_KEY, EXPIRED_KEY)
API_KEYS = (
    f"{STOREFRONT_KEY}:storefront-web:storefront;"
    f"{ANALYST_KEY}:carol:analyst;"
    f"{EXPIRED_KEY}:old-web:storefront:2020-01-01T00:00:00Z"
)
EVENT = {"request_id": "r1", "customer_id": "u1", "item_id": "i1", "type": "click"}


def _call(
    port: int, path: str, body: object | bytes | None = None, headers: dict | None = None
) -> tuple[int, str, dict[str, str]]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST" if data is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text, got = response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        status, text, got = error.code, error.read().decode(), error.headers
    return status, text, {name.lower(): value for name, value in got.items()}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _bento_tag(result) -> str:
    return re.search(r"bento: (recommender:[\w-]+)", result.stdout).group(1)


def _acceptance_env(workdir: Path, logs: Path) -> dict[str, str]:
    """The demo's stores served as acceptance: the SQLite feature store of the test environment
    (acceptance's own is Redis), so that only the API keys decide readiness."""
    return {
        **cli_env(workdir),
        "RECSYS_ENV": "acceptance",
        "RECSYS_FEATURE_STORE": "feature_store.yaml",
        "RECSYS_FEEDBACK_LOG": str(logs / "feedback.jsonl"),
        SERVED_LOG_VAR: str(logs / "served.jsonl"),
    }


@pytest.fixture(scope="module")
def auth_service(example_shop_demo, tmp_path_factory):
    """The bento served as acceptance with API keys: (port, logs folder, responses seen).
    Ready, so the acceptance test without keys below is not ready for the keys alone."""
    workdir, result = example_shop_demo
    assert result.returncode == 0, result.stderr
    logs = tmp_path_factory.mktemp("auth")
    env = {**_acceptance_env(workdir, logs), "RECSYS_API_KEYS": API_KEYS}
    env.pop("RECSYS_API_KEYS_FILE", None)
    port = free_port()
    command = [BENTOML, "serve", _bento_tag(result), "--host", "127.0.0.1", "--port", str(port)]
    with served(command, port, env, logs / "serve.log"):
        yield port, logs, []


def _seen(responses: list, answer: tuple[int, str, dict[str, str]]):
    responses.append(answer)
    return answer


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {STOREFRONT_KEY}"},
        {"Authorization": STOREFRONT_KEY},
        {"Authorization": f"Bearer {STOREFRONT_KEY} {STOREFRONT_KEY}"},
        {"X-API-Key": STOREFRONT_KEY},  # not a supported header
        _bearer(UNKNOWN_KEY),
        _bearer(STOREFRONT_KEY[:-1] + "X"),
        _bearer(hash_api_key(STOREFRONT_KEY)),
    ],
    ids=[
        "no-header",
        "empty",
        "bearer-without-key",
        "basic",
        "no-scheme",
        "two-keys",
        "x-api-key",
        "unknown-key",
        "tampered-key",
        "the-key-hash",
    ],
)
def test_no_valid_key_is_401_on_both_endpoints(auth_service, headers):
    port, logs, responses = auth_service
    before = len(AuditLog(logs / "audit.jsonl").entries())
    for path, body in (("/recommend", {"customer_id": "1"}), ("/feedback", {"events": [EVENT]})):
        status, text, response_headers = _seen(responses, _call(port, path, body, headers))
        assert status == 401, text
        assert json.loads(text) == {"error": "unauthenticated"}
        assert response_headers.get("www-authenticate") == "Bearer"
    entries = AuditLog(logs / "audit.jsonl").entries()[before:]
    assert [(e["action"], e["effect"], e["subject"], e["reason"]) for e in entries] == [
        ("read_recommendations", "deny", None, "unauthenticated"),
        ("send_feedback", "deny", None, "unauthenticated"),
    ]


def test_the_key_is_checked_before_the_body(auth_service):
    port, _, responses = auth_service
    for body in (b'{"customer_id": ', {"customer_id": "1", "k": 0}, {"colour": "red"}):
        status, text, _ = _seen(responses, _call(port, "/recommend", body))
        assert status == 401 and json.loads(text) == {"error": "unauthenticated"}
    # with a valid key the body is checked as before
    status, text, _ = _seen(
        responses, _call(port, "/recommend", {"customer_id": "1", "k": 0}, _bearer(STOREFRONT_KEY))
    )
    assert status == 400 and "k" in text


def test_a_subject_the_policy_denies_is_403(auth_service):
    port, logs, responses = auth_service
    feedback = FeedbackLog(logs / "feedback.jsonl")
    before_events = len(feedback.read()) if feedback.path.exists() else 0
    before = len(AuditLog(logs / "audit.jsonl").entries())
    calls = [
        ("/feedback", {"events": [EVENT]}, ANALYST_KEY),
        ("/recommend", {"customer_id": "1"}, ANALYST_KEY),
        ("/recommend", {"customer_id": "1"}, EXPIRED_KEY),
        ("/feedback", {"events": [EVENT]}, EXPIRED_KEY),
    ]
    for path, body, key in calls:
        status, text, _ = _seen(responses, _call(port, path, body, _bearer(key)))
        assert status == 403, text
        assert json.loads(text) == {"error": "forbidden"}  # no rule, subject or reason
    after_events = len(feedback.read()) if feedback.path.exists() else 0
    assert after_events == before_events  # nothing denied was written
    entries = AuditLog(logs / "audit.jsonl").entries()[before:]
    assert [(e["subject"], e["action"], e["effect"]) for e in entries] == [
        ("carol", "send_feedback", "deny"),
        ("carol", "read_recommendations", "deny"),
        ("old-web", "read_recommendations", "deny"),
        ("old-web", "send_feedback", "deny"),
    ]
    assert all(e["rule_id"] is None for e in entries)  # deny by default / expired
    assert "deny by default" in entries[0]["reason"]
    assert entries[2]["reason"] == "credential expired"
    assert entries[0]["subject_attributes"] == {
        "role": "analyst",
        "authenticated_by": "api_key",
        "expires_at": None,
    }


def test_reading_customer_features_is_a_permission_of_its_own(auth_service):
    port, logs, responses = auth_service
    before = len(AuditLog(logs / "audit.jsonl").entries())
    body = {"customer_id": "never-seen"}
    status, text, _ = _seen(
        responses, _call(port, "/customer_features", body, _bearer(ANALYST_KEY))
    )
    assert status == 200 and json.loads(text)["found"] is False, text
    for key in (STOREFRONT_KEY, EXPIRED_KEY):  # recommendations, not personal data
        status, text, _ = _seen(responses, _call(port, "/customer_features", body, _bearer(key)))
        assert status == 403 and json.loads(text) == {"error": "forbidden"}
    status, text, _ = _seen(responses, _call(port, "/customer_features", body, {}))
    assert status == 401 and json.loads(text) == {"error": "unauthenticated"}
    entries = AuditLog(logs / "audit.jsonl").entries()[before:]
    assert [(e["subject"], e["action"], e["effect"], e["rule_id"]) for e in entries] == [
        ("carol", "read_customer_features", "allow", "allow-customer-feature-readers"),
        ("storefront-web", "read_customer_features", "deny", None),
        ("old-web", "read_customer_features", "deny", None),
        (None, "read_customer_features", "deny", None),
    ]


def test_an_allowed_key_is_served_and_audited(auth_service):
    port, logs, responses = auth_service
    before = len(AuditLog(logs / "audit.jsonl").entries())
    status, text, _ = _seen(
        responses,
        _call(port, "/recommend", {"customer_id": "never-seen", "k": 3}, _bearer(STOREFRONT_KEY)),
    )
    assert status == 200, text
    assert len(json.loads(text)["items"]) == 3
    status, text, _ = _seen(
        responses,
        _call(
            port, "/feedback", {"events": [EVENT]}, {"authorization": f"bearer {STOREFRONT_KEY}"}
        ),
    )
    assert status == 200 and json.loads(text) == {"accepted": 1}
    entries = AuditLog(logs / "audit.jsonl").entries()[before:]
    assert len(entries) == 2
    for entry, action, resource_type in zip(
        entries,
        ("read_recommendations", "send_feedback"),
        ("recommendations", "feedback"),
        strict=True,
    ):
        assert entry["subject"] == "storefront-web" and entry["action"] == action
        assert entry["effect"] == "allow" and entry["rule_id"] == "allow-storefront"
        assert entry["resource"] == {
            "environment": "acceptance",
            "type": resource_type,
            "plane": "data",
        }


def test_probes_and_metrics_stay_open(auth_service):
    port, _, responses = auth_service
    for path in (c.LIVENESS_PATH, c.READINESS_PATH, c.METRICS_PATH):
        status, text, _ = _seen(responses, _call(port, path))
        assert status == 200, (path, text)


def test_no_key_appears_in_the_logs_the_audit_or_the_responses(auth_service):
    port, logs, responses = auth_service
    # make sure every kind of call happened, whatever ran before
    for key in (STOREFRONT_KEY, ANALYST_KEY, EXPIRED_KEY, UNKNOWN_KEY):
        _seen(responses, _call(port, "/recommend", {"customer_id": "1"}, _bearer(key)))
        _seen(responses, _call(port, "/feedback", {"events": [EVENT]}, _bearer(key)))
    assert {status for status, _, _ in responses} >= {200, 401, 403}
    time.sleep(0.5)  # let the server's log lines reach the file
    texts = {
        "service log": (logs / "serve.log").read_text(),
        "audit log": (logs / "audit.jsonl").read_text(),
        "feedback log": (logs / "feedback.jsonl").read_text(),
        "served log": (logs / "served.jsonl").read_text(),
        "responses": json.dumps([[s, t, h] for s, t, h in responses]),
    }
    assert "serving without authentication" not in texts["service log"]  # keys are configured
    for where, text in texts.items():
        for key in (*KEYS, UNKNOWN_KEY):
            assert key not in text, f"a key in the {where}"
            assert hash_api_key(key) not in text, f"a key's hash in the {where}"


def test_acceptance_without_keys_is_never_ready(example_shop_demo, tmp_path):
    workdir, result = example_shop_demo
    env = _acceptance_env(workdir, tmp_path)
    env.pop("RECSYS_API_KEYS", None)
    env.pop("RECSYS_API_KEYS_FILE", None)
    port = free_port()
    command = [BENTOML, "serve", _bento_tag(result), "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "serve.log"
    with served(command, port, env, log, ready=False):  # BentoML starts; the worker is unready
        deadline = time.monotonic() + 60  # the worker logs its error while it loads
        while "not ready" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _call(port, c.READINESS_PATH)[0] == 503
        status, text, _ = _call(port, "/recommend", {"customer_id": "1"}, _bearer(STOREFRONT_KEY))
        assert status == 503 and json.loads(text) == {"error": "not ready"}
    text = log.read_text()
    assert "not ready: access control not configured: no API keys in acceptance" in text, text
    assert "RECSYS_API_KEYS" in text
    [entry] = AuditLog(tmp_path / "audit.jsonl").entries()
    assert (entry["subject"], entry["effect"]) == (None, "deny")


def test_every_api_route_is_guarded_by_an_action():
    from bentos.recommender.access import ROUTE_ACTIONS
    from bentos.recommender.service import Recommender

    assert {api.route for api in Recommender.apis.values()} == set(ROUTE_ACTIONS)
    gate = DataPlaneGate("prod", {}, None, None)
    for action in ROUTE_ACTIONS.values():
        assert action in gate._resources  # an action the engine knows
