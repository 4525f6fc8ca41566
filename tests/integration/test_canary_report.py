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
from recsys_assets.release.canary.baseline import baseline_path
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
    *,
    start: datetime = T0,
    challenger_version: str = "v2",
) -> None:
    """``lists`` served lists per variant from ``start`` on (one a second), each with an
    impression; the first ``converted[variant]`` of them followed by an order. With
    ``latency_ms``, the lists of a variant named there carry latencies from that value to twice
    it. The challenger's lists are model ``challenger_version``'s."""
    records, events = [], []
    for variant in ("champion", "challenger"):
        for i in range(lists):
            ts = start + timedelta(seconds=i)
            request_id = f"{variant}-{challenger_version}-{start:%H%M%S}-{i}"
            records.append(
                ServedRecord(
                    ts=ts,
                    request_id=request_id,
                    customer_id=f"{variant}-cust-{i}",
                    model_version=challenger_version if variant == "challenger" else "v1",
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


def errors_text(champion: int, challenger: int) -> str:
    """The service's /metrics lines of its failed /recommend requests per variant."""
    return (
        f'recsys_errors_total{{endpoint="recommend",variant="champion"}} {champion}.0\n'
        f'recsys_errors_total{{endpoint="recommend",variant="challenger"}} {challenger}.0\n'
    )


def after_now() -> datetime:
    """A moment just after now: lists written from here on come after a baseline taken now."""
    return datetime.now(UTC) + timedelta(seconds=1)


@contextlib.contextmanager
def metrics_server(text: str | list[str]):
    """A local HTTP server answering GET /metrics with ``text`` (a list: its last element,
    so that a test can move the counters on): its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = (text[-1] if isinstance(text, list) else text).encode()
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


def test_error_counts_since_the_experiments_baseline_roll_back(logs, monkeypatch, stages):
    # the service has counted errors before: an earlier experiment's, the champion's
    counters = [errors_text(champion=5, challenger=7)]
    write_logs(logs, {"champion": 300, "challenger": 300})  # before the analysis first looked
    with metrics_server(counters) as url:
        monkeypatch.setenv("RECSYS_SERVICE_URL", url + "/")
        first, check = materialise()  # the baseline: counted from now on, lists too
        assert first["action"] == "wait" and check.passed
        assert first["experiment"]["error_baseline"].startswith("error counters' baseline")
        assert (first["challenger_requests"], first["challenger_errors"]) == (0, 0)
        baseline = json.loads(baseline_path(logs["state"]).read_text())  # beside the state
        assert baseline["counters"] == {url: {"champion": 5, "challenger": 7}}
        write_logs(logs, {"champion": 300, "challenger": 300}, start=after_now())
        counters.append(errors_text(champion=5 + 1, challenger=7 + 40))
        metadata, check = materialise()
    assert metadata["action"] == "rollback" and not check.passed
    assert metadata["challenger_errors"] == 40 and metadata["champion_errors"] == 1
    assert metadata["challenger_requests"] == 1000  # this span's lists, not the earlier ones
    [reason] = metadata["reasons"]
    assert reason.startswith("error rate: challenger 3.85% (40 of 1040 requests)"), reason
    assert metadata["experiment"]["error_baseline"].startswith("errors counted since ")
    assert read_canary_state(logs["state"]).challenger_tag is None
    assert stages[0][:2] == ("recsys-ranker:v2", "rolled_back")


def test_error_counts_of_several_replicas_are_summed(logs, monkeypatch):
    one, two = [errors_text(0, 5)], [errors_text(0, 10)]
    with metrics_server(one) as first, metrics_server(two) as second:
        monkeypatch.setenv("RECSYS_SERVICE_URL", f"{first}, {second}/")
        assert materialise()[0]["action"] == "wait"  # the baseline, per replica
        write_logs(logs, {"champion": 300, "challenger": 300}, start=after_now())
        one.append(errors_text(0, 5 + 15))
        two.append(errors_text(0, 10 + 25))
        metadata, _ = materialise()
    assert metadata["challenger_errors"] == 40 and metadata["action"] == "rollback"


def test_an_unreachable_service_makes_the_canary_wait(logs, monkeypatch):
    with metrics_server("") as url:
        pass  # stopped: nothing listens there any more
    monkeypatch.setenv("RECSYS_SERVICE_URL", url)
    write_logs(logs, {"champion": 300, "challenger": 300})  # clean: it would widen
    metadata, check = materialise()
    assert metadata["action"] == "wait" and metadata["next_share"] == pytest.approx(0.1)
    assert check.passed and metadata["applied"] == "nothing to do"
    unread = f"the service's metrics at {url}/metrics could not be read"
    assert metadata["reasons"][0].startswith(
        f"waiting at share 0.1, neither widening nor promoting: {unread}"
    )  # the reason, in the metadata, the report and the loop event
    assert unread in check.description
    [event] = loop.LoopLog(logs["loop"]).read([loop.CANARY_DECISION])
    assert event["action"] == "wait" and event["reasons"] == metadata["reasons"]
    guard = metadata["guardrails"]["error_rate"]
    assert guard["status"] == "not judged"
    assert guard["text"].startswith(f"error rate not judged: {unread}")
    assert not logs["state"].exists()  # the canary stays at 0.1


def test_one_replica_that_cannot_be_read_makes_the_canary_wait(logs, monkeypatch):
    write_logs(logs, {"champion": 300, "challenger": 300})
    with metrics_server("") as gone:
        pass  # stopped: the others' sum would understate the errors
    with metrics_server(errors_text(0, 15)) as first:
        monkeypatch.setenv("RECSYS_SERVICE_URL", f"{first},{gone}")
        metadata, _ = materialise()
    assert metadata["action"] == "wait"
    assert metadata["guardrails"]["error_rate"]["status"] == "not judged"
    assert gone in metadata["guardrails"]["error_rate"]["text"] and gone in metadata["reasons"][0]


def test_an_earlier_challengers_lists_do_not_count_for_a_new_one(logs):
    write_logs(logs, {"champion": 300, "challenger": 290})  # v2's experiment, at T0
    started = T0 + timedelta(hours=2)
    write_canary_state(logs["state"], CanaryState("recsys-ranker:v3", 0.1, "recsys-ranker:v3",
                                                  5, started_at=started.isoformat()))  # fmt: skip
    metadata, check = materialise()
    assert metadata["action"] == "wait" and check.passed  # nothing of v3's own yet
    assert metadata["reasons"][0].startswith("waiting for traffic: challenger 0 and champion 0")
    assert metadata["experiment"]["since"] == started.isoformat()
    assert metadata["experiment"]["challenger_version"] == "v3"
    write_logs(logs, {"champion": 100, "challenger": 100}, lists=150,
               start=started + timedelta(minutes=1), challenger_version="v3")  # fmt: skip
    metadata, _ = materialise()  # 150 lists each: still below min_requests (200)
    assert metadata["action"] == "wait"
    assert (metadata["champion_requests"], metadata["challenger_requests"]) == (150, 150)
    assert metadata["experiment"]["served_lists"] == 300
    write_logs(logs, {"champion": 100, "challenger": 100}, lists=150,
               start=started + timedelta(hours=1), challenger_version="v3")  # fmt: skip
    metadata, _ = materialise()
    assert metadata["action"] == "widen" and metadata["challenger_requests"] == 300
    assert metadata["challenger_conversion"] == pytest.approx(200 / 300)


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


def test_a_promotion_the_policy_leaves_to_a_release_manager_waits(logs, tmp_path, monkeypatch):
    """Where the analyser may not promote (prod's rules; here the test environment with the
    rule that allows it below prod taken out), a clean last step changes nothing and says so
    once, however often the analysis runs while it waits."""
    import functools

    import yaml

    from recsys_assets.access.policy import DEFAULT_POLICY_PATH
    from recsys_assets.defs.release import canary as asset_module

    policy = yaml.safe_load(Path(DEFAULT_POLICY_PATH).read_text())
    policy["rules"] = [r for r in policy["rules"] if r["id"] != "allow-canary-promote-below-prod"]
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    monkeypatch.setattr(asset_module, "apply_decision", functools.partial(
        asset_module.apply_decision, policy_path=tmp_path / "policy.yaml"))  # fmt: skip
    write_canary_state(logs["state"], CanaryState("recsys-ranker:v2", 0.5, "salt-9", 7))
    write_logs(logs, {"champion": 300, "challenger": 290})
    for run in range(2):
        metadata, check = materialise()
        assert metadata["action"] == "promote" and check.passed
        assert metadata["applied"] == "awaiting approval"
        assert "python -m recsys_assets canary promote" in metadata["applied_detail"]
        assert metadata["logged"] is (run == 0)  # the same decision again: not logged again
    state = read_canary_state(logs["state"])
    assert (state.share, state.generation) == (0.5, 7)  # nothing changed
    log = loop.LoopLog(logs["loop"])
    assert [e["action"] for e in log.read([loop.CANARY_DECISION])] == ["promote"]
    [waiting] = log.read([loop.AWAITING_APPROVAL])
    assert waiting["challenger_tag"] == "recsys-ranker:v2" and waiting["share"] == 0.5
    assert log.read([loop.CANARY_PROMOTED]) == []
