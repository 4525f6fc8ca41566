"""The merged timeline and the canary incidents, on hand-built records."""

import pytest

from recsys_assets.monitoring.timeline import (
    ACCESS,
    CONTROL,
    LOOP,
    PIPELINE,
    canary_incidents,
    read_jsonl,
    timeline,
)

LOOP_EVENTS = [
    {"ts": "2026-11-27T10:00:05.000+00:00", "kind": "decision", "fire": True,
     "triggers": ["drift_share"], "reason": "drift"},
    {"ts": "2026-11-27T10:00:01.000+00:00", "kind": "promoted", "model_version": "v2",
     "run_id": "r1"},
]  # fmt: skip
CONTROL_AUDIT = [
    {"time": "2026-11-27T10:00:03+00:00", "subject": "alice", "action": "promote",
     "effect": "deny", "rule_id": None, "reason": "credential expired",
     "resource": {"environment": "prod", "type": "model", "plane": "control",
                  "model_version": "v2"}},
]  # fmt: skip
ACCESS_AUDIT = [
    {"time": f"2026-11-27T10:00:0{s}+00:00", "subject": "web", "action": "read_recommendations",
     "effect": "allow", "rule_id": "allow-storefront", "reason": "", "resource": {}}
    for s in (2, 4, 6)
] + [
    {"time": "2026-11-27T10:00:07+00:00", "subject": None, "action": "send_feedback",
     "effect": "deny", "rule_id": None, "reason": "unauthenticated",
     "resource": {"environment": "prod"}},
]  # fmt: skip
RUNS = [
    {"run_id": "r1", "job": "features_job", "status": "SUCCESS", "trigger": None,
     "start": 1795773600.0, "end": 1795773612.5},
]  # fmt: skip


def test_sources_merge_oldest_first():
    entries = timeline(
        loop_events=LOOP_EVENTS, control_audit=CONTROL_AUDIT, access_audit=ACCESS_AUDIT, runs=RUNS
    )
    assert [e.ts for e in entries] == sorted(e.ts for e in entries)
    by_kind = {(e.source, e.kind): e for e in entries}
    assert by_kind[(LOOP, "promoted")].summary == "model_version v2"
    assert by_kind[(LOOP, "promoted")].run_id == "r1"
    assert by_kind[(LOOP, "decision")].summary == ("fire True, triggers drift_share, reason drift")
    deny = by_kind[(CONTROL, "deny:promote")]
    assert deny.subject == "alice"
    assert "in prod (model_version v2)" in deny.summary and "credential expired" in deny.summary
    run_end = by_kind[(PIPELINE, "run_success")]
    assert run_end.summary == "features_job success after 12.5 s"
    assert by_kind[(PIPELINE, "run_started")].ts < run_end.ts


def test_data_plane_allows_are_counted_and_denies_listed():
    entries = timeline(access_audit=ACCESS_AUDIT)
    assert [(e.kind, e.source) for e in entries] == [
        ("allow:read_recommendations", ACCESS),
        ("deny:send_feedback", ACCESS),
    ]
    assert entries[0].summary.startswith("3 read_recommendations requests allowed")
    assert entries[0].ts == "2026-11-27T10:00:06.000+00:00"


def test_since_drops_what_came_before():
    entries = timeline(loop_events=LOOP_EVENTS, since="2026-11-27T10:00:02Z")
    assert [e.kind for e in entries] == ["decision"]


def test_empty_sources_are_an_empty_timeline(tmp_path):
    assert timeline() == []
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"ts": "2026-11-27T10:00:00Z", "kind": "promoted"}\n{"ts": "2026-')
    assert read_jsonl(path) == [{"ts": "2026-11-27T10:00:00Z", "kind": "promoted"}]


def canary_event(second, kind, tag="m:slow", **fields):
    return {"ts": f"2026-11-27T10:00:{second:02d}+00:00", "kind": kind, "challenger_tag": tag,
            **fields}  # fmt: skip


def test_a_canary_incident_has_start_detection_and_resolution():
    events = [
        canary_event(0, "canary_started"),
        canary_event(20, "canary_decision", action="wait"),
        canary_event(45, "canary_decision", action="rollback", reasons=["p99 3.1x"]),
        canary_event(46, "rolled_back"),
        canary_event(50, "canary_decision", action="rollback"),  # after the fact: no new one
    ]
    (incident,) = canary_incidents(events)
    assert incident.challenger == "m:slow"
    assert incident.reasons == ("p99 3.1x",)
    assert incident.mttd_s == pytest.approx(45.0)
    assert incident.mttr_s == pytest.approx(1.0)


def test_an_unresolved_or_unstarted_incident_has_no_time():
    (incident,) = canary_incidents([canary_event(5, "canary_decision", action="rollback")])
    assert incident.started is None and incident.mttd_s is None
    assert incident.resolved is None and incident.mttr_s is None


def test_a_clean_canary_is_no_incident():
    events = [canary_event(0, "canary_started"), canary_event(9, "canary_decision", action="widen")]
    assert canary_incidents(events) == []


def test_the_tail_of_a_long_log_is_read_from_a_line_start(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(f'{{"n": {n}}}\n' for n in range(100)))
    tail = read_jsonl(path, tail_bytes=30)
    assert [r["n"] for r in tail][-1] == 99 and len(tail) < 100
    assert all(set(r) == {"n"} for r in tail)
