"""The served log: cheap appends from many processes, reads that skip torn lines, time bounds,
and where the service writes it."""

from __future__ import annotations

import json
import multiprocessing
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_assets.ingestion.feedback import TORN_LINE_MARK
from recsys_assets.serving import served_log as served_log_module
from recsys_assets.serving.served_log import (
    ATOMIC_WRITE_BYTES,
    FRAME_DTYPES,
    SERVED_LOG_VAR,
    ServedLog,
    ServedLogError,
    ServedRecord,
    served_log_path,
)

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def record(**overrides) -> ServedRecord:
    fields = {
        "ts": T0,
        "request_id": "req-1",
        "customer_id": "17850",
        "model_version": "v3",
        "variant": None,
        "items": ["85123A", "22423", "47566"],
        "scores": [0.91, 0.5, 0.125],
        "fallback_reason": None,
        "as_of": "2011-12-09T12:50:00+00:00",
    }
    return ServedRecord(**{**fields, **overrides})


def sample_records() -> list[ServedRecord]:
    return [
        record(variant="B"),
        record(
            request_id="req-2",
            customer_id="never-seen",
            ts=datetime(2024, 5, 1, 13, 0, 30, 123456, tzinfo=timezone(timedelta(hours=2))),
            items=["22423"],
            scores=[42.0],
            fallback_reason="unknown_customer",
        ),
        record(request_id="req-3", ts=T0 + timedelta(hours=2), items=[], scores=[]),
    ]


def expected_frame(records: list[ServedRecord]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {name: [getattr(r, name) for r in records] for name in FRAME_DTYPES},
        columns=list(FRAME_DTYPES),
    )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.astype(FRAME_DTYPES)


# --- records ------------------------------------------------------------------------------


def test_record_stores_ts_in_utc_and_plain_floats():
    r = record(ts=datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))))
    assert r.ts == T0 and r.ts.tzinfo is UTC
    r = record(scores=np.array([0.5, 0.25, 0.125], dtype=np.float32))
    assert r.scores == [0.5, 0.25, 0.125] and type(r.scores[0]) is float


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ts": datetime(2024, 5, 1)}, "timezone-aware"),
        ({"request_id": ""}, "request_id"),
        ({"model_version": None}, "model_version"),
        ({"items": ["a", 2], "scores": [1.0, 2.0]}, "items"),
        ({"items": ["a"], "scores": [1.0, 2.0]}, "1 items but 2 scores"),
        ({"items": ["a"], "scores": [float("nan")]}, "finite"),
        ({"as_of": None}, "as_of"),
    ],
)
def test_record_refuses_bad_fields(overrides, message):
    with pytest.raises(ValueError, match=message):
        record(**overrides)


# --- append and read ----------------------------------------------------------------------


def test_round_trip_append_then_read_equals(tmp_path):
    log = ServedLog(tmp_path / "new" / "dir" / "served.jsonl")  # directory made on first append
    records = sample_records()
    assert log.append(records[:1]) == 1
    assert log.append(iter(records[1:])) == 2
    log.close()

    frame, skipped = log.read_with_report()
    assert skipped == 0
    pd.testing.assert_frame_equal(frame, expected_frame(records))
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == FRAME_DTYPES
    assert frame["ts"].iloc[1] == pd.Timestamp("2024-05-01 11:00:30.123456", tz="UTC")
    assert frame["items"].iloc[0] == ["85123A", "22423", "47566"]  # python lists, best first
    assert frame["scores"].iloc[0] == [0.91, 0.5, 0.125]  # floats survive JSON exactly
    assert frame["items"].iloc[2] == [] and pd.isna(frame["variant"].iloc[1])
    assert frame["fallback_reason"].iloc[1] == "unknown_customer"
    # One compact JSON object per line, newline-terminated.
    lines = log.path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line)["request_id"] for line in lines[:-1]] == ["req-1", "req-2", "req-3"]


def test_a_batch_longer_than_pipe_buf_round_trips(tmp_path):
    log = ServedLog(tmp_path / "served.jsonl")
    items = [f"item-{i:05d}-{'x' * 40}" for i in range(100)]
    big = [record(request_id=f"r{i}", items=items, scores=[1.0] * 100) for i in range(3)]
    assert sum(len(r.to_json()) + 1 for r in big) > ATOMIC_WRITE_BYTES  # the locked path
    assert log.append(big) == 3
    frame, skipped = log.read_with_report()
    assert skipped == 0 and frame["request_id"].tolist() == ["r0", "r1", "r2"]
    assert frame["items"].iloc[2] == items


def test_time_bounds_are_since_inclusive_until_exclusive(tmp_path):
    log = ServedLog(tmp_path / "served.jsonl")
    log.append(record(request_id=f"h{h}", ts=T0 + timedelta(hours=h)) for h in range(4))

    def ids(**bounds) -> list[str]:
        return log.read(**bounds)["request_id"].tolist()

    assert ids() == ["h0", "h1", "h2", "h3"]
    assert ids(since=T0 + timedelta(hours=1)) == ["h1", "h2", "h3"]
    assert ids(until=T0 + timedelta(hours=1)) == ["h0"]
    assert ids(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3)) == ["h1", "h2"]
    # Other time zones and pandas timestamps / ISO strings are compared in UTC.
    assert ids(since=datetime(2024, 5, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))) == [
        "h2",
        "h3",
    ]
    assert ids(until="2024-05-01T11:30:00+00:00") == ["h0", "h1"]
    assert ids(since=T0 + timedelta(days=1)) == []
    assert list(log.read(since=T0 + timedelta(days=1)).dtypes.astype(str)) == list(
        FRAME_DTYPES.values()
    )
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        log.read(since=datetime(2024, 5, 1))


def test_empty_batch_writes_nothing_and_missing_or_empty_log_reads_empty(tmp_path):
    log = ServedLog(tmp_path / "served.jsonl")
    assert log.append([]) == 0
    assert not log.path.exists()
    for _ in range(2):  # missing, then empty
        frame, skipped = log.read_with_report()
        assert frame.empty and skipped == 0
        assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == FRAME_DTYPES
        log.path.touch()


def test_append_rejects_other_objects(tmp_path):
    with pytest.raises(TypeError, match="ServedRecord"):
        ServedLog(tmp_path / "s.jsonl").append([{"request_id": "r"}])


def test_torn_last_line_is_skipped_counted_and_sealed_by_the_next_writer(tmp_path):
    path = tmp_path / "served.jsonl"
    with ServedLog(path) as log:
        log.append(sample_records()[:2])
    torn = record(request_id="lost").to_json()[:40].encode()  # a worker died mid-write
    with open(path, "ab") as handle:
        handle.write(torn)
    before = path.read_bytes()

    frame, skipped = ServedLog(path).read_with_report()
    assert (frame["request_id"].tolist(), skipped) == (["req-1", "req-2"], 1)
    assert path.read_bytes() == before  # reading never repairs, rewrites or truncates

    with ServedLog(path) as restarted:  # a new worker seals the fragment when it opens the log
        restarted.append([record(request_id="after-crash")])
    after = path.read_bytes()
    assert after.startswith(before)  # appended only
    assert after.split(b"\n")[2] == torn + TORN_LINE_MARK.encode()
    frame, skipped = ServedLog(path).read_with_report()
    assert (frame["request_id"].tolist(), skipped) == (["req-1", "req-2", "after-crash"], 1)


def test_a_fragment_merged_with_another_writers_line_is_skipped_and_counted(tmp_path):
    path = tmp_path / "served.jsonl"
    good = record().to_json()
    # A worker died mid-line and another one (unlocked, already open) appended after it.
    path.write_text(f"{good}\n{good[:30]}{record(request_id='merged').to_json()}\n{good}\n")
    frame, skipped = ServedLog(path).read_with_report()
    assert len(frame) == 2 and skipped == 1


def test_a_failed_write_is_sealed_before_the_next_append(tmp_path, monkeypatch):
    log = ServedLog(tmp_path / "served.jsonl")
    log.append([record(request_id="first")])
    real_write = os.write
    calls = []

    def half_then_disk_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:25]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(served_log_module.os, "write", half_then_disk_full)
    with pytest.raises(OSError, match="No space"):
        log.append([record(request_id="torn")])
    monkeypatch.setattr(served_log_module.os, "write", real_write)
    log.append([record(request_id="after")])
    log.close()
    frame, skipped = log.read_with_report()
    assert frame["request_id"].tolist() == ["first", "after"] and skipped == 1
    assert log.path.read_bytes().split(b"\n")[1].endswith(TORN_LINE_MARK.encode())


def test_json_that_is_not_a_served_record_raises_naming_file_and_line(tmp_path):
    path = tmp_path / "served.jsonl"
    line = json.loads(record().to_json())
    for bad in ({**line, "extra": 1}, {k: v for k, v in line.items() if k != "items"}, [1]):
        path.write_text(f"{json.dumps(line)}\n{json.dumps(bad)}\n")
        with pytest.raises(ServedLogError, match=r"served\.jsonl: line 2 is not a served"):
            ServedLog(path).read()


def _append_from_worker(path: str, worker: int, n_records: int, start) -> None:
    """One server worker: waits for the others, then appends one record per request, with a
    long batch (over PIPE_BUF: the locked path) now and then."""
    log = ServedLog(path)
    start.wait()
    items = [f"{worker}-{j:03d}" + "X" * 30 for j in range(10)]
    sent = 0
    while sent < n_records:
        size = min(12 if sent % 50 == 0 else 1, n_records - sent)
        log.append(
            record(request_id=f"w{worker}-{sent + i}", items=items, scores=[0.5] * 10)
            for i in range(size)
        )
        sent += size
    log.close()


def test_concurrent_appends_from_processes_give_exactly_n_whole_lines(tmp_path):
    path = tmp_path / "served.jsonl"
    n_workers, n_records = 4, 500
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, like server workers
    start = ctx.Barrier(n_workers)
    workers = [
        ctx.Process(target=_append_from_worker, args=(str(path), w, n_records, start))
        for w in range(n_workers)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [process.exitcode for process in workers] == [0] * n_workers

    raw_lines = path.read_bytes().split(b"\n")
    assert raw_lines.pop() == b""  # ends with a newline
    assert len(raw_lines) == n_workers * n_records
    for line in raw_lines:  # none partial or interleaved
        parsed = json.loads(line)
        worker = parsed["request_id"][1]
        assert parsed["items"] == [f"{worker}-{j:03d}" + "X" * 30 for j in range(10)]
    frame, skipped = ServedLog(path).read_with_report()
    assert skipped == 0
    expected = {f"w{w}-{i}" for w in range(n_workers) for i in range(n_records)}
    assert set(frame["request_id"]) == expected and frame["request_id"].is_unique
    for w in range(n_workers):  # each worker's records keep their order
        own = frame.loc[frame["request_id"].str.startswith(f"w{w}-"), "request_id"]
        assert own.tolist() == [f"w{w}-{i}" for i in range(n_records)]


# --- where ----------------------------------------------------------------------------------


def test_served_log_path_is_the_env_var_else_next_to_the_feedback_log(monkeypatch, tmp_path):
    feedback = tmp_path / "feedback" / "feedback.jsonl"
    monkeypatch.delenv(SERVED_LOG_VAR, raising=False)
    assert served_log_path(feedback) == tmp_path / "feedback" / "served.jsonl"
    monkeypatch.setenv(SERVED_LOG_VAR, str(tmp_path / "elsewhere.jsonl"))
    assert served_log_path(feedback) == tmp_path / "elsewhere.jsonl"
    monkeypatch.setenv(SERVED_LOG_VAR, "")  # empty counts as unset
    assert served_log_path(Path("data/feedback/dev/feedback.jsonl")) == Path(
        "data/feedback/dev/served.jsonl"
    )


# --- latency_ms ---------------------------------------------------------------------------


def test_latency_ms_round_trips_and_older_lines_without_it_read_as_nan(tmp_path):
    log = ServedLog(tmp_path / "served.jsonl")
    old_style = record(request_id="old")  # no latency: the line is what older writers wrote
    assert "latency_ms" not in json.loads(old_style.to_json())
    log.append([old_style, record(request_id="new", latency_ms=np.float64(12.5))])
    frame = log.read()
    assert str(frame["latency_ms"].dtype) == "float64"
    assert np.isnan(frame["latency_ms"].iloc[0]) and frame["latency_ms"].iloc[1] == 12.5
    assert json.loads(log.path.read_bytes().split(b"\n")[1])["latency_ms"] == 12.5


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "5", True])
def test_record_refuses_a_bad_latency(bad):
    with pytest.raises(ValueError, match="latency_ms"):
        record(latency_ms=bad)


def test_a_line_with_a_latency_that_is_not_a_number_raises(tmp_path):
    path = tmp_path / "served.jsonl"
    line = json.loads(record().to_json())
    path.write_text(json.dumps({**line, "latency_ms": "slow"}) + "\n")
    with pytest.raises(ServedLogError, match=r"line 1 is not a served"):
        ServedLog(path).read()
