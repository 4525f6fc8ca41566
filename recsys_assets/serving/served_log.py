"""The recommendation service's served log: what it recommended, one JSON line per request.

Monitoring reads it to watch prediction drift (how the served items and scores move, per model
version) and to score delayed ground truth: feedback that arrives hours or days later joins the
list it was about by ``request_id``.

Unlike the feedback log (:mod:`recsys_assets.ingestion.feedback`) this is telemetry written on the
request path, so it is never ``fsync``\\ed: a crash of the machine may lose the last lines still
in the page cache, which costs monitoring a few samples, not an acknowledged event. Each
:meth:`ServedLog.append` is one ``os.write`` on a descriptor opened once with ``O_APPEND``
(:class:`~recsys_assets.core.jsonl.JsonlWriter`, ``keep_open``, ``lock="large"``).
Several worker processes append to the same file: on a local filesystem one write of at most
``PIPE_BUF`` bytes lands whole and unmixed with other writers' lines, so such batches take no
lock; a longer batch holds an exclusive ``flock`` (as the feedback log does) so that two long
batches never interleave.

A process that dies mid-write can leave a torn line. Readers skip and count lines that are not
JSON (a torn last line, or a fragment that another worker's line was appended to) and lines
sealed with :data:`~recsys_assets.core.jsonl.TORN_LINE_MARK` (the feedback log's too); a writer
seals a torn end of file with that mark when it opens the log, so a restarted service never
merges its first record with the fragment, and after a write of its own failed. A line that is
JSON but not a served record raises :class:`ServedLogError`. The file is never rewritten or
truncated.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_assets.config import variables
from recsys_assets.core import jsonl

SERVED_LOG_VAR = variables.SERVED_LOG.name  # overrides where the service writes the served log
SERVED_LOG_NAME = "served.jsonl"  # default file name, next to the feedback log

# A single write of at most this many bytes is not interleaved with other appends.
ATOMIC_WRITE_BYTES = jsonl.ATOMIC_WRITE_BYTES

# Columns of a served frame (what ServedLog.read returns) and their dtypes.
FRAME_DTYPES: dict[str, str] = {
    "ts": "datetime64[ns, UTC]",
    "request_id": "string",
    "customer_id": "string",
    "model_version": "string",
    "variant": "string",
    "items": "object",  # list[str] per row, best first
    "scores": "object",  # list[float] per row, aligned with items
    "fallback_reason": "string",
    "as_of": "string",  # ISO 8601: the clock the recency features were computed at
    "latency_ms": "float64",  # in-service time of the request; NaN on lines written without it
}
# Fields a line may omit (older lines have no latency_ms); every other field is required.
_OPTIONAL_FIELDS = frozenset({"latency_ms"})
_FIELDS = frozenset(FRAME_DTYPES)
_REQUIRED_FIELDS = _FIELDS - _OPTIONAL_FIELDS
# One compact encoder for every line: json.dumps with arguments builds a new one per call.
# ASCII-only output (ensure_ascii), so a line's length in characters is its length in bytes.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class ServedLogError(ValueError):
    """A served log line that is JSON but not a served record; names the file and the line."""


def served_log_path(feedback_log: Path) -> Path:
    """Where the service writes the served log: ``$RECSYS_SERVED_LOG`` if set, else
    ``served.jsonl`` in the feedback log's folder (``settings.feedback_log``)."""
    value = os.environ.get(SERVED_LOG_VAR)
    return Path(value) if value else Path(feedback_log).parent / SERVED_LOG_NAME


def _require_str(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class ServedRecord:
    """One served list: who asked, which model answered, what it showed (best first)."""

    ts: datetime  # when it was served (timezone-aware; stored in UTC)
    request_id: str  # the id returned to the client, and quoted by its feedback
    customer_id: str
    model_version: str
    variant: str | None  # the A/B variant, when one is assigned
    items: list[str]  # best first
    scores: list[float]  # aligned with items
    fallback_reason: str | None  # None when the model ranked the list
    as_of: str  # ISO 8601 time of the clock used for the features
    # the request's time inside the service in milliseconds (what the latency histogram
    # observes); None when not measured, and then left out of the line
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ts, datetime) or self.ts.utcoffset() is None:
            raise ValueError(f"ts must be a timezone-aware datetime, got {self.ts!r}")
        if self.ts.tzinfo is not UTC:
            object.__setattr__(self, "ts", self.ts.astimezone(UTC))
        _require_str("request_id", self.request_id)
        _require_str("customer_id", self.customer_id)
        _require_str("model_version", self.model_version)
        _require_str("variant", self.variant, optional=True)
        _require_str("fallback_reason", self.fallback_reason, optional=True)
        _require_str("as_of", self.as_of)
        items = list(self.items)
        if not all(isinstance(item, str) for item in items):
            raise ValueError(f"items must be strings, got {items!r}")
        scores = [float(score) for score in self.scores]  # numpy floats -> float
        if len(scores) != len(items):
            raise ValueError(f"{len(items)} items but {len(scores)} scores")
        if not all(map(math.isfinite, scores)):
            raise ValueError(f"scores must be finite, got {scores!r}")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "scores", scores)
        if self.latency_ms is not None:
            latency = self.latency_ms
            if isinstance(latency, bool) or not isinstance(latency, int | float):
                raise ValueError(f"latency_ms must be a number or None, got {latency!r}")
            latency = float(latency)  # numpy floats -> float
            if not (math.isfinite(latency) and latency >= 0.0):
                raise ValueError(f"latency_ms must be finite and >= 0, got {latency!r}")
            object.__setattr__(self, "latency_ms", latency)

    def to_json(self) -> str:
        """One log line (without the newline): compact, ASCII-only JSON, ts as ISO 8601 UTC;
        ``latency_ms`` only when measured (so such a line is what older writers wrote)."""
        line = {
            "ts": self.ts.isoformat(timespec="microseconds"),
            "request_id": self.request_id,
            "customer_id": self.customer_id,
            "model_version": self.model_version,
            "variant": self.variant,
            "items": self.items,
            "scores": self.scores,
            "fallback_reason": self.fallback_reason,
            "as_of": self.as_of,
        }
        if self.latency_ms is not None:
            line["latency_ms"] = self.latency_ms
        return _ENCODER.encode(line)


def empty_frame() -> pd.DataFrame:
    """A served frame without rows (columns and dtypes of :data:`FRAME_DTYPES`)."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in FRAME_DTYPES.items()})


def _utc_bound(name: str, value: datetime | pd.Timestamp | str | None) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")
    return stamp.tz_convert("UTC")


class ServedLog:
    """An append-only JSON-lines file of :class:`ServedRecord`; cheap appends from many
    processes, reads that skip torn lines. The write descriptor opens on first use (or
    :meth:`open`) and stays open until :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer = jsonl.JsonlWriter(
            self.path, dumps=ServedRecord.to_json, lock="large", keep_open=True
        )

    def __repr__(self) -> str:
        return f"ServedLog({str(self.path)!r})"

    def __enter__(self) -> ServedLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> ServedLog:
        """Open the file for appending (creating it and its folder), sealing a torn last line
        left by a crashed writer. Idempotent; raises OSError when the file cannot be opened."""
        self._writer.open()
        return self

    def close(self) -> None:
        """Close the write descriptor (a later append opens it again)."""
        self._writer.close()

    def append(self, records: Iterable[ServedRecord]) -> int:
        """Append the records (not fsync'ed); returns how many were written. A batch of at most
        PIPE_BUF bytes is one unlocked ``os.write``; a longer one holds an exclusive flock. On a
        failed write the line may be torn: the next append seals it first."""
        records = list(records)
        for record in records:
            if not isinstance(record, ServedRecord):
                raise TypeError(f"expected ServedRecord, got {type(record).__name__}")
        return self._writer.append(records)

    def read(
        self,
        since: datetime | pd.Timestamp | str | None = None,
        until: datetime | pd.Timestamp | str | None = None,
    ) -> pd.DataFrame:
        """The records served in ``[since, until)`` (timezone-aware bounds, either optional), in
        append order (columns :data:`FRAME_DTYPES`); empty when the file is missing or empty.
        Torn lines are skipped: :meth:`read_with_report` also says how many."""
        return self.read_with_report(since, until)[0]

    def read_with_report(
        self,
        since: datetime | pd.Timestamp | str | None = None,
        until: datetime | pd.Timestamp | str | None = None,
    ) -> tuple[pd.DataFrame, int]:
        """The records in ``[since, until)`` and the number of torn lines skipped (in the whole
        file, whatever the bounds). Raises :class:`ServedLogError` on a line that is JSON but
        not a served record, naming the file and the 1-based line."""
        lower, upper = _utc_bound("since", since), _utc_bound("until", until)
        # Torn: the piece after the last newline (a crash, or a write in progress right now),
        # sealed lines, and fragments another worker's line was appended to (not JSON).
        lines, sealed = jsonl.read_lines(self.path)
        parsed = jsonl.parse_lines(lines)
        columns: dict[str, list[Any]] = {name: [] for name in FRAME_DTYPES}
        appenders = [(name, columns[name].append) for name in _REQUIRED_FIELDS]
        add_latency = columns["latency_ms"].append
        for index, raw, record in parsed:
            if (
                not isinstance(record, dict)
                or not _REQUIRED_FIELDS <= record.keys() <= _FIELDS
                or not _is_latency(record.get("latency_ms"))
            ):
                raise ServedLogError(
                    f"{self.path}: line {index + 1} is not a served record "
                    f"(fields {sorted(record) if isinstance(record, dict) else type(record)}): "
                    f"{raw[:200]!r}"
                )
            for name, add in appenders:
                add(record[name])
            add_latency(record.get("latency_ms"))
        skipped = sealed + parsed.torn
        if not columns["ts"]:
            return empty_frame(), skipped
        frame = pd.DataFrame(columns, columns=list(FRAME_DTYPES))
        try:
            frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise ServedLogError(f"{self.path}: a ts is not an ISO 8601 time ({exc})") from exc
        if lower is not None or upper is not None:
            keep = pd.Series(True, index=frame.index)
            if lower is not None:
                keep &= frame["ts"] >= lower
            if upper is not None:
                keep &= frame["ts"] < upper
            frame = frame.loc[keep.to_numpy()].reset_index(drop=True)
        return frame.astype(FRAME_DTYPES), skipped


def _is_latency(value: Any) -> bool:
    """A line's ``latency_ms``: absent/null or a JSON number (not a bool)."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))
