"""The recommendation service's feedback log: a durable, append-only file of JSON lines.

The service appends what shoppers did with its recommendations (impressions, clicks,
add-to-carts, purchases, each linked to the recommendation's request id); the ingestion assets
read the same file back as an event source (``kind: feedback`` in a source config), so served
traffic becomes training and monitoring data.

Durability and concurrency (:class:`~recsys_assets.core.jsonl.JsonlWriter`, durable, always
locked): each :meth:`FeedbackLog.append` writes its whole batch with one ``os.write`` on a
descriptor opened with ``O_APPEND``, holding an exclusive ``flock`` (several server workers may
append), then ``fsync``\\s before it returns (and the folder, when it created the file). A batch
that was acknowledged is on disk; a crash mid-write can leave at most one incomplete ("torn")
line at the end. Readers skip and count it; the next writer first terminates it with
:data:`TORN_LINE_MARK`, so it never merges with the next record. The file is never rewritten or
truncated.

Line numbers are stable as the log grows, so ``feedback:<line>`` event ids are too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.core import jsonl

FEEDBACK_TYPES: tuple[str, ...] = ("impression", "click", "add_to_cart", "purchase")

# Feedback type -> canonical event type. Impressions are not shopper events: they stay in the
# log (monitoring, click-through rates) and are counted, never ingested as events.
EVENT_TYPE_OF_FEEDBACK: dict[str, str | None] = {
    "impression": None,
    "click": c.VIEW,
    "add_to_cart": c.ADD_TO_CART,
    "purchase": c.PURCHASE,
}

# Canonical fields a feedback source provides (what the quarantine rules may rely on). Prices
# are left out on purpose: clicks and add-to-carts usually carry none, and the price rule would
# quarantine every one of them; where a price is known it is kept.
CANONICAL_FIELDS: tuple[str, ...] = (
    c.USER_ID,
    c.ITEM_ID,
    c.EVENT_TS,
    c.EVENT_TYPE,
    c.QUANTITY,
    c.ORDER_ID,
)

# Appended by a writer to a torn last line (left by a crash) before its own records, so the
# fragment stays a line of its own that readers recognise and skip (the mark of every log).
TORN_LINE_MARK = jsonl.TORN_LINE_MARK

LINE = "line"  # 0-based line number of the record in the log (lineage, stable event ids)


class FeedbackLogError(ValueError):
    """A feedback log that cannot be read; the message names the file and the line."""


def _require_id(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _require_amount(name: str, value: Any) -> float | None:
    """None, or a finite number >= 0 (as float)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class FeedbackEvent:
    """One shopper event on a recommended item, linked to the recommendation's request id.

    ``ts`` must be timezone-aware and is stored in UTC. ``order_value`` is the whole order's
    value (for average order value), ``unit_price`` the price of one unit of this item.
    ``position`` is the 1-based rank the item was shown at (like ``constants.RANK``).
    """

    request_id: str
    customer_id: str
    item_id: str
    feedback_type: str
    ts: datetime
    quantity: int = 1
    unit_price: float | None = None
    order_id: str | None = None
    order_value: float | None = None
    model_version: str | None = None
    variant: str | None = None
    position: int | None = None

    def __post_init__(self) -> None:
        for name in ("request_id", "customer_id", "item_id"):
            _require_id(name, getattr(self, name))
        if self.feedback_type not in FEEDBACK_TYPES:
            raise ValueError(
                f"feedback_type must be one of {list(FEEDBACK_TYPES)}, got {self.feedback_type!r}"
            )
        if not isinstance(self.ts, datetime):
            raise ValueError(f"ts must be a datetime, got {type(self.ts).__name__}")
        if self.ts.tzinfo is None or self.ts.utcoffset() is None:
            raise ValueError(f"ts must be timezone-aware (UTC), got naive {self.ts.isoformat()}")
        object.__setattr__(self, "ts", self.ts.astimezone(UTC))
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int):
            raise ValueError(f"quantity must be an integer, got {self.quantity!r}")
        if self.quantity < 1:
            raise ValueError(f"quantity must be at least 1, got {self.quantity}")
        object.__setattr__(self, "unit_price", _require_amount("unit_price", self.unit_price))
        object.__setattr__(self, "order_value", _require_amount("order_value", self.order_value))
        _require_id("order_id", self.order_id, optional=True)
        for name in ("model_version", "variant"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or None, got {value!r}")
        if self.position is not None and (
            isinstance(self.position, bool)
            or not isinstance(self.position, int)
            or self.position < 1
        ):
            raise ValueError(
                f"position must be an integer >= 1 (1-based rank), got {self.position!r}"
            )

    def to_json(self) -> str:
        """One log line (without the newline): compact, ASCII-only JSON, ts as ISO 8601 UTC."""
        record = asdict(self)
        record["ts"] = self.ts.isoformat(timespec="microseconds")
        return json.dumps(record, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FeedbackEvent:
        """The event of a parsed log line; raises ValueError on unknown or missing fields."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}")
        ts = record.get("ts")
        if isinstance(ts, str):
            try:
                ts = datetime.fromisoformat(ts)
            except ValueError:
                raise ValueError(f"ts is not an ISO 8601 timestamp: {ts!r}") from None
        try:
            return cls(**{**record, "ts": ts})
        except TypeError as exc:  # a required field is missing
            raise ValueError(str(exc)) from None


# Columns of a feedback frame (what FeedbackLog.read returns) and their dtypes.
FRAME_DTYPES: dict[str, str] = {
    LINE: "int64",
    "request_id": "string",
    "customer_id": "string",
    "item_id": "string",
    "feedback_type": "string",
    "ts": "datetime64[ns, UTC]",
    "quantity": "int64",
    "unit_price": "float64",
    "order_id": "string",
    "order_value": "float64",
    "model_version": "string",
    "variant": "string",
    "position": "Int64",
}


def events_to_frame(
    events: Iterable[FeedbackEvent], lines: Iterable[int] | None = None
) -> pd.DataFrame:
    """A typed feedback frame (columns :data:`FRAME_DTYPES`); ``lines`` default to 0, 1, ..."""
    events = list(events)
    columns: dict[str, Any] = {
        LINE: list(lines) if lines is not None else list(range(len(events))),
    }
    for f in fields(FeedbackEvent):
        columns[f.name] = [getattr(e, f.name) for e in events]
    frame = pd.DataFrame(columns, columns=list(FRAME_DTYPES))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.astype(FRAME_DTYPES)  # None -> NaN in float columns, <NA> elsewhere


class FeedbackLog:
    """An append-only JSON-lines file of :class:`FeedbackEvent`; safe for concurrent writers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer = jsonl.JsonlWriter(
            self.path, dumps=FeedbackEvent.to_json, durable=True, sync_directory=True
        )

    def __repr__(self) -> str:
        return f"FeedbackLog({str(self.path)!r})"

    def append(self, events: Iterable[FeedbackEvent]) -> int:
        """Write the events durably (fsync'ed before returning); returns how many were written."""
        events = list(events)
        for event in events:
            if not isinstance(event, FeedbackEvent):
                raise TypeError(f"expected FeedbackEvent, got {type(event).__name__}")
        return self._writer.append(events)

    def read(self) -> pd.DataFrame:
        """Every event in the log, in append order (columns :data:`FRAME_DTYPES`; empty when the
        file does not exist yet). Torn lines left by a crash are skipped."""
        return self.read_with_report()[0]

    def read_with_report(self) -> tuple[pd.DataFrame, int]:
        """The events and the number of torn lines skipped (a crash mid-write).

        A line that is not a valid event anywhere else raises :class:`FeedbackLogError` naming
        the file and the 1-based line number.
        """
        # a consistent snapshot (no half-written batch); torn lines, sealed or last, left out
        raw_lines, skipped = jsonl.read_lines(self.path, shared_lock=True)
        events: list[FeedbackEvent] = []
        lines: list[int] = []
        for index, raw in raw_lines:
            text = raw.decode("utf-8", errors="replace")
            try:
                record = json.loads(text)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                events.append(FeedbackEvent.from_record(record))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise FeedbackLogError(
                    f"{self.path}: line {index + 1} is not a valid feedback event ({exc}): "
                    f"{text[:200]!r}"
                ) from exc
            lines.append(index)
        return events_to_frame(events, lines), skipped


def to_canonical_events(
    frame: pd.DataFrame, source_name: str = "feedback"
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Feedback rows as canonical events (``constants.CANONICAL_COLUMNS``), and the number of
    feedback rows of each type (impressions included: counted, never silently dropped).

    Impressions are left out; click -> view, add_to_cart and purchase keep their names.
    event_id is ``<source_name>:<line>`` and source_row the 0-based line in the log;
    event_ts is UTC without a timezone (the canonical table is timezone-naive). A unit price of
    0 becomes null: the canonical tables hold positive prices or none.
    """
    counts = {kind: int((frame["feedback_type"] == kind).sum()) for kind in FEEDBACK_TYPES}
    event_types = frame["feedback_type"].astype("object").map(EVENT_TYPE_OF_FEEDBACK)
    shopper = frame.loc[event_types.notna().to_numpy()].reset_index(drop=True)
    event_types = event_types.dropna().reset_index(drop=True)
    lines = shopper[LINE].astype("int64")
    unit_price = shopper["unit_price"].astype("float64")
    none = pd.Series(pd.array([None] * len(shopper), dtype="string"))
    events = pd.DataFrame(
        {
            c.EVENT_ID: source_name + ":" + lines.astype("string"),
            c.SOURCE_ROW: lines,
            c.EVENT_TS: shopper["ts"].dt.tz_convert("UTC").dt.tz_localize(None),
            c.USER_ID: shopper["customer_id"].astype("string"),
            c.ITEM_ID: shopper["item_id"].astype("string"),
            c.EVENT_TYPE: event_types.astype("string"),
            c.QUANTITY: shopper["quantity"].astype("float64"),
            c.UNIT_PRICE: unit_price.where(unit_price > 0),
            c.ORDER_ID: shopper["order_id"].astype("string"),
            c.DESCRIPTION: none,
            c.COUNTRY: none,
            c.DEVICE: none,
        },
        columns=list(c.CANONICAL_COLUMNS),
    )
    events[c.EVENT_TS] = events[c.EVENT_TS].astype("datetime64[ns]")
    return events, counts
