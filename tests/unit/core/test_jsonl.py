"""The append-only JSON-lines writer and reader every log uses: whole lines from concurrent
processes, torn last lines, durability, records that cannot be written."""

from __future__ import annotations

import json
import math
import multiprocessing

import pytest

from recsys_assets.core import jsonl
from recsys_assets.core.jsonl import TORN_LINE_MARK, JsonlWriter, RecordEncodeError

MARK = TORN_LINE_MARK.encode()


def _append_lines(path: str, writer_id: str, lock: str, keep_open: bool, start) -> None:
    """One process: waits for the other, then appends 100 lines longer than PIPE_BUF."""
    writer = JsonlWriter(path, lock=lock, keep_open=keep_open)
    start.wait()
    for n in range(100):
        writer.append([{"w": writer_id, "n": n, "pad": writer_id * 5_000}])
    writer.close()


@pytest.mark.parametrize(("lock", "keep_open"), [("always", False), ("large", True)])
def test_two_processes_interleave_whole_lines_only(tmp_path, lock, keep_open):
    path = tmp_path / "log.jsonl"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2)
    workers = [
        ctx.Process(target=_append_lines, args=(str(path), w, lock, keep_open, start)) for w in "ab"
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [process.exitcode for process in workers] == [0, 0]

    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 200
    records = [json.loads(line) for line in raw.splitlines()]  # any mixed line fails here
    assert all(r["pad"] == r["w"] * 5_000 for r in records)
    for w in "ab":  # each process's lines, whole and in its order
        assert [r["n"] for r in records if r["w"] == w] == list(range(100))
    assert jsonl.read_lines(path).torn == 0


def test_a_torn_last_line_is_skipped_and_sealed_with_the_mark(tmp_path):
    path = tmp_path / "log.jsonl"
    writer = JsonlWriter(path)
    assert writer.append([{"a": 1}]) == 1
    with path.open("ab") as handle:
        handle.write(b'{"a": 2, "b"')  # a writer stopped mid-line
    assert jsonl.read_lines(path) == ([(0, b'{"a":1}')], 1)
    assert path.read_bytes() == b'{"a":1}\n{"a": 2, "b"'  # reading never repairs

    writer.append([{"a": 3}])
    assert path.read_bytes() == b'{"a":1}\n{"a": 2, "b"' + MARK + b'\n{"a":3}\n'
    assert jsonl.read_lines(path) == ([(0, b'{"a":1}'), (2, b'{"a":3}')], 1)  # numbers stay
    assert jsonl.read_records(path) == [{"a": 1}, {"a": 3}]


def test_a_bare_newline_seal_leaves_a_line_readers_skip_unless_it_is_whole(tmp_path):
    path = tmp_path / "log.jsonl"
    writer = JsonlWriter(path, seal="newline")  # the loop log and the release ledger
    writer.append([{"a": 1}])
    with path.open("ab") as handle:
        handle.write(b'{"a": 2, "b"')
    assert jsonl.read_records(path) == [{"a": 1}]
    with pytest.raises(json.JSONDecodeError):
        jsonl.read_records(path, strict=True)  # the audit log's reader: torn is an error
    writer.append([{"a": 3}])
    assert path.read_bytes() == b'{"a":1}\n{"a": 2, "b"\n{"a":3}\n'
    assert jsonl.read_records(path) == [{"a": 1}, {"a": 3}]

    with path.open("ab") as handle:
        handle.write(b'{"a": 4}')  # only the newline was lost: read like any line
    assert jsonl.read_records(path) == [{"a": 1}, {"a": 3}, {"a": 4}]
    lines, unterminated = jsonl.read_lines(path)  # where the mark seals, that piece is torn
    assert unterminated == 1 and [n for n, _ in lines] == [0, 1, 2]
    parsed = jsonl.parse_lines(lines)
    assert [n for n, _, _ in parsed] == [0, 2] and parsed.torn == 1  # line 1 is not JSON


def test_a_failed_write_of_a_kept_descriptor_is_sealed_before_the_next_append(
    tmp_path, monkeypatch
):
    path = tmp_path / "log.jsonl"
    writer = JsonlWriter(path, lock="large", keep_open=True)  # the served log
    writer.append([{"a": 1}])
    # the kernel takes 4 bytes of the next line, then the disk is full
    results = iter([4, OSError(28, "No space left on device")])
    real_write = jsonl.os.write

    def failing_write(fd, data):
        result = next(results)
        if isinstance(result, OSError):
            raise result
        return real_write(fd, bytes(data[:result]))

    with monkeypatch.context() as patch:
        patch.setattr(jsonl.os, "write", failing_write)
        with pytest.raises(OSError, match="No space"):
            writer.append([{"a": 2}])
    writer.append([{"a": 3}])
    writer.close()
    assert path.read_bytes() == b'{"a":1}\n{"a"' + MARK + b'\n{"a":3}\n'


def test_durable_appends_fsync_the_file_and_a_new_files_folder(tmp_path, monkeypatch):
    synced: list[int] = []
    monkeypatch.setattr(jsonl.os, "fsync", synced.append)
    JsonlWriter(tmp_path / "fast.jsonl").append([{"a": 1}])
    assert synced == []
    durable = JsonlWriter(tmp_path / "durable.jsonl", durable=True)
    durable.append([{"a": 1}])
    durable.append([{"a": 2}, {"a": 3}])
    assert len(synced) == 2  # once per append, not per record
    feedback_like = JsonlWriter(tmp_path / "new" / "f.jsonl", durable=True, sync_directory=True)
    feedback_like.append([{"a": 1}])
    assert len(synced) == 4  # the file, and the folder that got a new entry
    feedback_like.append([{"a": 2}])
    assert len(synced) == 5  # the file only
    with JsonlWriter(tmp_path / "ledger.jsonl", durable=True).locked() as held:
        held.append([{"a": 1}])
        held.append([{"a": 2}])
        assert held.records() == [{"a": 1}, {"a": 2}]
    assert len(synced) == 7
    assert JsonlWriter(tmp_path / "empty.jsonl", durable=True).append([]) == 0
    assert len(synced) == 7 and not (tmp_path / "empty.jsonl").exists()


@pytest.mark.parametrize(
    ("bad", "cause"),
    [({"when": object()}, TypeError), ({"score": math.nan}, ValueError)],
)
def test_a_record_that_is_not_json_raises_and_leaves_the_file_untouched(tmp_path, bad, cause):
    path = tmp_path / "log.jsonl"
    writer = JsonlWriter(path)
    writer.append([{"a": 1}])
    with pytest.raises(RecordEncodeError, match=r"log\.jsonl: record 2 of the batch") as raised:
        writer.append([{"a": 2}, bad])
    assert isinstance(raised.value, cause) and isinstance(raised.value.__cause__, cause)
    assert "nothing was written" in str(raised.value)
    assert path.read_bytes() == b'{"a":1}\n'
    with pytest.raises(RecordEncodeError):
        JsonlWriter(tmp_path / "new.jsonl").append([bad])
    assert not (tmp_path / "new.jsonl").exists()


def test_a_line_with_a_newline_is_refused():
    writer = JsonlWriter("unused.jsonl", dumps=lambda r: json.dumps(r, indent=1))
    with pytest.raises(RecordEncodeError, match="not one line"):
        writer.encode([{"a": 1}])


def test_the_tail_is_read_from_a_line_start_and_a_missing_file_is_empty(tmp_path):
    path = tmp_path / "log.jsonl"
    assert jsonl.read_lines(path) == ([], 0) and jsonl.read_records(path) == []
    path.write_bytes(b'{"n":1}\n{"n":22}\n{"n":3}\n')  # 8 + 9 + 8 bytes
    assert jsonl.read_records(path, tail_bytes=8) == [{"n": 3}]  # at a line start
    assert jsonl.read_records(path, tail_bytes=12) == [{"n": 3}]  # '22}' is cut: left out
    assert jsonl.read_records(path, tail_bytes=17) == [{"n": 22}, {"n": 3}]
    assert jsonl.read_records(path, tail_bytes=100) == [{"n": 1}, {"n": 22}, {"n": 3}]


def test_options_that_do_not_go_together_are_refused():
    with pytest.raises(ValueError, match="lock must be one of"):
        JsonlWriter("x.jsonl", lock="sometimes")
    with pytest.raises(ValueError, match="sync_directory goes with durable"):
        JsonlWriter("x.jsonl", sync_directory=True)
    with pytest.raises(ValueError, match="seal must be 'mark', 'newline' or None"):
        JsonlWriter("x.jsonl", seal="\n")
    with pytest.raises(ValueError, match="seal is written under the lock"):
        JsonlWriter("x.jsonl", lock="never")  # the default seal needs the lock
    JsonlWriter("x.jsonl", lock="never", seal=None)  # the audit log: neither


def test_an_unlocked_log_does_not_seal_another_writers_line_in_progress(tmp_path, monkeypatch):
    """The kernel grows a file page by page while one write copies: a writer opening the log
    may see half of another process's unlocked append. Sealing it then would add an empty
    line; the tail is sealed only if it stays torn."""
    path = tmp_path / "served.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')  # another process's append, half copied

    def the_other_write_finishes(seconds):
        with path.open("ab") as handle:
            handle.write(b"2}\n")

    monkeypatch.setattr(jsonl.time, "sleep", the_other_write_finishes)
    with jsonl.JsonlWriter(path, lock="large", seal="newline", keep_open=True) as log:
        log.append([{"c": 3}])
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n{"c":3}\n'


def test_an_unlocked_log_seals_a_tail_that_stays_torn(tmp_path, monkeypatch):
    path = tmp_path / "served.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')  # a writer that stopped mid-line
    monkeypatch.setattr(jsonl.time, "sleep", lambda seconds: None)
    with jsonl.JsonlWriter(path, lock="large", seal="newline", keep_open=True) as log:
        log.append([{"c": 3}])
    assert path.read_bytes() == b'{"a":1}\n{"b":\n{"c":3}\n'
