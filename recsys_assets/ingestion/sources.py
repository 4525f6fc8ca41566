"""Event sources: a small YAML config maps any interactions file onto the canonical event table.

A source is one of
- ``kind: file``: a CSV (plain or gzip-compressed), parquet or Excel (.xlsx) export, or every
  file a glob pattern matches, with a column mapping (the default UCI Online Retail copy is just
  such a file, see ``data/sources/online_retail.yaml``);
- ``kind: synthetic``: the seeded generator in :mod:`recsys_assets.ingestion.synthetic`;
- ``kind: feedback``: the recommendation service's feedback log (JSON lines, fixed schema, see
  :mod:`recsys_assets.ingestion.feedback`): served traffic read back as events.

Reading is strict about the file as a whole (it must be readable, non-empty, have the required
columns, numbers where numbers belong and parseable timestamps) and raises :class:`SourceError`
naming the file, the column and the problem. Row-level business problems (cancellations, missing
customers, ...) are not errors here: they are quarantined later with a reason per row.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import zipfile
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from recsys_assets.core import constants as c
from recsys_assets.ingestion import feedback

SOURCE_KINDS = ("file", "synthetic", "feedback")
SUPPORTED_FORMATS = ("csv", "parquet", "excel")
FORMAT_OF_SUFFIX = {"xlsx": "excel", "xlsm": "excel"}  # file suffixes named after their format
ALL_SHEETS = "all"  # ``sheets: all``: every worksheet of a workbook, in workbook order
PARTITION_GRANULARITIES = ("daily", "monthly")
NUMERIC_FIELDS = (c.QUANTITY, c.UNIT_PRICE)
ID_FIELDS = (c.USER_ID, c.ITEM_ID, c.ORDER_ID)
TEXT_FIELDS = (c.USER_ID, c.ITEM_ID, c.EVENT_TYPE, c.ORDER_ID, c.DESCRIPTION, c.COUNTRY, c.DEVICE)


RATING = "rating"  # label of the rating column in messages (not a canonical field)


class SourceError(ValueError):
    """A source file or source config that cannot be ingested; the message says why."""


@dataclass(frozen=True)
class PartitionSpec:
    """How events are cut into time partitions; start/end are inferred from the data if unset."""

    granularity: str = "monthly"
    start: str | None = None  # first partition's start date, ISO (inclusive)
    end: str | None = None  # end of the last partition, ISO (exclusive)


@dataclass(frozen=True)
class SourceSpec:
    """Where events come from and how their columns map onto the canonical event table."""

    name: str
    kind: str = "file"  # one of SOURCE_KINDS
    path: Path | None = None  # resolved path of the file (kind: file) or log (kind: feedback)
    format: str | None = None  # "csv", "parquet" or "excel" (kind: file)
    columns: dict[str, str] = field(default_factory=dict)  # canonical field -> source column
    header: bool = True  # False: a CSV (or sheet) without a header row, its columns are ``names``
    names: tuple[str, ...] = ()  # column names of a headerless CSV, in file order
    sheets: str | tuple[str, ...] | None = None  # excel: names in reading order, or ALL_SHEETS;
    # None: the workbook's only sheet
    timestamp_format: str | None = None  # strptime format; ISO 8601 when unset
    timestamp_unit: str | None = None  # "s" or "ms": event_ts holds Unix timestamps (UTC)
    event_types: dict[str, str] = field(default_factory=dict)  # source value -> EVENT_TYPES
    rating_column: str | None = None  # explicit ratings: the column that holds them
    positive_rating: float | None = None  # ratings >= it are purchases, lower ones views
    cancellation_prefix: str | None = None  # order ids starting with it are cancellations
    product_item_pattern: str | None = None  # regex an item id must match to be a product
    missing_tokens: tuple[str, ...] = ()  # literal strings that mean "missing" (e.g. "nan")
    partitions: PartitionSpec = field(default_factory=PartitionSpec)
    synthetic: dict[str, Any] = field(default_factory=dict)  # generator knobs (kind: synthetic)
    split_date: str | None = None  # first day of the evaluation's test period; None: the last
    # 10% of the data's time range (it shapes the evaluation, not the events: not hashed)
    config_path: Path | None = None  # the YAML this spec came from

    @property
    def present_fields(self) -> tuple[str, ...]:
        """Canonical fields this source provides (all of them for the synthetic generator)."""
        if self.kind == "synthetic":
            return c.REQUIRED_FIELDS + c.OPTIONAL_FIELDS
        if self.kind == "feedback":
            return feedback.CANONICAL_FIELDS
        provided = set(self.columns) | ({c.EVENT_TYPE} if self.rating_column else set())
        return tuple(f for f in c.REQUIRED_FIELDS + c.OPTIONAL_FIELDS if f in provided)

    @property
    def read_columns(self) -> dict[str, str]:
        """What is read from the file: label (canonical field or "rating") -> column."""
        rating = {RATING: self.rating_column} if self.rating_column else {}
        return {**self.columns, **rating}

    def describe(self) -> str:
        return f"synthetic source '{self.name}'" if self.kind == "synthetic" else str(self.path)


_SPEC_KEYS = {
    "name",
    "kind",
    "split_date",
    "path",
    "format",
    "columns",
    "header",
    "names",
    "sheets",
    "timestamp_format",
    "timestamp_unit",
    "event_types",
    "rating_column",
    "positive_rating",
    "cancellation_prefix",
    "product_item_pattern",
    "missing_tokens",
    "partitions",
    "synthetic",
    "description",
    "license",
}


# Settings added after the first release (all of them for kind: file only).
_LATER = {
    "header",
    "names",
    "sheets",
    "timestamp_unit",
    "event_types",
    "rating_column",
    "positive_rating",
}


def load_source_spec(config_path: str | Path) -> SourceSpec:
    """Read and check a source config; paths inside it are relative to the config file."""
    config_path = Path(config_path).resolve()
    try:
        raw = yaml.safe_load(config_path.read_text())
    except FileNotFoundError as exc:
        raise SourceError(f"{config_path}: source config not found") from exc
    except yaml.YAMLError as exc:
        raise SourceError(f"{config_path}: source config is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SourceError(f"{config_path}: source config must be a mapping of settings")
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise SourceError(
            f"{config_path}: unknown setting(s) {unknown}; known: {sorted(_SPEC_KEYS)}"
        )
    if "name" not in raw:
        raise SourceError(f"{config_path}: 'name' is required")

    kind = raw.get("kind", "file")
    partitions = _parse_partitions(config_path, raw.get("partitions") or {})
    common = dict(
        name=str(raw["name"]),
        kind=kind,
        partitions=partitions,
        config_path=config_path,
        missing_tokens=tuple(str(t) for t in raw.get("missing_tokens") or ()),
        split_date=_parse_split_date(config_path, raw),
    )
    if kind == "synthetic":
        return SourceSpec(
            **common,
            synthetic=dict(raw.get("synthetic") or {}),
            cancellation_prefix=raw.get("cancellation_prefix"),
            product_item_pattern=raw.get("product_item_pattern"),
        )
    if kind not in SOURCE_KINDS:
        raise SourceError(f"{config_path}: kind must be one of {list(SOURCE_KINDS)}, got {kind!r}")

    if "path" not in raw:
        raise SourceError(f"{config_path}: 'path' (the events file) is required for kind: {kind}")
    path = (config_path.parent / str(raw["path"])).resolve()
    if kind == "feedback":
        return _feedback_spec(config_path, raw, common, path)
    gzipped = path.name.lower().endswith(".gz")
    fmt = raw.get("format") or Path(path.name[:-3] if gzipped else path.name).suffix
    fmt = str(fmt).lstrip(".").lower()
    fmt = FORMAT_OF_SUFFIX.get(fmt, fmt)
    if gzipped and fmt != "csv":
        raise SourceError(f"{config_path}: gzip-compressed files must be csv, not {fmt}")
    if fmt == "xls":
        raise SourceError(
            f"{config_path}: {path.name} is an old binary Excel workbook (.xls), which cannot be "
            "read; save it as .xlsx"
        )
    if fmt not in SUPPORTED_FORMATS:
        raise SourceError(
            f"{config_path}: format {fmt!r} of {path.name} is not supported; "
            f"use one of {list(SUPPORTED_FORMATS)} (set 'format:' explicitly)"
        )
    columns = raw.get("columns") or {}
    if not isinstance(columns, dict):
        raise SourceError(f"{config_path}: 'columns' must map canonical fields to column names")
    known_fields = set(c.REQUIRED_FIELDS + c.OPTIONAL_FIELDS)
    bad_fields = sorted(set(columns) - known_fields)
    if bad_fields:
        raise SourceError(
            f"{config_path}: unknown field(s) {bad_fields} in 'columns'; "
            f"required: {list(c.REQUIRED_FIELDS)}, optional: {list(c.OPTIONAL_FIELDS)}"
        )
    missing = [f for f in c.REQUIRED_FIELDS if f not in columns]
    if missing:
        raise SourceError(f"{config_path}: 'columns' must map the required field(s) {missing}")
    columns = {k: str(v) for k, v in columns.items()}
    rating_column, positive_rating = _parse_rating(config_path, raw, columns)
    read = {**columns, **({RATING: rating_column} if rating_column else {})}
    header, names = _parse_header(config_path, raw, fmt, read)
    return SourceSpec(
        **common,
        path=path,
        format=fmt,
        columns=columns,
        header=header,
        names=names,
        sheets=_parse_sheets(config_path, raw, fmt),
        timestamp_format=raw.get("timestamp_format"),
        timestamp_unit=_parse_timestamp_unit(config_path, raw),
        event_types=_parse_event_types(config_path, raw, columns),
        rating_column=rating_column,
        positive_rating=positive_rating,
        cancellation_prefix=raw.get("cancellation_prefix"),
        product_item_pattern=raw.get("product_item_pattern"),
    )


def _parse_split_date(config_path: Path, raw: dict[str, Any]) -> str | None:
    """``split_date``: an ISO date (or date and time) the evaluation's test period starts at."""
    value = raw.get("split_date")
    if value is None:
        return None
    try:
        return pd.Timestamp(str(value)).isoformat()
    except ValueError as exc:
        raise SourceError(
            f"{config_path}: 'split_date' must be an ISO date such as 2011-11-01, got {value!r}"
        ) from exc


def _feedback_spec(
    config_path: Path, raw: dict[str, Any], common: dict[str, Any], path: Path
) -> SourceSpec:
    """A feedback log has a fixed schema: no format, column mapping or timestamp format."""
    fixed = sorted(({"format", "columns", "timestamp_format", "synthetic"} | _LATER) & set(raw))
    if fixed:
        raise SourceError(
            f"{config_path}: {fixed} cannot be set for kind: feedback (the log's schema is fixed)"
        )
    return SourceSpec(
        **common,
        path=path,
        cancellation_prefix=raw.get("cancellation_prefix"),
        product_item_pattern=raw.get("product_item_pattern"),
    )


TIMESTAMP_UNITS = {"s": "seconds", "ms": "milliseconds"}


def _parse_timestamp_unit(config_path: Path, raw: dict[str, Any]) -> str | None:
    unit = raw.get("timestamp_unit")
    if unit is None:
        return None
    if unit not in TIMESTAMP_UNITS:
        raise SourceError(
            f"{config_path}: timestamp_unit must be one of {list(TIMESTAMP_UNITS)} "
            f"(Unix seconds or milliseconds), got {unit!r}"
        )
    if raw.get("timestamp_format") is not None:
        raise SourceError(
            f"{config_path}: set 'timestamp_format' (text dates) or 'timestamp_unit' "
            "(Unix timestamps), not both"
        )
    return unit


def _parse_event_types(
    config_path: Path, raw: dict[str, Any], columns: dict[str, str]
) -> dict[str, str]:
    """The export's event-type values -> view / add_to_cart / purchase."""
    mapping = raw.get("event_types")
    if mapping is None:
        return {}
    if not isinstance(mapping, dict) or not mapping:
        raise SourceError(
            f"{config_path}: 'event_types' must map the export's event-type values to "
            f"{list(c.EVENT_TYPES)}"
        )
    if c.EVENT_TYPE not in columns:
        raise SourceError(f"{config_path}: 'event_types' needs 'columns.event_type' to be mapped")
    bad = {str(k): v for k, v in mapping.items() if v not in c.EVENT_TYPES}
    if bad:
        raise SourceError(
            f"{config_path}: 'event_types' maps {bad}; each value must map to one of "
            f"{list(c.EVENT_TYPES)}"
        )
    return {str(k): str(v) for k, v in mapping.items()}


def _parse_rating(
    config_path: Path, raw: dict[str, Any], columns: dict[str, str]
) -> tuple[str | None, float | None]:
    """Explicit ratings: the rating column and the lowest rating that counts as a purchase."""
    column, threshold = raw.get("rating_column"), raw.get("positive_rating")
    if column is None and threshold is None:
        return None, None
    if column is None or threshold is None:
        raise SourceError(
            f"{config_path}: explicit ratings need both 'rating_column' and 'positive_rating' "
            "(the lowest rating that counts as a purchase)"
        )
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise SourceError(f"{config_path}: 'positive_rating' must be a number, got {threshold!r}")
    if c.EVENT_TYPE in columns or "event_types" in raw:
        raise SourceError(
            f"{config_path}: with 'rating_column' the event type comes from the rating; "
            "leave out 'columns.event_type' and 'event_types'"
        )
    return str(column), float(threshold)


def _parse_header(
    config_path: Path, raw: dict[str, Any], fmt: str, columns: dict[str, str]
) -> tuple[bool, tuple[str, ...]]:
    """``header: false`` with ``names``: a CSV (or sheet) whose first row is data; mapped columns
    are named."""
    header = raw.get("header", True)
    if not isinstance(header, bool):
        raise SourceError(f"{config_path}: 'header' must be true or false, got {header!r}")
    names = raw.get("names")
    if header:
        if names is not None:
            raise SourceError(
                f"{config_path}: 'names' is only for a file without a header (set 'header: false')"
            )
        return True, ()
    if fmt not in ("csv", "excel"):
        raise SourceError(
            f"{config_path}: 'header: false' applies to csv and excel files only, not {fmt}"
        )
    if not isinstance(names, list) or not names:
        raise SourceError(
            f"{config_path}: 'header: false' needs 'names', the list of the file's column names "
            "in file order"
        )
    names = [str(n) for n in names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SourceError(f"{config_path}: 'names' lists {repeated} more than once")
    unnamed = {f: col for f, col in columns.items() if col not in names}
    if unnamed:
        described = ", ".join(f"'{col}' (mapped to {f})" for f, col in unnamed.items())
        raise SourceError(f"{config_path}: column(s) {described} not in 'names' {names}")
    return False, tuple(names)


def _parse_sheets(config_path: Path, raw: dict[str, Any], fmt: str) -> str | tuple[str, ...] | None:
    """``sheets``: one sheet name, a list of them (read in that order), or ``all``."""
    sheets = raw.get("sheets")
    if sheets is None:
        return None
    if fmt != "excel":
        raise SourceError(f"{config_path}: 'sheets' applies to excel workbooks only, not {fmt}")
    if sheets == ALL_SHEETS:
        return ALL_SHEETS
    listed = sheets if isinstance(sheets, list) else [sheets]
    if not listed or any(
        isinstance(s, bool) or not isinstance(s, str | int) or not str(s) for s in listed
    ):
        raise SourceError(
            f"{config_path}: 'sheets' must be a sheet name, a list of sheet names or "
            f"{ALL_SHEETS!r}, got {sheets!r}"
        )
    names = [str(s) for s in listed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SourceError(f"{config_path}: 'sheets' lists {repeated} more than once")
    return tuple(names)


def _parse_partitions(config_path: Path, raw: dict[str, Any]) -> PartitionSpec:
    granularity = raw.get("granularity", "monthly")
    if granularity not in PARTITION_GRANULARITIES:
        raise SourceError(
            f"{config_path}: partitions.granularity must be one of "
            f"{list(PARTITION_GRANULARITIES)}, got {granularity!r}"
        )
    start, end = raw.get("start"), raw.get("end")
    return PartitionSpec(
        granularity=granularity,
        start=str(start) if start is not None else None,
        end=str(end) if end is not None else None,
    )


# --- Fingerprints -------------------------------------------------------------------------


def _default(spec_field: Any) -> Any:
    if spec_field.default_factory is not MISSING:
        return spec_field.default_factory()
    return spec_field.default


def is_pattern(path: Path) -> bool:
    """Whether a source path is a glob pattern (``exports/*.csv``) rather than one file."""
    return any(ch in part for part in path.parts for ch in "*?[")


def _pattern_root(path: Path) -> Path:
    """The folder a pattern starts from: its parts before the first with a wildcard."""
    root = Path(path.anchor)
    for part in path.relative_to(path.anchor).parts:
        if any(ch in part for ch in "*?["):
            break
        root /= part
    return root


def source_files(spec: SourceSpec) -> list[Path]:
    """The files a ``kind: file`` source reads: its path, or every file its pattern matches,
    in order of their path below the pattern's folder."""
    assert spec.path is not None
    if not is_pattern(spec.path):
        return [spec.path]
    root = _pattern_root(spec.path)
    pattern = spec.path.relative_to(root).as_posix()
    matches = sorted((f for f in root.glob(pattern) if f.is_file()), key=lambda f: str(f))
    if not matches:
        raise SourceError(f"{spec.path}: no file matches this pattern")
    return matches


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Settings added after the first release: left out of the hash while at their default, so a
# config that does not use them keeps its hash (and its stored partitions stay current).
_LATER_SETTINGS = {f.name: f for f in fields(SourceSpec) if f.name in _LATER}


_NOT_EVENT_SETTINGS = ("config_path", "split_date")  # change no event: outside the config hash


def config_sha256(spec: SourceSpec) -> str:
    """A hash of every setting that shapes the events (mapping, rules' settings, partitions)."""
    settings = {
        k: v
        for k, v in asdict(spec).items()
        if k not in _NOT_EVENT_SETTINGS
        and not (k in _LATER_SETTINGS and v == _default(_LATER_SETTINGS[k]))
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def source_fingerprint(spec: SourceSpec) -> dict[str, Any]:
    """What identifies the exact input: the file's sha256 and size (or the generator's knobs),
    and the hash of the source settings that map and judge it."""
    if spec.kind == "synthetic":
        knobs = json.dumps(spec.synthetic, sort_keys=True, default=str)
        return {
            "kind": "synthetic",
            "sha256": hashlib.sha256(knobs.encode()).hexdigest(),
            "config_sha256": config_sha256(spec),
        }
    assert spec.path is not None
    if spec.kind == "file" and is_pattern(spec.path):
        return _pattern_fingerprint(spec)
    what = "feedback log" if spec.kind == "feedback" else "source file"
    try:
        stat = spec.path.stat()
    except FileNotFoundError as exc:
        raise SourceError(f"{spec.path}: {what} not found") from exc
    except OSError as exc:
        raise SourceError(f"{spec.path}: cannot read {what}: {exc.strerror}") from exc
    return {
        "kind": spec.kind,  # "file" or "feedback": an append-only log changes size as it grows
        "path": str(spec.path),
        "bytes": stat.st_size,
        "sha256": _file_sha256(str(spec.path), stat.st_size, stat.st_mtime_ns),
        "config_sha256": config_sha256(spec),
    }


def _pattern_fingerprint(spec: SourceSpec) -> dict[str, Any]:
    """Every matched file, in reading order: its path below the pattern's folder and sha256."""
    assert spec.path is not None
    root = _pattern_root(spec.path)
    digest, names, total = hashlib.sha256(), [], 0
    for path in source_files(spec):
        try:
            stat = path.stat()
            sha = _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)
        except OSError as exc:
            raise SourceError(f"{path}: cannot read source file: {exc.strerror}") from exc
        name = path.relative_to(root).as_posix()
        digest.update(f"{name}\0{sha}\n".encode())
        names.append(name)
        total += stat.st_size
    return {
        "kind": spec.kind,
        "path": str(spec.path),
        "files": names,
        "bytes": total,
        "sha256": digest.hexdigest(),
        "config_sha256": config_sha256(spec),
    }


# --- Reading ------------------------------------------------------------------------------


def load_events(spec: SourceSpec) -> pd.DataFrame:
    """The whole source as a canonical event table (see ``constants.CANONICAL_COLUMNS``).

    Cached per source fingerprint, so a run over many partitions reads the file once.
    Callers get a frame they must not modify in place.
    """
    key = (repr(spec), source_fingerprint(spec)["sha256"])
    if key not in _EVENTS_CACHE:
        events = _READERS[spec.kind](spec)
        while len(_EVENTS_CACHE) >= _EVENTS_CACHE_SIZE:
            _EVENTS_CACHE.pop(next(iter(_EVENTS_CACHE)))
        _EVENTS_CACHE[key] = events
    return _EVENTS_CACHE[key]


_EVENTS_CACHE: dict[tuple[str, str], pd.DataFrame] = {}
_EVENTS_CACHE_SIZE = 2


def _file_events(spec: SourceSpec) -> pd.DataFrame:
    """Each matched file (each selected sheet of a workbook) read and checked on its own
    (messages name it), rows numbered on."""
    parts, first_row = [], 0
    for path in source_files(spec):
        one = replace(spec, path=path)
        frames = _read_workbook(one) if one.format == "excel" else {None: _read_file(one)}
        for sheet, frame in frames.items():
            try:
                parts.append(to_canonical(frame, one, first_row=first_row))
            except SourceError as exc:
                if sheet is None:
                    raise
                message = str(exc).removeprefix(f"{path}: ")
                raise SourceError(f"{_in_sheet(path, sheet)}: {message}") from exc
            first_row += len(parts[-1])
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def _feedback_events(spec: SourceSpec) -> pd.DataFrame:
    """Clicks, add-to-carts and purchases of the feedback log; impressions are counted only.

    The frame's ``attrs`` hold ``feedback_counts`` (rows per feedback type) and
    ``feedback_skipped_lines`` (torn lines left by a crash), for run metadata.
    """
    path = spec.path
    assert path is not None
    try:
        frame, skipped = feedback.FeedbackLog(path).read_with_report()
    except feedback.FeedbackLogError as exc:
        raise SourceError(str(exc)) from exc
    except OSError as exc:
        raise SourceError(f"{path}: cannot read feedback log: {exc.strerror}") from exc
    events, counts = feedback.to_canonical_events(frame, source_name=spec.name)
    if events.empty:
        raise SourceError(
            f"{path}: feedback log holds no click, add_to_cart or purchase events yet "
            f"(rows per type: {counts}, torn lines skipped: {skipped})"
        )
    events.attrs["feedback_counts"] = counts
    events.attrs["feedback_skipped_lines"] = skipped
    return events


def _synthetic_events(spec: SourceSpec) -> pd.DataFrame:
    from recsys_assets.ingestion.synthetic import SyntheticConfig, generate_events

    try:
        config = SyntheticConfig.from_dict(spec.synthetic)
    except (TypeError, ValueError) as exc:
        raise SourceError(f"{spec.config_path}: bad synthetic settings: {exc}") from exc
    generated = generate_events(config)
    identity = {f: f for f in c.REQUIRED_FIELDS + c.OPTIONAL_FIELDS if f in generated.columns}
    return to_canonical(generated, replace(spec, columns=identity))


def _check_not_empty(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"{path}: source file not found")
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: source file is empty (0 bytes)")


def _read_file(spec: SourceSpec) -> pd.DataFrame:
    path = spec.path
    assert path is not None
    wanted = list(dict.fromkeys(spec.read_columns.values()))
    _check_not_empty(path)
    try:
        if spec.format == "parquet":
            import pyarrow.parquet as pq

            available = pq.read_schema(path).names
            _require_columns(spec, available)
            frame = pq.read_table(path, columns=wanted).to_pandas()
        elif spec.header:
            header = pd.read_csv(path, nrows=0)
            _require_columns(spec, list(header.columns))
            frame = pd.read_csv(
                path, usecols=wanted, dtype=str, keep_default_na=False, na_values=[""]
            )
        else:
            frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, na_values=[""])
            if frame.shape[1] != len(spec.names):
                raise SourceError(
                    f"{path}: the file has {frame.shape[1]} column(s) but 'names' lists "
                    f"{len(spec.names)}: {list(spec.names)} (first row: "
                    f"{frame.iloc[0].fillna('').tolist()})"
                )
            frame.columns = list(spec.names)
            frame = frame[wanted]
    except SourceError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise SourceError(f"{path}: source file is empty (no header or rows)") from exc
    except Exception as exc:  # pyarrow / csv parser errors carry the detail
        raise SourceError(f"{path}: cannot read {spec.format} file: {exc}") from exc
    if frame.empty:
        raise SourceError(f"{path}: source file has a header but no rows")
    return frame


def _require_columns(
    spec: SourceSpec, available: list[str], where: str | None = None, what: str = "file"
) -> None:
    missing = {f: col for f, col in spec.read_columns.items() if col not in available}
    if missing:
        described = ", ".join(f"'{col}' (mapped to {f})" for f, col in missing.items())
        raise SourceError(
            f"{where or spec.path}: column(s) {described} not found; the {what} has columns "
            f"{available}"
        )


def _in_sheet(path: Path, sheet: str) -> str:
    """How messages name one sheet of a workbook."""
    return f"{path}, sheet {sheet!r}"


def _read_workbook(spec: SourceSpec) -> dict[str, pd.DataFrame]:
    """The selected sheets of an .xlsx workbook, in reading order, each checked on its own.

    Cells keep the types the workbook stores (numbers, datetimes, text), as a parquet column
    does: text stays text (``00123`` keeps its zeros); ids, numbers and timestamps then go
    through the same parsing as a CSV's."""
    import openpyxl

    path = spec.path
    assert path is not None
    _check_not_empty(path)
    try:
        handle = path.open("rb")  # a handle: openpyxl refuses a path by its suffix
    except OSError as exc:
        raise SourceError(f"{path}: cannot read source file: {exc.strerror}") from exc
    with handle:
        try:
            book = openpyxl.load_workbook(handle, read_only=True, data_only=True, keep_links=False)
        except zipfile.BadZipFile as exc:
            raise SourceError(
                f"{path}: cannot read excel file: not an .xlsx workbook ({exc})"
            ) from exc
        except Exception as exc:  # a damaged package: openpyxl's and zipfile's errors say what
            raise SourceError(f"{path}: cannot read excel file: {exc}") from exc
        try:
            return _read_sheets(spec, book)
        except SourceError:
            raise
        except Exception as exc:  # a damaged sheet inside a readable package
            raise SourceError(f"{path}: cannot read excel file: {exc}") from exc
        finally:
            book.close()


def _read_sheets(spec: SourceSpec, book: Any) -> dict[str, pd.DataFrame]:
    """The sheets ``sheets`` selects (the only one when unset), each read on its own."""
    path = spec.path
    assert path is not None
    available = [sheet.title for sheet in book.worksheets]
    if spec.sheets is None and len(available) != 1:
        raise SourceError(
            f"{path}: the workbook has {len(available)} sheets {available}; set 'sheets' to "
            f"the one(s) to read (a name, a list of names, or {ALL_SHEETS})"
        )
    every = spec.sheets is None or spec.sheets == ALL_SHEETS
    selected = available if every else list(spec.sheets or ())
    missing = [name for name in selected if name not in available]
    if missing:
        raise SourceError(
            f"{path}: sheet(s) {missing} not found; the workbook has sheets {available}"
        )
    return {name: _read_sheet(spec, book[name], _in_sheet(path, name)) for name in selected}


def _read_sheet(spec: SourceSpec, sheet: Any, where: str) -> pd.DataFrame:
    """One worksheet's mapped columns; blank rows are skipped and empty text is a blank cell,
    as in a CSV."""
    sheet.reset_dimensions()  # some writers record a wrong sheet size; read every stored cell
    rows = (row for row in sheet.iter_rows(values_only=True) if any(_filled(v) for v in row))
    if spec.header:
        header = next(rows, None)
        if header is None:
            raise SourceError(f"{where}: the sheet is empty (no header or rows)")
        columns = [_header_text(v, i) for i, v in enumerate(header[: _width(header)])]
        _require_columns(spec, columns, where, "sheet")
    else:
        columns = list(spec.names)
    wanted = list(dict.fromkeys(spec.read_columns.values()))
    at = [columns.index(name) for name in wanted]  # the first column of a name, as for a CSV
    cells: list[list[Any]] = [[] for _ in wanted]
    first_row, width = None, 0
    for row in rows:
        if first_row is None:
            first_row = row
        if not spec.header:
            width = max(width, _width(row))
        for values, i in zip(cells, at, strict=True):
            value = row[i] if i < len(row) else None
            values.append(None if value == "" else value)
    if first_row is None:
        raise SourceError(
            f"{where}: the sheet has a header but no rows"
            if spec.header
            else f"{where}: the sheet is empty (no rows)"
        )
    if not spec.header and width != len(columns):
        shown = ["" if v is None else v for v in first_row[: _width(first_row)]]
        raise SourceError(
            f"{where}: the sheet has {width} column(s) but 'names' lists {len(columns)}: "
            f"{columns} (first row: {shown})"
        )
    return pd.DataFrame(
        {
            name: pd.Series(values, dtype=object).infer_objects()
            for name, values in zip(wanted, cells, strict=True)
        }
    )


def _filled(value: Any) -> bool:
    return value is not None and value != ""


def _width(row: tuple[Any, ...]) -> int:
    """Cells up to the last filled one."""
    return max((i + 1 for i, v in enumerate(row) if _filled(v)), default=0)


def _header_text(value: Any, position: int) -> str:
    """A header cell as the column's name: text as written, 2011.0 as "2011", blank "Unnamed: i"
    (as pandas names a CSV's blank header)."""
    if value is None:
        return f"Unnamed: {position}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_canonical(frame: pd.DataFrame, spec: SourceSpec, first_row: int = 0) -> pd.DataFrame:
    """Rename, type and complete a source frame; raises SourceError on wrong types.

    Rows are numbered from ``first_row`` (the rows of the files read before this one)."""
    source_of = spec.columns
    n = len(frame)
    out: dict[str, Any] = {
        c.EVENT_ID: pd.array(
            [f"{spec.name}:{i}" for i in range(first_row, first_row + n)], dtype="string"
        ),
        c.SOURCE_ROW: np.arange(first_row, first_row + n, dtype="int64"),
        c.EVENT_TS: _parse_timestamps(frame[source_of[c.EVENT_TS]], spec),
    }
    for fld in NUMERIC_FIELDS:
        if fld in source_of:
            out[fld] = _parse_numbers(frame[source_of[fld]], spec, fld)
        elif fld == c.QUANTITY:
            out[fld] = np.full(n, c.DEFAULT_QUANTITY, dtype="float64")
        else:
            out[fld] = np.full(n, np.nan, dtype="float64")
    for fld in TEXT_FIELDS:
        if fld in source_of:
            out[fld] = _to_text(frame[source_of[fld]], spec.missing_tokens, fld in ID_FIELDS)
            if fld == c.EVENT_TYPE and spec.event_types:
                out[fld] = _map_event_types(out[fld], spec)
        elif fld == c.EVENT_TYPE and spec.rating_column:
            out[fld] = _rating_event_types(frame[spec.rating_column], spec)
        elif fld == c.EVENT_TYPE:
            out[fld] = pd.array([c.DEFAULT_EVENT_TYPE] * n, dtype="string")
        else:
            out[fld] = pd.array([None] * n, dtype="string")
    return pd.DataFrame(out, columns=list(c.CANONICAL_COLUMNS))


def _parse_timestamps(values: pd.Series, spec: SourceSpec) -> pd.Series:
    column = spec.columns[c.EVENT_TS]
    expected = f"timestamps in format {spec.timestamp_format or 'ISO 8601'}"
    setting = "timestamp_format"
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = values
    elif spec.timestamp_unit:
        expected = f"Unix timestamps in {TIMESTAMP_UNITS[spec.timestamp_unit]}"
        setting = "timestamp_unit"
        parsed = _parse_unix(values, spec, column)
    else:
        dates = _date_cells(values)
        text = (values.where(~dates) if dates.any() else values).astype("string")
        fmt = spec.timestamp_format or "ISO8601"
        try:
            parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        except (ValueError, TypeError) as exc:
            raise SourceError(
                f"{spec.path}: column '{column}' (event timestamp): cannot parse with format "
                f"{fmt!r}: {exc}"
            ) from exc
        if dates.any():  # date cells as they are; the format is for the text ones
            parsed = parsed.where(~dates, pd.to_datetime(values.where(dates), errors="coerce"))
    bad = parsed.isna()
    if bad.any():
        examples = values[bad].astype("string").fillna("<empty>").unique()[:5].tolist()
        raise SourceError(
            f"{spec.path}: column '{column}' (event timestamp): {int(bad.sum())} value(s) are "
            f"missing or not {expected}, "
            f"e.g. {examples} (first at row {int(np.flatnonzero(bad.to_numpy())[0])}); "
            f"fix the file or set '{setting}' in the source config"
        )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]").reset_index(drop=True)


def _date_cells(values: pd.Series) -> pd.Series:
    """Which values are dates already: a workbook column can mix date cells and text cells."""
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) == "string":
        return pd.Series(False, index=values.index)
    return values.map(lambda v: isinstance(v, dt.date)).astype(bool)


def _rating_event_types(values: pd.Series, spec: SourceSpec) -> pd.Series:
    """Ratings >= ``positive_rating`` are purchases, lower ones views; no rating: null."""
    ratings = _parse_numbers(values, spec, RATING, column=spec.rating_column)
    types = np.where(ratings >= spec.positive_rating, c.PURCHASE, c.VIEW).astype(object)
    types[np.isnan(ratings)] = None
    return pd.Series(pd.array(types, dtype="string"))


def _map_event_types(values: pd.Series, spec: SourceSpec) -> pd.Series:
    """Apply ``event_types``; a value it does not list fails the source (nulls stay null)."""
    mapped = values.map(spec.event_types)
    unmapped = values.notna() & mapped.isna()
    if unmapped.any():
        counts = values[unmapped].value_counts()
        listed = ", ".join(f"{value!r} ({int(n)} rows)" for value, n in counts.head(10).items())
        more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
        raise SourceError(
            f"{spec.path}: column '{spec.columns[c.EVENT_TYPE]}' (event_type): "
            f"{int(unmapped.sum())} row(s) hold value(s) that 'event_types' does not map: "
            f"{listed}{more}; add them to 'event_types' in the source config"
        )
    return mapped.astype("string")


def _parse_unix(values: pd.Series, spec: SourceSpec, column: str) -> pd.Series:
    """Unix seconds or milliseconds (UTC) as naive UTC timestamps; NaT where not a number."""
    numbers = pd.to_numeric(values, errors="coerce")
    try:
        return pd.to_datetime(numbers, unit=spec.timestamp_unit, errors="raise")
    except (ValueError, OverflowError) as exc:  # OutOfBoundsDatetime is a ValueError
        other = "ms" if spec.timestamp_unit == "s" else "s"
        raise SourceError(
            f"{spec.path}: column '{column}' (event timestamp): values out of range for Unix "
            f"{TIMESTAMP_UNITS[spec.timestamp_unit]} (largest {numbers.max():.0f}); is the unit "
            f"'{other}'? ({exc})"
        ) from exc


def _parse_numbers(
    values: pd.Series, spec: SourceSpec, fld: str, column: str | None = None
) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna() & values.notna()
    if spec.missing_tokens:
        bad &= ~values.astype("string").isin(spec.missing_tokens)
    if bad.any():
        column = column or spec.columns[fld]
        examples = values[bad].astype("string").unique()[:5].tolist()
        raise SourceError(
            f"{spec.path}: column '{column}' ({fld}) must hold numbers, but "
            f"{int(bad.sum())} value(s) do not, e.g. {examples} "
            f"(first at row {int(np.flatnonzero(bad.to_numpy())[0])})"
        )
    return parsed.to_numpy(dtype="float64", na_value=np.nan)


def _to_text(values: pd.Series, missing_tokens: tuple[str, ...], is_id: bool) -> pd.Series:
    """Labels as trimmed strings, with missing tokens and blanks as nulls (Arrow kernels: fast).

    Numeric ids exported through a float column (17850.0 or "17850.0") become "17850".
    """
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if (finite == np.floor(finite)).all():
            values = values.astype("Int64")
    if values.dtype == object:
        values = values.astype("string")  # mixed objects (ints, strs) to text first
    text = pc.cast(pa.Array.from_pandas(values), pa.string())
    text = pc.utf8_trim_whitespace(text)
    if is_id:
        text = pc.replace_substring_regex(text, pattern=r"^(\d+)\.0+$", replacement=r"\1")
    missing = pc.equal(text, "")
    if missing_tokens:
        missing = pc.or_(missing, pc.is_in(text, value_set=pa.array(missing_tokens)))
    text = pc.if_else(pc.fill_null(missing, False), pa.scalar(None, pa.string()), text)
    return pd.Series(pd.array(text.to_pylist(), dtype="string"))


_READERS = {"file": _file_events, "synthetic": _synthetic_events, "feedback": _feedback_events}


def window(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Events with start <= event_ts < end, in source order, with a fresh index."""
    ts = events[c.EVENT_TS]
    return events.loc[(ts >= start) & (ts < end)].reset_index(drop=True)


def time_range(spec: SourceSpec) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last event time of a source (used to infer partition bounds)."""
    ts = load_events(spec)[c.EVENT_TS]
    return ts.min(), ts.max()
