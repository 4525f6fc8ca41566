"""The feedback log: durable appends from many processes, crash-tolerant reads, validation,
the mapping onto canonical events, and reading it back as an ingestion source."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.ingestion.feedback import (
    FEEDBACK_TYPES,
    TORN_LINE_MARK,
    FeedbackEvent,
    FeedbackLog,
    FeedbackLogError,
    events_to_frame,
    to_canonical_events,
)
from recsys_assets.ingestion.sources import (
    SourceError,
    load_events,
    load_source_spec,
    source_fingerprint,
)
from recsys_assets.ingestion.validation import (
    RawEventSchema,
    contract_violations,
    split_valid_and_quarantined,
)

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def event(**overrides) -> FeedbackEvent:
    fields = {
        "request_id": "req-1",
        "customer_id": "17850",
        "item_id": "85123A",
        "feedback_type": "click",
        "ts": T0,
    }
    return FeedbackEvent(**{**fields, **overrides})


def sample_events() -> list[FeedbackEvent]:
    return [
        event(feedback_type="impression", position=1, model_version="v3", variant="B"),
        event(feedback_type="click", ts=T0 + timedelta(seconds=5), position=1),
        event(feedback_type="add_to_cart", ts=T0 + timedelta(seconds=9), quantity=2),
        event(
            feedback_type="purchase",
            ts=datetime(2024, 5, 1, 14, 0, 30, 123456, tzinfo=timezone(timedelta(hours=2))),
            quantity=2,
            unit_price=2.55,
            order_id="536365",
            order_value=15.3,
        ),
    ]


# --- append and read ----------------------------------------------------------------------


def test_round_trip_append_then_read_equals(tmp_path):
    log = FeedbackLog(tmp_path / "new" / "dir" / "feedback.jsonl")  # directory made on append
    events = sample_events()
    assert log.append(events[:1]) == 1
    assert log.append(events[1:]) == 3

    frame, skipped = log.read_with_report()
    assert skipped == 0
    pd.testing.assert_frame_equal(frame, events_to_frame(events))
    assert frame["line"].tolist() == [0, 1, 2, 3]
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    purchase = frame.iloc[3]
    assert purchase["ts"] == pd.Timestamp("2024-05-01 12:00:30.123456", tz="UTC")  # +02:00 -> UTC
    amounts = (purchase["quantity"], purchase["unit_price"], purchase["order_value"])
    assert amounts == (2, 2.55, 15.3)
    assert purchase["order_id"] == "536365"
    assert pd.isna(purchase["position"]) and pd.isna(purchase["model_version"])
    impression = frame.iloc[0]
    assert (impression["position"], impression["model_version"], impression["variant"]) == (
        1,
        "v3",
        "B",
    )
    assert pd.isna(impression["unit_price"])
    # One JSON object per line, newline-terminated.
    lines = log.path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and [json.loads(line)["feedback_type"] for line in lines[:-1]] == [
        "impression",
        "click",
        "add_to_cart",
        "purchase",
    ]


def test_empty_batch_writes_nothing_and_missing_log_reads_empty(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    assert log.append([]) == 0
    assert not log.path.exists()
    frame, skipped = log.read_with_report()
    assert frame.empty and skipped == 0
    assert list(frame.columns) == list(events_to_frame(sample_events()).columns)


def test_append_rejects_other_objects(tmp_path):
    with pytest.raises(TypeError, match="FeedbackEvent"):
        FeedbackLog(tmp_path / "f.jsonl").append([{"request_id": "r"}])


def _append_from_worker(path: str, worker: int, n_events: int, start) -> None:
    """One server worker: waits for the others, then appends its events in batches of 1..7."""
    log = FeedbackLog(path)
    start.wait()
    sent = 0
    while sent < n_events:
        size = min(1 + sent % 7, n_events - sent)
        log.append(
            event(
                request_id=f"w{worker}-{sent + i}",
                item_id="X" * 200,  # long lines: a torn or interleaved write would show
                ts=T0 + timedelta(seconds=sent + i),
            )
            for i in range(size)
        )
        sent += size


def test_concurrent_appends_from_processes_lose_nothing(tmp_path):
    path = tmp_path / "feedback.jsonl"
    n_workers, n_events = 4, 200
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, like server workers
    start = ctx.Barrier(n_workers)
    workers = [
        ctx.Process(target=_append_from_worker, args=(str(path), w, n_events, start))
        for w in range(n_workers)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [process.exitcode for process in workers] == [0] * n_workers

    raw_lines = path.read_bytes().split(b"\n")
    assert raw_lines.pop() == b""  # ends with a newline
    assert len(raw_lines) == n_workers * n_events
    assert all(json.loads(line)["item_id"] == "X" * 200 for line in raw_lines)  # none partial
    frame, skipped = FeedbackLog(path).read_with_report()
    assert skipped == 0
    expected = {f"w{w}-{i}" for w in range(n_workers) for i in range(n_events)}
    assert set(frame["request_id"]) == expected and frame["request_id"].is_unique
    for w in range(n_workers):  # each worker's events keep their order
        own = frame.loc[frame["request_id"].str.startswith(f"w{w}-"), "request_id"]
        assert own.tolist() == [f"w{w}-{i}" for i in range(n_events)]


def test_torn_last_line_is_skipped_reported_and_sealed_by_the_next_append(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    log.append(sample_events()[:2])
    torn = event(request_id="lost").to_json()[:40].encode()  # a crash mid-write
    with open(log.path, "ab") as handle:
        handle.write(torn)
    before = log.path.read_bytes()

    frame, skipped = log.read_with_report()
    assert (len(frame), skipped) == (2, 1)
    assert log.path.read_bytes() == before  # reading never repairs, rewrites or truncates

    log.append([event(request_id="after-crash")])
    after = log.path.read_bytes()
    assert after.startswith(before)  # appended only
    assert after.split(b"\n")[2] == torn + TORN_LINE_MARK.encode()  # fragment sealed on its line
    frame, skipped = log.read_with_report()
    assert skipped == 1
    assert frame["request_id"].tolist() == ["req-1", "req-1", "after-crash"]
    assert frame["line"].tolist() == [0, 1, 3]  # line numbers (event ids) stay stable


def test_corrupt_middle_line_raises_naming_file_and_line(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    good = event().to_json()
    log.path.write_text(f"{good}\n{good[:30]}garbage\n{good}\n")
    with pytest.raises(FeedbackLogError, match=r"feedback\.jsonl: line 2 is not a valid"):
        log.read()


def test_valid_json_but_invalid_event_raises_naming_line_and_field(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    record = json.loads(event().to_json())
    lines = [json.dumps(record), json.dumps({**record, "feedback_type": "hover"})]
    log.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FeedbackLogError, match=r"line 2 .*feedback_type"):
        log.read()
    log.path.write_text(json.dumps({**record, "extra": 1}) + "\n")
    with pytest.raises(FeedbackLogError, match=r"line 1 .*unknown field\(s\) \['extra'\]"):
        log.read()


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"feedback_type": "hover"}, "feedback_type"),
        ({"request_id": ""}, "request_id"),
        ({"customer_id": "   "}, "customer_id"),
        ({"item_id": None}, "item_id"),
        ({"order_id": ""}, "order_id"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"unit_price": -0.01}, "unit_price"),
        ({"unit_price": float("nan")}, "unit_price"),
        ({"order_value": -3.0}, "order_value"),
        ({"ts": datetime(2024, 5, 1, 10, 0)}, "ts"),
        ({"ts": "2024-05-01T10:00:00+00:00"}, "ts"),
        ({"position": 0}, "position"),
        ({"model_version": 3}, "model_version"),
    ],
)
def test_validation_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"^{field} "):
        event(**overrides)


def test_timestamps_are_stored_in_utc():
    local = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert event(ts=local).ts == T0 and event(ts=local).ts.tzinfo is UTC
    assert '"ts":"2024-05-01T10:00:00.000000+00:00"' in event(ts=local).to_json()


# --- canonical events ---------------------------------------------------------------------


def test_canonical_mapping_hand_checked():
    frame = events_to_frame(sample_events(), lines=[10, 11, 12, 13])
    events, counts = to_canonical_events(frame, source_name="fb")

    assert counts == {"impression": 1, "click": 1, "add_to_cart": 1, "purchase": 1}
    assert set(counts) == set(FEEDBACK_TYPES)
    assert list(events.columns) == list(c.CANONICAL_COLUMNS)
    assert contract_violations(RawEventSchema, events).empty
    assert events[c.EVENT_ID].tolist() == ["fb:11", "fb:12", "fb:13"]  # no impression
    assert events[c.SOURCE_ROW].tolist() == [11, 12, 13]
    assert events[c.EVENT_TYPE].tolist() == [c.VIEW, c.ADD_TO_CART, c.PURCHASE]
    assert str(events[c.EVENT_TS].dtype) == "datetime64[ns]"  # naive
    assert events[c.EVENT_TS].tolist() == [
        pd.Timestamp("2024-05-01 10:00:05"),
        pd.Timestamp("2024-05-01 10:00:09"),
        pd.Timestamp("2024-05-01 12:00:30.123456"),  # 14:00:30 at +02:00, as naive UTC
    ]
    assert events[c.USER_ID].tolist() == ["17850"] * 3
    assert events[c.QUANTITY].tolist() == [1.0, 2.0, 2.0]
    purchase = events.iloc[2]
    assert (purchase[c.UNIT_PRICE], purchase[c.ORDER_ID]) == (2.55, "536365")
    assert events[c.UNIT_PRICE].isna().tolist() == [True, True, False]
    assert events[[c.DESCRIPTION, c.COUNTRY, c.DEVICE]].isna().all().all()


def test_canonical_mapping_of_impressions_only_is_empty_but_counted():
    frame = events_to_frame([event(feedback_type="impression")] * 3)
    events, counts = to_canonical_events(frame)
    assert events.empty and list(events.columns) == list(c.CANONICAL_COLUMNS)
    assert counts == {"impression": 3, "click": 0, "add_to_cart": 0, "purchase": 0}


# --- the log as an ingestion source -------------------------------------------------------


def write_feedback_source(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "feedback.yaml"
    config.write_text(
        "name: fb\nkind: feedback\npath: logs/feedback.jsonl\n"
        "partitions:\n  granularity: daily\n" + extra
    )
    return config


def test_source_round_trip_through_the_ingestion_reader(tmp_path):
    log = FeedbackLog(tmp_path / "logs" / "feedback.jsonl")
    log.append(sample_events())
    spec = load_source_spec(write_feedback_source(tmp_path))
    assert (spec.kind, spec.path) == ("feedback", log.path)
    assert c.UNIT_PRICE not in spec.present_fields  # clicks carry no price: no price rule

    events = load_events(spec)
    assert contract_violations(RawEventSchema, events).empty
    assert events[c.EVENT_ID].tolist() == ["fb:1", "fb:2", "fb:3"]
    assert events[c.EVENT_TYPE].tolist() == [c.VIEW, c.ADD_TO_CART, c.PURCHASE]
    assert events.attrs["feedback_counts"]["impression"] == 1
    assert events.attrs["feedback_skipped_lines"] == 0
    result = split_valid_and_quarantined(events, spec)
    assert len(result.valid) == 3 and result.quarantined.empty

    # The log grows: a new fingerprint, so cached events and the sensor's cursor move on.
    first = source_fingerprint(spec)
    assert first["kind"] == "feedback"
    log.append([event(request_id="req-2", ts=T0 + timedelta(days=1))])
    second = source_fingerprint(spec)
    assert second["sha256"] != first["sha256"] and second["bytes"] > first["bytes"]
    grown = load_events(spec)
    assert grown[c.EVENT_ID].tolist() == ["fb:1", "fb:2", "fb:3", "fb:4"]


def test_project_feedback_source_config_loads():
    spec = load_source_spec(Path(__file__).resolve().parents[3] / "data/sources/feedback.yaml")
    assert (spec.name, spec.kind, spec.partitions.granularity) == ("feedback", "feedback", "daily")
    assert spec.path is not None and spec.path.parts[-3:] == ("feedback", "dev", "feedback.jsonl")


@pytest.mark.parametrize(
    ("log_text", "extra", "message"),
    [
        (None, "", "feedback log not found"),
        ("", "columns: {user_id: u}\n", r"\['columns'\] cannot be set for kind: feedback"),
        ("impressions", "", "no click, add_to_cart or purchase events yet"),
        ("corrupt", "", "line 1 is not a valid feedback event"),
    ],
)
def test_source_errors_are_source_errors(tmp_path, log_text, extra, message):
    path = tmp_path / "logs" / "feedback.jsonl"
    if log_text == "impressions":
        FeedbackLog(path).append([event(feedback_type="impression")])
    elif log_text is not None:
        path.parent.mkdir()
        path.write_text("{not json\n" if log_text == "corrupt" else "")
    with pytest.raises(SourceError, match=message):
        load_events(load_source_spec(write_feedback_source(tmp_path, extra)))
