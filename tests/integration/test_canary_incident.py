"""A slow challenger, end to end: the bento served with a challenger delayed by the drill knob
RECSYS_CHALLENGER_DELAY_MS, traffic over HTTP, then canary_report on the service's own logs."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from recsys_assets import constants as c
from recsys_assets.defs.monitoring.canary import canary_report
from recsys_assets.lib import loop
from recsys_assets.lib.served_log import SERVED_LOG_VAR, ServedLog
from tests.integration import test_service as service_tests
from tests.integration.support import free_port, served

pytestmark = [pytest.mark.integration, pytest.mark.slow]

canary_store = service_tests.canary_store  # the shared fixture: a store with a challenger
PER_VARIANT = 250  # lists each variant serves: above the policy's min_requests (200)


def _serve_and_analyse(canary_store, logs: Path, delay_ms: str, monkeypatch) -> tuple:
    """Serve with a challenger at share 0.5 (and the delay), send /recommend requests until
    each variant served PER_VARIANT lists, stop the service, materialise canary_report on its
    logs: (metadata, check evaluation, served frame)."""
    workdir, home, bento_tag, champion, challenger = canary_store
    logs.mkdir(parents=True)
    challenger_tag = f"{c.SERVING_MODEL_NAME}:{challenger}"
    paths = {
        SERVED_LOG_VAR: str(logs / "served.jsonl"),
        "RECSYS_FEEDBACK_LOG": str(logs / "feedback.jsonl"),
        "RECSYS_LOOP_LOG": str(logs / "loop.jsonl"),
        "RECSYS_REPORTS": str(logs / "reports"),
    }
    env = {
        **service_tests._canary_env(workdir, home, champion, challenger_tag, "0.5"),
        **paths,
        "RECSYS_CHALLENGER_DELAY_MS": delay_ms,
    }
    # The demo shop knows 146 customers; each is asked in turn (routing is sticky, so a
    # customer's requests all go to one variant) until both variants have enough lists.
    customers = service_tests._customers(workdir, 1_000)
    counts = {"champion": 0, "challenger": 0}
    port = free_port()
    command = [service_tests.BENTOML, "serve", bento_tag, "--host", "127.0.0.1"]
    with served([*command, "--port", str(port)], port, env, logs / "serve.log"):
        sent = 0
        while min(counts.values()) < PER_VARIANT:
            customer = customers[sent % len(customers)]
            status, answer = service_tests._call(port, "/recommend", {"customer_id": customer})
            assert status == 200, answer
            counts[answer["variant"]] += 1
            sent += 1
            assert sent < 5 * PER_VARIANT, counts
    for name, value in paths.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RECSYS_ENV", "test")
    monkeypatch.setenv("RECSYS_CHALLENGER_TAG", challenger_tag)
    monkeypatch.setenv("RECSYS_CANARY_SHARE", "0.5")
    monkeypatch.delenv("RECSYS_CANARY_SALT", raising=False)
    result = dg.materialize([canary_report])
    assert result.success
    [event] = result.get_asset_materialization_events()
    [check] = result.get_asset_check_evaluations()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    return metadata, check, ServedLog(logs / "served.jsonl").read()


def test_a_slow_challenger_is_rolled_back_and_a_normal_one_is_not(
    canary_store, tmp_path, monkeypatch
):
    slow_logs, normal_logs = tmp_path / "slow", tmp_path / "normal"
    metadata, check, frame = _serve_and_analyse(canary_store, slow_logs, "50", monkeypatch)
    assert frame["latency_ms"].notna().all()  # the service logs each request's latency
    assert (frame.loc[frame["variant"] == "challenger", "latency_ms"] >= 50).all()
    p99 = {v: metadata[f"{v}_p99_ms"] for v in ("champion", "challenger")}
    print(f"delayed challenger (50 ms): p99 {p99}")
    assert metadata["action"] == "rollback" and metadata["next_share"] == 0.0
    [reason] = metadata["reasons"]
    expected = f"p99 latency: challenger {p99['challenger']:.1f} ms vs champion "
    assert reason.startswith(expected), reason
    assert re.search(r"\d+\.\d\dx, limit 1\.50x \(and \+10 ms\)$", reason), reason
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    [event] = loop.LoopLog(slow_logs / "loop.jsonl").read([loop.CANARY_DECISION])
    assert event["action"] == "rollback"
    assert event["guardrails"]["p99_latency"]["status"] == "breached"

    metadata, check, _ = _serve_and_analyse(canary_store, normal_logs, "0", monkeypatch)
    p99 = {v: metadata[f"{v}_p99_ms"] for v in ("champion", "challenger")}
    print(f"challenger without delay: p99 {p99}, action {metadata['action']}")
    assert metadata["action"] != "rollback", metadata["reasons"]
    assert metadata["action"] in ("widen", "wait") and check.passed
    [event] = loop.LoopLog(normal_logs / "loop.jsonl").read([loop.CANARY_DECISION])
    assert event["guardrails"]["p99_latency"]["status"] == "clean"
