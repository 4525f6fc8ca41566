"""The published API contract against the answers: Schemathesis runs over every operation of the
served bento's OpenAPI document (``/docs.json``), access control off and on, with a bounded
number of cases and a fixed seed, and must find nothing. Every check is on (server errors,
status codes, content types, headers and bodies against the published schemas, refused bodies
accepted, valid ones refused, undeclared methods and media types, authentication ignored).

The document is bentos/recommender/contract.py's; tests/unit/serving/test_contract.py holds its
parts without a server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.serving.served_log import SERVED_LOG_VAR
from tests.integration.support import cli_env, free_port, served
from tests.secret_scan import SECRETS

schemathesis = pytest.importorskip("schemathesis")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENTOML = str(Path(sys.executable).parent / "bentoml")
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
SEED = 20240501
MAX_EXAMPLES = 10  # generated per operation, besides the coverage phase's: ~350 requests a run
OPERATIONS = 7  # /recommend, /feedback, /customer_features; /healthz, /livez, /readyz, /metrics

STOREFRONT_KEY = SECRETS["storefront"]  # reads recommendations and sends feedback
ANALYST_KEY = SECRETS["analyst"]  # reads customer features
API_KEYS = f"{STOREFRONT_KEY}:storefront-web:storefront;{ANALYST_KEY}:carol:analyst"
# The key each operation needs, read by Schemathesis from the environment (no key in the file).
KEYED_CONFIG = """\
[[operations]]
include-path = "/customer_features"
headers = { Authorization = "Bearer ${ANALYST_KEY}" }

[[operations]]
include-path-regex = "^/(recommend|feedback)$"
headers = { Authorization = "Bearer ${STOREFRONT_KEY}" }
"""


def _bento_tag(result) -> str:
    return re.search(r"bento: (recommender:[\w-]+)", result.stdout).group(1)


def _serve(example_shop_demo, logs: Path, **env: str):
    workdir, result = example_shop_demo
    assert result.returncode == 0, result.stderr
    env = {
        **cli_env(workdir),
        # this module's feedback, served and audit logs, apart from the other modules'
        "RECSYS_FEEDBACK_LOG": str(logs / "feedback.jsonl"),
        SERVED_LOG_VAR: str(logs / "served.jsonl"),
        **env,
    }
    env.pop("RECSYS_API_KEYS_FILE", None)
    port = free_port()
    command = [BENTOML, "serve", _bento_tag(result), "--host", "127.0.0.1", "--port", str(port)]
    return port, served(command, port, env, logs / "serve.log")


@pytest.fixture(scope="module")
def open_service(example_shop_demo, tmp_path_factory):
    """The bento in the test environment without API keys (access control off): the port."""
    logs = tmp_path_factory.mktemp("contract_open")
    port, server = _serve(example_shop_demo, logs)
    with server:
        yield port


@pytest.fixture(scope="module")
def keyed_service(example_shop_demo, tmp_path_factory):
    """The bento as acceptance with API keys (access control on; the SQLite feature store of the
    test environment, as in test_service_auth.py): the port."""
    logs = tmp_path_factory.mktemp("contract_keyed")
    port, server = _serve(
        example_shop_demo,
        logs,
        RECSYS_ENV="acceptance",
        RECSYS_FEATURE_STORE="feature_store.yaml",
        RECSYS_API_KEYS=API_KEYS,
    )
    with server:
        yield port


def _run_schemathesis(port: int, workdir: Path, config: str | None = None) -> str:
    """``schemathesis run`` over the served document; its report, once it found nothing."""
    options = []
    if config is not None:
        (workdir / "schemathesis.toml").write_text(config)
        options = ["--config-file", str(workdir / "schemathesis.toml")]
    command = [
        SCHEMATHESIS,
        *options,
        "run",
        f"http://127.0.0.1:{port}/docs.json",
        "--checks=all",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--generation-database=none",  # nothing carried over from an earlier run
        "--continue-on-failure",
        "--request-timeout=30",
        "--no-color",
    ]
    env = {**os.environ, "STOREFRONT_KEY": STOREFRONT_KEY, "ANALYST_KEY": ANALYST_KEY}
    run = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    report = run.stdout + run.stderr  # Schemathesis filters the Authorization header out
    assert run.returncode == 0, report
    assert re.search(rf"Tested: {OPERATIONS}\b", report), report
    assert re.search(r"(\d+) generated, \1 passed", report), report
    return report


def _known_customer(example_shop_demo) -> str:
    workdir, _ = example_shop_demo
    profile = pd.read_parquet(workdir / "feature_repo" / "data" / "customer_profile.parquet")
    return str(profile[c.USER_ID].iloc[0])


def _check_known_customer(port: int, customer: str, keys: dict[str, str] | None = None) -> None:
    """The answers random ids never get (a ranked list, fallback_reason null; a profile found),
    validated against the published document by Schemathesis's Python API."""
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/docs.json")
    event = {"request_id": "r1", "customer_id": customer, "item_id": "i1", "type": "click"}
    for path, body in (
        ("/recommend", {"customer_id": customer, "k": 3}),
        ("/customer_features", {"customer_id": customer}),
        ("/feedback", {"events": [event]}),
    ):
        headers = {"Authorization": f"Bearer {keys[path]}"} if keys else None
        response = schema[path]["POST"].Case(body=body).call_and_validate(headers=headers)
        assert response.status_code == 200, (path, response.text)
        answer = response.json()
        if path == "/recommend":
            assert answer["fallback"] is False and answer["fallback_reason"] is None
        elif path == "/customer_features":
            assert answer["found"] is True


def test_the_contract_holds_without_access_control(open_service, example_shop_demo, tmp_path):
    _run_schemathesis(open_service, tmp_path)
    _check_known_customer(open_service, _known_customer(example_shop_demo))


def test_the_contract_holds_with_access_control(keyed_service, example_shop_demo, tmp_path):
    report = _run_schemathesis(keyed_service, tmp_path, KEYED_CONFIG)
    assert STOREFRONT_KEY not in report and ANALYST_KEY not in report
    keys = {
        "/recommend": STOREFRONT_KEY,
        "/feedback": STOREFRONT_KEY,
        "/customer_features": ANALYST_KEY,
    }
    _check_known_customer(keyed_service, _known_customer(example_shop_demo), keys)
