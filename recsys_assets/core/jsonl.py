"""Append-only JSON-lines files: one writer and one reader for every log the project keeps.

The feedback log, the served log, the loop log, the release ledger and the audit logs are each
a file of JSON lines that is only ever appended to, never rewritten or truncated, so line
numbers stay stable and no reader sees a record change. What differs between them is said by
the options of :class:`JsonlWriter`:

- ``durable``: ``fsync`` the file before an append returns (an acknowledged record is on disk);
  with ``sync_directory`` also the folder, after the append that created the file. Otherwise
  lines are only handed to the operating system: a crashed process loses nothing, a crashed
  machine may lose the last lines still in the page cache.
- ``lock``: ``"always"``, every append holds an exclusive ``flock`` (several processes append
  batches of any length); ``"large"``, only a batch longer than :data:`ATOMIC_WRITE_BYTES` does,
  since one shorter ``os.write`` on an ``O_APPEND`` descriptor lands whole and unmixed with
  other writers' lines; ``"never"``.
- ``seal``: what a writer puts after a torn last line (one a writer stopped in the middle of)
  before its own records, so the fragment stays a line of its own: ``"mark"``,
  :data:`TORN_LINE_MARK` and a newline (readers recognise the line as torn); ``"newline"``, a
  bare newline (the fragment is a line that is not JSON, or one that is, if only its newline
  was lost); None, nothing (the end is not looked at). The end of the file is checked under the
  exclusive lock (on every locked append; with ``keep_open``, see below), so a seal needs a
  ``lock``.
- ``keep_open``: one descriptor opened on first use and kept until :meth:`JsonlWriter.close`
  (the end is sealed when it opens and after a failed write of its own), not one per append.
- ``mode``: the permission bits of a new file (before the umask).

Every append encodes its whole batch first (a record that cannot be one JSON line raises
:class:`RecordEncodeError` and nothing is written), then writes it with one ``os.write``,
looping only if the kernel takes fewer bytes. :meth:`JsonlWriter.locked` holds the lock over a
read and the appends that depend on it (check-and-append).

Reading: :func:`read_lines` splits a file into whole lines, leaving out the torn ones (lines
sealed with the mark and, unless told otherwise, the piece after the last newline);
:func:`parse_lines` parses them, counting those that are not JSON as torn; :func:`read_records`
does both for logs whose unterminated last piece is read like any line. Readers never repair.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, Literal, NamedTuple, TypeVar

R = TypeVar("R")
Lock = Literal["always", "large", "never"]
LOCKS: tuple[Lock, ...] = ("always", "large", "never")
Seal = Literal["mark", "newline"]

# Appended by a writer to a torn last line (left by a crash) before its own records, so the
# fragment stays a line of its own that readers recognise and skip.
TORN_LINE_MARK = "\t<torn: a writer stopped mid-line; readers skip this line>"
_MARK = TORN_LINE_MARK.encode("ascii")
# How long a tail that looks torn must stay still before an unlocked log seals it.
SETTLE_S = 0.01
_SEALS: dict[str | None, bytes] = {"mark": _MARK + b"\n", "newline": b"\n"}

# A single write of at most this many bytes is not interleaved with other appends.
ATOMIC_WRITE_BYTES = select.PIPE_BUF

# The default line encoder: compact, ASCII-only, no NaN or infinity (JSON has none).
compact_json: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class RecordEncodeError(TypeError, ValueError):
    """A record that cannot be written as one JSON line; nothing of its batch was written.

    A TypeError and a ValueError, as ``json`` raises either (an object of an unknown type; NaN,
    a circular reference), so callers that caught those still catch it."""


NumberedLine = tuple[int, bytes]  # 0-based line number, the line without its newline


class Lines(NamedTuple):
    """The whole lines of a file as one read saw them, and how many torn lines it left out."""

    lines: list[NumberedLine]
    torn: int


# --- writing -----------------------------------------------------------------------------------


class JsonlWriter(Generic[R]):
    """Appends records of type ``R`` to one JSON-lines file (see the module for the options).

    ``dumps`` turns a record into its line, without the newline; the default is
    :data:`compact_json`. Safe for threads; across processes as ``lock`` says.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dumps: Callable[[R], str] = compact_json,
        durable: bool = False,
        sync_directory: bool = False,
        lock: Lock = "always",
        seal: Seal | None = "mark",
        keep_open: bool = False,
        mode: int = 0o644,
    ) -> None:
        if lock not in LOCKS:
            raise ValueError(f"lock must be one of {list(LOCKS)}, got {lock!r}")
        if sync_directory and not durable:
            raise ValueError("sync_directory goes with durable=True")
        if seal is not None and seal not in _SEALS:
            raise ValueError(f"seal must be 'mark', 'newline' or None, got {seal!r}")
        if seal is not None and lock == "never":
            raise ValueError("a seal is written under the lock: it needs lock 'always' or 'large'")
        self.path = Path(path)
        self.dumps = dumps
        self.durable = durable
        self.sync_directory = sync_directory
        self.lock = lock
        self.seal = seal
        self.keep_open = keep_open
        self.mode = mode
        self._fd: int | None = None
        self._unsealed = False  # keep_open: our last write may have stopped mid-line
        self._open_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonlWriter({str(self.path)!r})"

    def __enter__(self) -> JsonlWriter[R]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def encode(self, records: Iterable[R]) -> tuple[bytes, int]:
        """The batch as bytes (a line each, newline-terminated) and its number of records;
        raises :class:`RecordEncodeError`, naming the file and the record's position."""
        lines = []
        for position, record in enumerate(records, start=1):
            try:
                line = self.dumps(record)
            except (TypeError, ValueError) as exc:
                raise RecordEncodeError(
                    f"{self.path}: record {position} of the batch is not JSON-serialisable "
                    f"({type(exc).__name__}: {exc}); nothing was written"
                ) from exc
            if "\n" in line:
                raise RecordEncodeError(
                    f"{self.path}: record {position} of the batch is not one line (its JSON "
                    "holds a newline); nothing was written"
                )
            lines.append(line + "\n")
        return "".join(lines).encode("utf-8"), len(lines)

    def append(self, records: Iterable[R]) -> int:
        """Write the records (one ``os.write``, fsynced if ``durable``); returns how many.

        An empty batch writes nothing and creates no file. OSError propagates."""
        payload, count = self.encode(records)
        if not count:
            return 0
        if self.keep_open:
            self._append_kept(payload)
            return count
        fd, created = self._open()
        try:
            if self._needs_lock(payload):
                with _exclusive(fd):
                    _write_all(fd, self._sealing(fd) + payload)
            else:
                _write_all(fd, payload)
            # fsync after unlocking: it flushes our bytes all the same, and other writers need
            # not wait for our disk flush.
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_directory(self.path.parent)
        return count

    @contextmanager
    def locked(self) -> Iterator[LockedJsonl[R]]:
        """The file open under the exclusive lock for the whole block: read it, decide, append
        (each append fsynced if ``durable``); the lock goes when the block ends."""
        fd, created = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield LockedJsonl(self, fd)
        finally:
            os.close(fd)  # closing releases the lock
        if created:
            _fsync_directory(self.path.parent)

    def open(self) -> JsonlWriter[R]:
        """With ``keep_open``: open the descriptor now (creating the file and its folder),
        sealing a torn last line. Idempotent; raises OSError when the file cannot be opened."""
        self._descriptor()
        return self

    def close(self) -> None:
        """Close the kept descriptor, if any (a later append opens it again)."""
        with self._open_lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # -- internals --

    def _needs_lock(self, payload: bytes) -> bool:
        return self.lock == "always" or (self.lock == "large" and len(payload) > ATOMIC_WRITE_BYTES)

    def _open(self) -> tuple[int, bool]:
        """A new descriptor for appending, and whether it created the file (only asked when the
        folder is to be synced)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = self.sync_directory and not self.path.exists()
        access = os.O_WRONLY if self.seal is None else os.O_RDWR  # reading: the end
        flags = access | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.path, flags, self.mode), created

    def _sealing(self, fd: int) -> bytes:
        """The seal to write before the next record if the file ends torn (lock held)."""
        seal = _SEALS.get(self.seal)
        if seal is None:
            return b""
        if not _ends_torn(fd):
            return b""
        if self.lock != "always" and _tail_moves(fd):
            return b""  # an unlocked writer was mid-write, not a writer that stopped
        return seal

    def _descriptor(self) -> int:
        """The kept descriptor, opened (and the end sealed) first if needed."""
        with self._open_lock:
            if self._fd is None:
                fd, created = self._open()
                try:
                    if self.seal is not None:
                        with _exclusive(fd):
                            seal = self._sealing(fd)
                            if seal:
                                _write_all(fd, seal)
                except BaseException:
                    os.close(fd)
                    raise
                if created:
                    _fsync_directory(self.path.parent)
                self._fd = fd
            return self._fd

    def _append_kept(self, payload: bytes) -> None:
        fd = self._fd if self._fd is not None else self._descriptor()
        if self._unsealed or self._needs_lock(payload):
            with _exclusive(fd):
                self._write_kept(fd, (self._sealing(fd) if self._unsealed else b"") + payload)
        else:
            self._write_kept(fd, payload)
        if self.durable:
            os.fsync(fd)

    def _write_kept(self, fd: int, payload: bytes) -> None:
        """On an error the line may be torn: the next append seals it first."""
        try:
            _write_all(fd, payload)
        except OSError:
            self._unsealed = self.seal is not None
            raise
        self._unsealed = False


class LockedJsonl(Generic[R]):
    """A JSON-lines file held under the exclusive lock (:meth:`JsonlWriter.locked`)."""

    def __init__(self, writer: JsonlWriter[R], fd: int) -> None:
        self._writer = writer
        self._fd = fd

    def lines(self, *, unterminated_is_torn: bool = True) -> Lines:
        """The whole lines as they are now (see :func:`read_lines`)."""
        return split_lines(_read_all(self._fd), unterminated_is_torn=unterminated_is_torn)

    def records(self) -> list[Any]:
        """Every JSON value in the file now, read as :func:`read_records` does (lenient)."""
        return [value for _, _, value in parse_lines(self.lines(unterminated_is_torn=False)[0])]

    def append(self, records: Iterable[R]) -> int:
        """Write the records (sealing a torn end first; fsynced if durable); returns how many."""
        payload, count = self._writer.encode(records)
        if count:
            _write_all(self._fd, self._writer._sealing(self._fd) + payload)
            if self._writer.durable:
                os.fsync(self._fd)
        return count


def _ends_torn(fd: int) -> bool:
    """Whether the file's last byte is not a newline (an empty file is not torn)."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _tail_moves(fd: int) -> bool:
    """Whether a tail that looks torn is only a write in progress. The kernel grows a file page
    by page while one ``os.write`` copies, so a reader can see the middle of another process's
    unlocked append; a line a crashed writer left stays as it is. Asked only when the tail looks
    torn (at open, after a failed write of our own), so the pause is off the hot path."""
    size = os.fstat(fd).st_size
    time.sleep(SETTLE_S)
    return os.fstat(fd).st_size != size or not _ends_torn(fd)


@contextmanager
def _exclusive(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _write_all(fd: int, payload: bytes) -> None:
    """One os.write for the batch; loops only if the kernel takes fewer bytes (disk nearly full,
    signals)."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


# --- reading -----------------------------------------------------------------------------------


def split_lines(data: bytes, *, unterminated_is_torn: bool = True) -> Lines:
    """Whole lines of ``data`` with their 0-based numbers; lines ending with
    :data:`TORN_LINE_MARK` are left out and counted as torn, and so is the piece after the last
    newline unless ``unterminated_is_torn`` is False (then it is read like any line)."""
    raw_lines = data.split(b"\n")
    tail = raw_lines.pop()  # every record ends with "\n": empty unless torn (or being written)
    torn = 0
    if tail:
        if unterminated_is_torn:
            torn += 1
        else:
            raw_lines.append(tail)
    lines = []
    for number, raw in enumerate(raw_lines):
        if raw.endswith(_MARK):
            torn += 1
        else:
            lines.append((number, raw))
    return Lines(lines, torn)


def read_lines(
    path: str | os.PathLike[str],
    *,
    tail_bytes: int | None = None,
    shared_lock: bool = False,
    unterminated_is_torn: bool = True,
) -> Lines:
    """The whole lines of a JSON-lines file (:func:`split_lines`); none when it is missing.

    ``tail_bytes``: only the lines that start in the file's last ``tail_bytes`` bytes (a line
    cut by that bound is left out and not counted; numbers count from the first line read).
    ``shared_lock``: read under a shared ``flock``, so no batch of a locked writer is seen half
    written."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below, after the lock)
    except FileNotFoundError:
        return Lines([], 0)
    with handle:
        if shared_lock:
            fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            start = 0
            if tail_bytes is not None:
                start = max(0, os.fstat(handle.fileno()).st_size - tail_bytes)
                handle.seek(max(0, start - 1))
            data = handle.read()
        finally:
            if shared_lock:
                fcntl.flock(handle, fcntl.LOCK_UN)
    if start:  # we read from the byte before: keep what follows its line's end
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
    return split_lines(data, unterminated_is_torn=unterminated_is_torn)


class ParsedLines:
    """The lines that are JSON as ``(number, line, value)``, parsed as they are iterated (once:
    a large log is never held parsed whole); ``torn`` counts those that were not JSON (a
    fragment, sealed or merged with a later line), final when the iteration ends."""

    def __init__(self, lines: Iterable[NumberedLine]) -> None:
        self._lines = iter(lines)
        self.torn = 0

    def __iter__(self) -> Iterator[tuple[int, bytes, Any]]:
        for number, raw in self._lines:
            try:
                value = json.loads(raw)
            except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                self.torn += 1
                continue
            yield number, raw, value


def parse_lines(lines: Iterable[NumberedLine]) -> ParsedLines:
    """Each line that is JSON, with its number and its value (:class:`ParsedLines`)."""
    return ParsedLines(lines)


def read_records(
    path: str | os.PathLike[str], *, tail_bytes: int | None = None, strict: bool = False
) -> list[Any]:
    """The JSON values of a file's lines, in order; [] when it is missing. The piece after the
    last newline is read like any line (a fragment of a writer that lost only its newline is
    whole). Lenient: a line that is not JSON is skipped; ``strict``: it raises
    ``json.JSONDecodeError`` (blank lines are skipped either way). ``tail_bytes`` as in
    :func:`read_lines`."""
    lines = read_lines(path, tail_bytes=tail_bytes, unterminated_is_torn=False).lines
    if strict:
        return [json.loads(raw) for _, raw in lines if raw.strip()]
    return [value for _, _, value in parse_lines(lines)]
