"""canary_report materialised against scratch served, feedback and loop logs."""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from recsys_assets.defs.release.canary import CANARY_CHECK, NO_CANARY, canary_report
from recsys_assets.ingestion.feedback import FeedbackEvent, FeedbackLog
from recsys_assets.monitoring import loop
from recsys_assets.release.canary.routing import CanaryState, read_canary_state, write_canary_state
from recsys_assets.serving import registry as model_registry
from recsys_assets.serving.served_log import ServedLog, ServedRecord

T0 = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The registry stage changes the analysis makes (BentoML fixes its store once per
    process, so the registry is a recorder here)."""
    calls: list[tuple] = []
    monkeypatch.setattr(model_registry, "set_stage", lambda *a, **k: calls.append((*a, k)))
    return calls


@pytest.fixture
def logs(
    scratch_logs: dict[str, Path], stages: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Path]:
    paths = {**scratch_logs, "state": Path(os.environ["RECSYS_CANARY_STATE"])}
    monkeypatch.setenv("RECSYS_CHALLENGER_TAG", "recsys-ranker:v2")
    monkeypatch.setenv("RECSYS_CANARY_SHARE", "0.1")
    monkeypatch.delenv("RECSYS_CANARY_SALT", raising=False)
    monkeypatch.delenv("RECSYS_SERVICE_URL", raising=False)
    return paths


def write_logs(
    paths: dict[str, Path],
    converted: dict[str, int],
    lists: int = 1000,
    latency_ms: dict[str, float] | None = None,
) -> None:
    """``lists`` served lists per variant, each with an impression; the first
    ``converted[variant]`` of them followed by an order. With ``latency_ms``, the lists of a
    variant named there carry latencies from that value to twice it."""
    records, events = [], []
    for variant in ("champion", "challenger"):
        for i in range(lists):
            ts = T0 + timedelta(seconds=i)
            request_id = f"{variant}-{i}"
            records.append(
                ServedRecord(
                    ts=ts,
                    request_id=request_id,
                    customer_id=f"{variant}-cust-{i}",
                    model_version="v2" if variant == "challenger" else "v1",
                    variant=variant,
                    items=["i1", "i2"],
                    scores=[0.9, 0.5],
                    fallback_reason=None,
                    as_of=ts.isoformat(),
                    latency_ms=(
                        latency_ms[variant] * (1 + i / lists)
                        if latency_ms and variant in latency_ms
                        else None
                    ),
                )
            )
            common = {"request_id": request_id, "customer_id": f"{variant}-cust-{i}"}
            events.append(
                FeedbackEvent(
                    **common, item_id="i1", feedback_type="impression", ts=ts, variant=variant
                )
            )
            if i < converted[variant]:
                events.append(
                    FeedbackEvent(
                        **common,
                        item_id="i1",
                        feedback_type="purchase",
                        ts=ts + timedelta(hours=1),
                        order_id=f"o-{request_id}",
                        order_value=40.0,
                    )
                )
    with ServedLog(paths["served"]) as served:
        served.append(records)
    FeedbackLog(paths["feedback"]).append(events)


def materialise() -> tuple[dict, dg.AssetCheckEvaluation]:
    result = dg.materialize([canary_report])
    assert result.success
    [event] = result.get_asset_materialization_events()
    [check] = result.get_asset_check_evaluations()
    return {k: v.value for k, v in event.materialization.metadata.items()}, check


def test_a_clean_canary_widens(logs):
    write_logs(logs, {"champion": 300, "challenger": 290})
    metadata, check = materialise()
    assert metadata["action"] == "widen"
    assert metadata["current_share"] == pytest.approx(0.1)
    assert metadata["next_share"] == pytest.approx(0.25)
    assert metadata["champion_requests"] == metadata["challenger_requests"] == 1000
    assert metadata["champion_conversion"] == pytest.approx(0.3)
    assert metadata["challenger_conversion"] == pytest.approx(0.29)
    assert metadata["challenger_aov"] == pytest.approx(40.0)
    assert metadata["challenger_click_through"] == 0.0  # impressions, no clicks
    assert math.isnan(metadata["challenger_p99_ms"])  # no latency samples yet
    assert check.passed
    [event] = loop.LoopLog(logs["loop"]).read([loop.CANARY_DECISION])
    assert event["action"] == "widen" and event["next_share"] == pytest.approx(0.25)
    assert event["challenger_tag"] == "recsys-ranker:v2"
    report = json.loads(Path(metadata["report_json"]).read_text())
    assert Path(metadata["report_json"]) == logs["reports"] / "monitoring" / "canary.json"
    assert report["action"] == "widen" and report["policy"]["min_requests"] == 200
    assert report["figures"]["challenger"]["converted_lists"] == 290
    # applied: the state file now carries the wider share, the salt of the environment's canary
    assert metadata["applied"] == "applied" and report["applied"]["generation"] == 1
    state = read_canary_state(logs["state"])
    assert (state.challenger_tag, state.share, state.salt) == ("recsys-ranker:v2", 0.25,
                                                               "recsys-ranker:v2")  # fmt: skip
    [widened] = loop.LoopLog(logs["loop"]).read([loop.CANARY_WIDENED])
    assert widened["from_share"] == pytest.approx(0.1) and widened["share"] == 0.25
    # errors were not read: the error rate is not judged, and the report says why
    assert report["guardrails"]["error_rate"]["status"] == "not judged"
    assert "RECSYS_SERVICE_URL is not set" in report["guardrails"]["error_rate"]["text"]


def test_a_clearly_worse_challenger_is_rolled_back(logs, stages):
    write_logs(logs, {"champion": 300, "challenger": 100})
    metadata, check = materialise()
    assert metadata["action"] == "rollback"
    assert metadata["next_share"] == 0.0
    [reason] = metadata["reasons"]
    assert reason.startswith("conversion: challenger 10.00% (100 of 1000 lists)")
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "rollback (share 0.1 -> 0)" in check.description
    [event] = loop.LoopLog(logs["loop"]).read([loop.CANARY_DECISION])
    assert event["action"] == "rollback"
    assert event["figures"]["challenger"]["conversion"] == pytest.approx(0.1)
    assert event["guardrails"]["conversion"]["status"] == "breached"
    state = read_canary_state(logs["state"])
    assert state.challenger_tag is None and state.share == 0.0
    assert stages == [("recsys-ranker:v2", "rolled_back", {"rollback_reason": "canary-conversion"})]
    [rolled] = loop.LoopLog(logs["loop"]).read([loop.ROLLED_BACK])
    assert rolled["challenger_tag"] == "recsys-ranker:v2" and rolled["detected_at"] == event["ts"]
    assert metadata["applied"] == "applied"
    # analysed again: the decision is about a challenger no longer served, nothing changes
    write_logs(logs, {"champion": 0, "challenger": 0}, lists=0)
    assert materialise()[0]["status"] == NO_CANARY  # the state file: no challenger any more
    assert read_canary_state(logs["state"]).generation == state.generation


def test_too_little_traffic_waits(logs):
    write_logs(logs, {"champion": 30, "challenger": 30}, lists=100)
    metadata, check = materialise()
    assert metadata["action"] == "wait" and metadata["next_share"] == pytest.approx(0.1)
    assert check.passed and metadata["logged"]
    again, _ = materialise()  # still waiting: nothing new for the loop log
    assert again["action"] == "wait" and not again["logged"]
    assert len(loop.LoopLog(logs["loop"]).read([loop.CANARY_DECISION])) == 1
    write_logs(logs, {"champion": 300, "challenger": 290})  # the traffic arrives
    decided, _ = materialise()
    assert decided["action"] == "widen" and decided["logged"]
    actions = [e["action"] for e in loop.LoopLog(logs["loop"]).read([loop.CANARY_DECISION])]
    assert actions == ["wait", "widen"]


def test_without_a_challenger_no_canary_running(logs, monkeypatch):
    monkeypatch.delenv("RECSYS_CHALLENGER_TAG")
    write_logs(logs, {"champion": 300, "challenger": 100})
    metadata, check = materialise()
    assert metadata["status"] == NO_CANARY
    assert check.passed and check.description == NO_CANARY
    assert loop.LoopLog(logs["loop"]).read() == []
    assert json.loads(Path(metadata["report_json"]).read_text()) == {"status": NO_CANARY}


def test_check_name():
    assert CANARY_CHECK in {key.name for key in canary_report.check_keys}


def test_a_slow_challenger_is_rolled_back_on_served_log_latencies(logs):
    write_logs(logs, {"champion": 300, "challenger": 300}, latency_ms={"champion": 5.0,
               "challenger": 50.0})  # fmt: skip
    metadata, check = materialise()
    assert metadata["action"] == "rollback"
    [reason] = metadata["reasons"]
    assert reason.startswith("p99 latency: challenger 99.5 ms vs champion 9.9 ms: 10.00x")
    assert metadata["champion_p99_ms"] == pytest.approx(9.95, abs=0.01)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    [event] = loop.LoopLog(logs["loop"]).read([loop.CANARY_DECISION])
    assert event["guardrails"]["p99_latency"]["status"] == "breached"
    assert event["figures"]["challenger"]["latency_samples"] == 1000


def test_equal_latencies_keep_p99_clean(logs):
    write_logs(logs, {"champion": 300, "challenger": 300}, latency_ms={"champion": 5.0,
               "challenger": 5.0})  # fmt: skip
    metadata, check = materialise()
    assert metadata["action"] == "widen" and check.passed
    report = json.loads(Path(metadata["report_json"]).read_text())
    assert report["guardrails"]["p99_latency"]["status"] == "clean"


def test_the_state_file_overrides_the_environment(logs):
    write_canary_state(logs["state"], CanaryState("recsys-ranker:v2", 0.5, "salt-9", 7))
    write_logs(logs, {"champion": 300, "challenger": 290})
    metadata, _ = materialise()
    # at 0.5 the next step is every customer: the clean canary is promoted
    assert metadata["current_share"] == 0.5 and metadata["next_share"] == 1.0
    assert metadata["action"] == "promote"
    state = read_canary_state(logs["state"])
    assert (state.share, state.salt, state.generation) == (1.0, "salt-9", 8)
    assert len(loop.LoopLog(logs["loop"]).read([loop.CANARY_PROMOTED])) == 1


@contextlib.contextmanager
def metrics_server(text: str):
    """A local HTTP server answering GET /metrics with ``text``: its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = text.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_error_counts_from_the_service_metrics_roll_back(logs, monkeypatch, stages):
    text = (
        'recsys_errors_total{endpoint="recommend",variant="champion"} 1.0\n'
        'recsys_errors_total{endpoint="recommend",variant="challenger"} 40.0\n'
    )
    write_logs(logs, {"champion": 300, "challenger": 300})
    with metrics_server(text) as url:
        monkeypatch.setenv("RECSYS_SERVICE_URL", url + "/")
        metadata, check = materialise()
    assert metadata["action"] == "rollback" and not check.passed
    assert metadata["challenger_errors"] == 40 and metadata["champion_errors"] == 1
    [reason] = metadata["reasons"]
    assert reason.startswith("error rate: challenger 3.85% (40 of 1040 requests)"), reason
    assert read_canary_state(logs["state"]).challenger_tag is None
    assert stages[0][:2] == ("recsys-ranker:v2", "rolled_back")


def test_error_counts_of_several_replicas_are_summed(logs, monkeypatch):
    write_logs(logs, {"champion": 300, "challenger": 300})
    one = 'recsys_errors_total{endpoint="recommend",variant="challenger"} 15.0\n'
    two = 'recsys_errors_total{endpoint="recommend",variant="challenger"} 25.0\n'
    with metrics_server(one) as first, metrics_server(two) as second:
        monkeypatch.setenv("RECSYS_SERVICE_URL", f"{first}, {second}/")
        metadata, _ = materialise()
    assert metadata["challenger_errors"] == 40 and metadata["action"] == "rollback"
    logs["state"].unlink()  # the environment's canary again
    with metrics_server("") as gone:
        pass  # stopped: one replica that cannot be read leaves the sum unjudged
    with metrics_server(one) as first:
        monkeypatch.setenv("RECSYS_SERVICE_URL", f"{first},{gone}")
        metadata, _ = materialise()
    assert metadata["guardrails"]["error_rate"]["status"] == "not judged"
    assert gone in metadata["guardrails"]["error_rate"]["text"]


def test_an_unreachable_service_leaves_errors_unjudged(logs, monkeypatch):
    with metrics_server("") as url:
        pass  # stopped: nothing listens there any more
    monkeypatch.setenv("RECSYS_SERVICE_URL", url)
    write_logs(logs, {"champion": 300, "challenger": 300})
    metadata, check = materialise()
    assert metadata["action"] == "widen" and check.passed
    guard = metadata["guardrails"]["error_rate"]
    assert guard["status"] == "not judged"
    assert guard["text"].startswith(f"error rate not judged: the service's metrics at {url}")


def test_the_canary_sensor_analyses_only_while_a_canary_runs(logs):
    from recsys_assets.defs.release.canary_sensor import canary_sensor

    def tick() -> dg.SensorResult:
        context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral())
        return canary_sensor(context)

    [request] = tick().run_requests  # the environment's canary: v2 at 0.1
    assert request.tags["recsys/challenger"] == "recsys-ranker:v2"
    for share in (0.0, 1.0):  # rolled back, or promoted: the canary is over
        write_canary_state(logs["state"], CanaryState("recsys-ranker:v2", share, "s", 2))
        assert tick().skip_reason.skip_message == "no canary running"
    write_canary_state(logs["state"], CanaryState(None, 0.0, "s", 3))
    assert tick().skip_reason.skip_message == "no canary running"
    logs["state"].write_text("{")
    assert tick().skip_reason.skip_message.startswith("canary state unreadable")


def tighten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **canary) -> dict:
    """The test environment with its file's ``canary:`` block changed by ``canary`` (read from
    a scratch copy of config/environments/): the block as written."""
    import yaml

    from recsys_assets.config import settings

    scratch = tmp_path / "environments"
    scratch.mkdir()
    for source in settings.ENVIRONMENTS_DIR.glob("*.yaml"):
        (scratch / source.name).write_text(source.read_text())
    raw = yaml.safe_load((scratch / "test.yaml").read_text())
    raw["canary"].update(canary)
    (scratch / "test.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(settings, "ENVIRONMENTS_DIR", scratch)
    return raw["canary"]


def test_the_environment_s_tighter_latency_guardrail_rolls_back(logs, tmp_path, monkeypatch):
    # challenger p99 11.9 ms vs champion 9.9 ms: 1.2x and 2 ms slower, within the defaults
    latency_ms = {"champion": 5.0, "challenger": 6.0}
    write_logs(logs, {"champion": 300, "challenger": 300}, latency_ms=latency_ms)
    metadata, check = materialise()
    assert metadata["action"] == "widen" and check.passed
    assert metadata["environment"] == "test"
    assert metadata["policy"]["max_p99_ratio"] == 1.5  # the test environment's file
    logs["state"].unlink()  # the environment's canary again, at 0.1

    written = tighten(tmp_path, monkeypatch, max_p99_ratio=1.1, min_p99_increase_ms=1.0)
    metadata, check = materialise()
    assert metadata["action"] == "rollback" and not check.passed
    [reason] = metadata["reasons"]
    assert reason.startswith("p99 latency: challenger 11.9 ms vs champion 9.9 ms: 1.20x")
    assert "limit 1.10x (and +1 ms)" in reason
    # the thresholds that judged it: in the metadata, the report and the loop event
    assert metadata["policy"] == written
    report = json.loads(Path(metadata["report_json"]).read_text())
    assert report["policy"] == written and report["environment"] == "test"
    event = loop.LoopLog(logs["loop"]).read([loop.CANARY_DECISION])[-1]
    assert event["action"] == "rollback" and event["policy"]["max_p99_ratio"] == 1.1
