"""The bento served with RECSYS_TRACING=console and RECSYS_LOG_FORMAT=json: the service's log
lines are JSON, and a request's spans share the trace id its log line carries."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.serving.served_log import SERVED_LOG_VAR
from tests.integration.support import cli_env, free_port, served
from tests.integration.test_service import BENTOML

pytestmark = pytest.mark.integration

STEPS = {"candidate_lookup", "feature_read", "ranking", "business_filters"}


def _post(port: int, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/recommend",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def _json_lines(log: Path) -> tuple[list[dict], list[dict]]:
    """(service log lines, console spans) among the log's lines that parse as JSON objects."""
    records, spans = [], []
    for line in log.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "context" in value and "name" in value:
            spans.append(value)
        elif "level" in value and "message" in value:
            records.append(value)
    return records, spans


@pytest.fixture(scope="module")
def traced_service(example_shop_demo, tmp_path_factory):
    workdir, result = example_shop_demo
    assert result.returncode == 0, result.stderr
    bento_tag = re.search(r"bento: (recommender:[\w-]+)", result.stdout).group(1)
    logs = tmp_path_factory.mktemp("telemetry")
    port = free_port()
    env = {
        **cli_env(workdir),
        SERVED_LOG_VAR: str(logs / "served.jsonl"),
        "RECSYS_TRACING": "console",
        "RECSYS_LOG_FORMAT": "json",
        "RECSYS_LOG_LEVEL": "DEBUG",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export the batch of spans after 0.1 s, not 5 s
    }
    command = [BENTOML, "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)]
    with served(command, port, env, logs / "serve.log"):
        yield port, workdir, logs / "serve.log"


def _wait_for_line(log: Path, request_id: str) -> tuple[list[dict], list[dict]]:
    """The service's JSON log lines of one request (the worker's output lands soon, not at
    once); also every JSON log line, to show when the assertion fails."""
    deadline = time.monotonic() + 10
    while True:
        records, _ = _json_lines(log)
        mine = [r for r in records if r.get("request_id") == request_id]
        if mine or time.monotonic() > deadline:
            return mine, records
        time.sleep(0.2)


def _wait_for_spans(log: Path, trace_id: str, names: set[str]) -> list[dict]:
    deadline = time.monotonic() + 15
    while True:
        _, spans = _json_lines(log)
        mine = [s for s in spans if s["context"]["trace_id"] == "0x" + trace_id]
        if names <= {s["name"] for s in mine} or time.monotonic() > deadline:
            return mine
        time.sleep(0.2)


def test_a_request_logs_one_json_line_and_spans_of_the_same_trace(traced_service):
    port, workdir, log = traced_service
    profile = pd.read_parquet(workdir / "feature_repo" / "data" / "customer_profile.parquet")
    customer = str(profile[c.USER_ID].iloc[0])
    body = _post(port, {"customer_id": customer, "k": 3})
    assert not body["fallback"]

    mine, records = _wait_for_line(log, body["request_id"])
    assert len(mine) == 1, records[-5:]
    line = mine[0]
    assert line["level"] == "DEBUG" and line["logger"] == "bentoml.recommender"
    assert set(line) == {
        "ts", "level", "logger", "message", "trace_id", "span_id",
        "request_id", "model_version", "variant", "customer_id",
    }  # fmt: skip
    assert line["customer_id"] == customer and line["variant"] == "champion"
    assert line["model_version"] == body["model_version"]
    assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
    # the startup lines of the service's logger are JSON too
    assert any(r["message"].startswith("ready: model") for r in records)

    spans = _wait_for_spans(log, line["trace_id"], STEPS)
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) >= STEPS, [s["name"] for s in spans]
    request_span = next(s for s in spans if s["attributes"].get("recsys.request_id"))
    assert request_span["attributes"]["recsys.request_id"] == body["request_id"]
    assert request_span["context"]["span_id"] == "0x" + line["span_id"]  # logged in it
    for name in STEPS:
        step = by_name[name]
        assert step["parent_id"] == request_span["context"]["span_id"]
        assert step["attributes"]["recsys.model_version"] == body["model_version"]
        assert step["attributes"]["recsys.variant"] == "champion"
    assert by_name["candidate_lookup"]["attributes"]["recsys.candidates"] > 0
    # the readiness probes the test polled before the request are not traced
    assert not [s for s in _json_lines(log)[1] if "/readyz" in s["name"]]


def test_a_fallback_request_spans_name_the_reason(traced_service):
    port, _, log = traced_service
    body = _post(port, {"customer_id": "never-seen", "k": 2})
    assert body["fallback_reason"] == "unknown_customer"
    mine, records = _wait_for_line(log, body["request_id"])
    assert len(mine) == 1, records[-5:]
    line = mine[0]
    spans = _wait_for_spans(log, line["trace_id"], {"candidate_lookup", "business_filters"})
    by_name = {s["name"]: s for s in spans}
    assert {"candidate_lookup", "business_filters"} <= set(by_name)
    assert not {"feature_read", "ranking"} & set(by_name)
    assert by_name["candidate_lookup"]["attributes"]["recsys.candidates"] == 0
    filters = by_name["business_filters"]["attributes"]
    assert filters["recsys.fallback_reason"] == "unknown_customer"
