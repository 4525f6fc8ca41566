"""A bad challenger, end to end and rolled back by the system: the bento served with a
challenger (canary state file, share 0.5) that the drill knobs make slow
(RECSYS_CHALLENGER_DELAY_MS) or failing (RECSYS_CHALLENGER_ERROR_RATE), traffic over HTTP,
canary_report on the service's own logs and /metrics, and the service following the state file
the analysis wrote: every customer back on the champion within a couple of seconds."""

from __future__ import annotations

import re
import time
from pathlib import Path

import dagster as dg
import pytest

from recsys_assets.core import constants as c
from recsys_assets.defs.release.canary import canary_report
from recsys_assets.monitoring import loop
from recsys_assets.release import ledger as releases
from recsys_assets.release.canary.routing import CanaryState, read_canary_state, write_canary_state
from recsys_assets.serving import registry as model_registry
from recsys_assets.serving.served_log import SERVED_LOG_VAR, ServedLog
from tests.integration import test_service as service_tests
from tests.integration.support import free_port, served

pytestmark = [pytest.mark.integration, pytest.mark.slow]

canary_store = service_tests.canary_store  # the shared fixture: a store with a challenger
PER_VARIANT = 250  # requests each variant answers: above the policy's min_requests (200)
FOLLOW_S = 3.0  # the service re-reads the state file at most once a second


def _serve_and_analyse(canary_store, logs: Path, knobs: dict[str, str], monkeypatch):
    """Serve with a challenger at share 0.5 from the canary state file (and the drill
    ``knobs``), materialise canary_report once before any traffic (as the canary sensor would
    right after the start: it records the error counters' baseline and waits for traffic), send
    /recommend requests until each variant answered PER_VARIANT of them, then, with the service
    still up, materialise canary_report on its logs and its /metrics again; after that, send
    requests until they follow the state file the analysis wrote. Returns
    (metadata, check evaluation, served frame, variants answered after the analysis, metrics,
    registry stage changes)."""
    workdir, home, bento_tag, champion, challenger = canary_store
    logs.mkdir(parents=True)
    challenger_tag = f"{c.SERVING_MODEL_NAME}:{challenger}"
    state_path = logs / "canary.json"
    write_canary_state(state_path, CanaryState(challenger_tag, 0.5, challenger_tag, 1))
    paths = {
        SERVED_LOG_VAR: str(logs / "served.jsonl"),
        "RECSYS_FEEDBACK_LOG": str(logs / "feedback.jsonl"),
        "RECSYS_LOOP_LOG": str(logs / "loop.jsonl"),
        "RECSYS_REPORTS": str(logs / "reports"),
        "RECSYS_CANARY_STATE": str(state_path),
    }
    env = {
        # the environment names no challenger: the state file alone starts the canary
        **service_tests._canary_env(workdir, home, champion, "", "0"),
        **paths,
        **knobs,
    }
    # The demo shop knows 146 customers; each is asked in turn (routing is sticky, so a
    # customer's requests all go to one variant) until both variants answered enough. Only
    # the challenger fails (RECSYS_CHALLENGER_ERROR_RATE), so a 500 is one of its answers.
    customers = service_tests._customers(workdir, 1_000)
    counts = {"champion": 0, "challenger": 0}
    port = free_port()
    command = [service_tests.BENTOML, "serve", bento_tag, "--host", "127.0.0.1"]
    with served([*command, "--port", str(port)], port, env, logs / "serve.log"):
        for name, value in paths.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("RECSYS_ENV", "test")
        monkeypatch.setenv("RECSYS_SERVICE_URL", f"http://127.0.0.1:{port}")
        for name in ("RECSYS_CHALLENGER_TAG", "RECSYS_CANARY_SHARE", "RECSYS_CANARY_SALT"):
            monkeypatch.delenv(name, raising=False)
        stages: list[tuple] = []  # BentoML fixes its store once per process: a recorder
        monkeypatch.setattr(model_registry, "set_stage", lambda *a, **k: stages.append(a))
        assert dg.materialize([canary_report]).success  # the baseline: waiting for traffic
        sent = 0
        while min(counts.values()) < PER_VARIANT:
            customer = customers[sent % len(customers)]
            status, answer = service_tests._call(port, "/recommend", {"customer_id": customer})
            if status == 500 and "RECSYS_CHALLENGER_ERROR_RATE" in knobs:
                counts["challenger"] += 1
            else:
                assert status == 200, answer
                counts[answer["variant"]] += 1
                if counts[answer["variant"]] % 4 == 0:  # a quarter of either variant's lists sell
                    _buy(port, answer)
            sent += 1
            assert sent < 5 * PER_VARIANT, counts
        result = dg.materialize([canary_report])
        assert result.success
        after = _follow(port, customers[:40])
        _, metrics = service_tests._call(port, c.METRICS_PATH)
    [event] = result.get_asset_materialization_events()
    [check] = result.get_asset_check_evaluations()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    return metadata, check, ServedLog(logs / "served.jsonl").read(), after, metrics, stages


def _buy(port: int, answer: dict) -> None:
    """The customer buys the first item of the list ``answer`` gave: a purchase in the
    feedback log, so that the analysis can judge conversion (a promotion needs it)."""
    purchase = {
        "request_id": answer["request_id"], "customer_id": answer["customer_id"],
        "item_id": answer["items"][0]["item_id"], "type": "purchase",
        "order_id": "order-" + answer["request_id"], "order_value": 20.0,
        "variant": answer["variant"],
    }  # fmt: skip
    status, body = service_tests._call(port, "/feedback", {"events": [purchase]})
    assert status == 200, body


def _follow(port: int, customers: list[str]) -> list[str]:
    """Ask for ``customers`` again and again until two rounds in a row answer the same
    variants (at most FOLLOW_S seconds, the state file being re-read at most once a second);
    the variants of the last round, whatever their status (a 500 counts as "failed")."""
    deadline = time.monotonic() + FOLLOW_S
    rounds: list[list[str]] = []
    while True:
        answers = []
        for customer in customers:
            status, answer = service_tests._call(port, "/recommend", {"customer_id": customer})
            answers.append(answer["variant"] if status == 200 else "failed")
        rounds.append(answers)
        settled = len(rounds) >= 2 and rounds[-1] == rounds[-2] and len(set(answers)) == 1
        if settled or time.monotonic() > deadline:
            return answers
        time.sleep(0.2)


def _rolled_back(logs: Path, challenger_tag: str, metadata: dict, guardrail: str) -> None:
    """The state file has no challenger any more and the loop log says why and when."""
    state = read_canary_state(logs / "canary.json")
    assert state.challenger_tag is None and state.share == 0.0 and state.generation == 2
    assert state.updated_by == "canary-analyser"
    waited, decision = loop.LoopLog(logs / "loop.jsonl").read([loop.CANARY_DECISION])
    assert waited["action"] == "wait" and decision["action"] == "rollback"
    assert decision["guardrails"][guardrail]["status"] == "breached"
    [rolled] = loop.LoopLog(logs / "loop.jsonl").read([loop.ROLLED_BACK])
    assert rolled["challenger_tag"] == challenger_tag and rolled["detected_at"] == decision["ts"]
    assert metadata["applied"] == "applied"


def test_a_slow_challenger_is_rolled_back_by_the_system(canary_store, tmp_path, monkeypatch):
    logs = tmp_path / "slow"
    metadata, check, frame, after, metrics, stages = _serve_and_analyse(
        canary_store, logs, {"RECSYS_CHALLENGER_DELAY_MS": "50"}, monkeypatch
    )
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
    assert metadata["guardrails"]["error_rate"]["status"] == "clean"  # read from /metrics
    challenger_tag = f"{c.SERVING_MODEL_NAME}:{canary_store[4]}"
    _rolled_back(logs, challenger_tag, metadata, "p99_latency")
    assert stages == [(challenger_tag, "rolled_back")]
    # the service followed the state file: every customer on the champion again
    assert set(after) == {"champion"}, after
    assert re.search(r"^recsys_canary_share 0\.0$", metrics, re.MULTILINE), metrics


def test_a_normal_challenger_is_promoted(canary_store, tmp_path, monkeypatch):
    logs = tmp_path / "normal"
    monkeypatch.setenv(releases.HOME_VAR_PREFIX + "TEST", str(canary_store[1]))  # its registry
    metadata, check, _, after, metrics, stages = _serve_and_analyse(
        canary_store, logs, {}, monkeypatch
    )
    p99 = {v: metadata[f"{v}_p99_ms"] for v in ("champion", "challenger")}
    print(f"challenger without delay: p99 {p99}, action {metadata['action']}")
    # at share 0.5 the next step is every customer: a clean canary is promoted
    assert metadata["action"] == "promote" and check.passed, metadata["reasons"]
    assert metadata["next_share"] == 1.0 and metadata["applied"] == "applied"
    waited, event = loop.LoopLog(logs / "loop.jsonl").read([loop.CANARY_DECISION])
    assert waited["action"] == "wait" and event["action"] == "promote"
    assert event["guardrails"]["p99_latency"]["status"] == "clean"
    assert event["guardrails"]["error_rate"]["status"] == "clean"
    assert event["guardrails"]["conversion"]["status"] == "clean"  # judged: a promotion needs it
    state = read_canary_state(logs / "canary.json")
    challenger_tag = f"{c.SERVING_MODEL_NAME}:{canary_store[4]}"
    assert state.share == 1.0 and state.generation == 2
    assert stages == [(challenger_tag, "promoted")]
    assert len(loop.LoopLog(logs / "loop.jsonl").read([loop.CANARY_PROMOTED])) == 1
    # the release ledger follows: the challenger is the environment's release now
    release = releases.current_release("test")
    assert release["model_tag"] == challenger_tag and "recorded" in metadata["applied_state"][
        "release"]  # fmt: skip
    assert release["released_by"]["id"] == "canary-analyser"
    assert set(after) == {"challenger"}, after  # share 1.0: everyone on the challenger
    assert re.search(r"^recsys_canary_share 1\.0$", metrics, re.MULTILINE), metrics


def test_a_failing_challenger_is_rolled_back_on_its_error_rate(canary_store, tmp_path, monkeypatch):
    logs = tmp_path / "failing"
    metadata, check, _, after, metrics, stages = _serve_and_analyse(
        canary_store, logs, {"RECSYS_CHALLENGER_ERROR_RATE": "0.5"}, monkeypatch
    )
    errors = {v: metadata[f"{v}_errors"] for v in ("champion", "challenger")}
    print(f"failing challenger (error rate 0.5): errors {errors}")
    assert errors["champion"] == 0 and errors["challenger"] >= 80
    assert metadata["action"] == "rollback" and not check.passed
    assert metadata["reasons"][0].startswith("error rate: challenger "), metadata["reasons"]
    challenger_tag = f"{c.SERVING_MODEL_NAME}:{canary_store[4]}"
    _rolled_back(logs, challenger_tag, metadata, "error_rate")
    assert stages == [(challenger_tag, "rolled_back")]
    assert set(after) == {"champion"}, after  # no more failures: the champion answers all
    assert re.search(
        r'^recsys_errors_total\{endpoint="recommend",variant="challenger"\} [1-9]', metrics, re.M
    ), metrics


def test_the_service_follows_the_state_file_while_serving(canary_store, tmp_path):
    """No challenger at start; a state file naming one starts the canary without a restart
    (the model loads in the background), a challenger that cannot be loaded and a corrupt
    file change nothing, and every request is answered throughout."""
    workdir, home, bento_tag, champion, challenger = canary_store
    challenger_tag = f"{c.SERVING_MODEL_NAME}:{challenger}"
    state_path = tmp_path / "canary.json"
    env = {
        **service_tests._canary_env(workdir, home, champion, "", "0"),
        SERVED_LOG_VAR: str(tmp_path / "served.jsonl"),
        "RECSYS_FEEDBACK_LOG": str(tmp_path / "feedback.jsonl"),
        "RECSYS_CANARY_STATE": str(state_path),
    }
    customers = service_tests._customers(workdir, 40)
    port = free_port()
    command = [service_tests.BENTOML, "serve", bento_tag, "--host", "127.0.0.1"]
    with served([*command, "--port", str(port)], port, env, tmp_path / "serve.log"):
        assert set(_follow(port, customers)) == {"champion"}  # no file: the environment's
        write_canary_state(state_path, CanaryState(challenger_tag, 0.5, "salt-1", 1))
        deadline = time.monotonic() + 60  # loading the challenger takes a few seconds
        variants: set[str] = set()
        while variants != {"champion", "challenger"} and time.monotonic() < deadline:
            variants = set(_follow(port, customers))
            assert "failed" not in variants
        assert variants == {"champion", "challenger"}
        write_canary_state(
            state_path, CanaryState(f"{c.SERVING_MODEL_NAME}:doesnotexist", 0.5, "salt-1", 2)
        )
        time.sleep(FOLLOW_S)
        assert "failed" not in _follow(port, customers)  # the old canary keeps serving
        state_path.write_text("{half a file")
        time.sleep(FOLLOW_S)
        assert set(_follow(port, customers)) == {"champion", "challenger"}
        _, metrics = service_tests._call(port, c.METRICS_PATH)
    assert re.search(r"^recsys_challenger_load_failures_total 1\.0$", metrics, re.M), metrics
    assert re.search(r"^recsys_canary_share 0\.5$", metrics, re.MULTILINE), metrics
    text = (tmp_path / "serve.log").read_text()
    assert "canary: challenger recsys-ranker:doesnotexist not loaded" in text, text[-3000:]
    assert "canary state unreadable" in text
