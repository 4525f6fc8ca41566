"""One readable timeline of what happened to the product, from the records each part keeps.

Sources, each a plain list of dictionaries so the function stays pure:

- the loop's event log (drift, retraining decisions, training, promotion, serving, canary
  decisions, rollbacks: :mod:`recsys_assets.monitoring.loop`);
- the control-plane audit log (every promote, deploy, rollback and canary-share decision, allow
  or deny: :mod:`recsys_assets.access.control`);
- the data-plane audit log of the service (:mod:`recsys_assets.access.policy`): its denies one by
  one; its allows, one per served request, only counted;
- Dagster runs (job, status, trigger, start and end), read from the instance by
  :func:`dagster_runs`.

:func:`timeline` merges them, oldest first, into :class:`Entry` rows with a one-line summary;
:func:`canary_incidents` reads a canary's detection and resolution times off the loop events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_assets.core import jsonl
from recsys_assets.monitoring.loop import seconds_between

ACCESS_TAIL_BYTES = 8 << 20  # the data-plane audit read by the dashboard: its newest ~30k lines
LOOP = "loop"
CONTROL = "control"
ACCESS = "access"
PIPELINE = "pipeline"
SOURCES = (LOOP, CONTROL, ACCESS, PIPELINE)

# Loop event fields worth a word in the summary, in this order.
_SUMMARY_FIELDS = (
    "model_version",
    "challenger_tag",
    "action",
    "current_share",
    "next_share",
    "fire",
    "triggers",
    "reason",
    "reasons",
    "tag",
)


@dataclass(frozen=True)
class Entry:
    """One thing that happened: when (ISO UTC), where it was recorded, what, who, in a line."""

    ts: str
    source: str
    kind: str
    summary: str
    subject: str | None = None
    run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: Any) -> str:
    """Any timestamp the records hold (ISO text, epoch seconds, datetime) as ISO UTC."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds")
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat(timespec="milliseconds")


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "; ".join(_short(v) for v in value) if value else "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def loop_entries(events: Iterable[Mapping[str, Any]]) -> list[Entry]:
    """The loop's events: the kind, and the fields that say what it decided or did."""
    entries = []
    for event in events:
        if "ts" not in event or "kind" not in event:
            continue
        parts = [f"{name} {_short(event[name])}" for name in _SUMMARY_FIELDS if name in event]
        entries.append(
            Entry(
                ts=_iso(event["ts"]),
                source=LOOP,
                kind=str(event["kind"]),
                summary=", ".join(parts) or str(event["kind"]),
                subject=event.get("by"),
                run_id=event.get("run_id"),
            )
        )
    return entries


def _resource_words(resource: Mapping[str, Any]) -> str:
    extra = [
        f"{k} {_short(v)}" for k, v in resource.items() if k not in ("environment", "type", "plane")
    ]
    where = f"in {resource.get('environment', '?')}"
    return " ".join([where, *(["(" + ", ".join(extra) + ")"] if extra else [])])


def audit_entries(
    audit: Iterable[Mapping[str, Any]], *, source: str, allows_one_by_one: bool
) -> list[Entry]:
    """Audit lines (:meth:`~recsys_assets.access.policy.AuditLog.record`) as entries. With
    ``allows_one_by_one`` False (the data plane: an allow per request), denies are listed and
    allows summed into one entry per action at the time of the last one."""
    entries: list[Entry] = []
    allowed: dict[str, list[str]] = {}
    for line in audit:
        if "time" not in line:
            continue
        action, effect = line.get("action", "?"), line.get("effect", "?")
        if effect == "allow" and not allows_one_by_one:
            allowed.setdefault(action, []).append(_iso(line["time"]))
            continue
        # the reason names the rule that decided ("allowed by allow-x: ..."), or why none did
        entries.append(
            Entry(
                ts=_iso(line["time"]),
                source=source,
                kind=f"{effect}:{action}",
                summary=f"{effect} {action} {_resource_words(line.get('resource') or {})}: "
                f"{line.get('reason', '')}",
                subject=line.get("subject"),
            )
        )
    for action, times in allowed.items():
        entries.append(
            Entry(
                ts=max(times),
                source=source,
                kind=f"allow:{action}",
                summary=f"{len(times)} {action} requests allowed between {min(times)} and "
                f"{max(times)}",
            )
        )
    return entries


def run_entries(runs: Iterable[Mapping[str, Any]]) -> list[Entry]:
    """Dagster runs (:func:`dagster_runs`): one entry when each started and one when it ended."""
    entries = []
    for run in runs:
        trigger = run.get("trigger")
        by = f" (trigger {trigger})" if trigger else ""
        if run.get("start"):
            entries.append(
                Entry(
                    _iso(run["start"]),
                    PIPELINE,
                    "run_started",
                    f"{run['job']} started{by}",
                    run_id=run["run_id"],
                )
            )
        if run.get("end"):
            seconds = run["end"] - run["start"] if run.get("start") else None
            took = f" after {seconds:.1f} s" if seconds is not None else ""
            entries.append(
                Entry(
                    _iso(run["end"]),
                    PIPELINE,
                    f"run_{run['status'].lower()}",
                    f"{run['job']} {run['status'].lower()}{took}",
                    run_id=run["run_id"],
                )
            )
    return entries


def timeline(
    *,
    loop_events: Iterable[Mapping[str, Any]] = (),
    control_audit: Iterable[Mapping[str, Any]] = (),
    access_audit: Iterable[Mapping[str, Any]] = (),
    runs: Iterable[Mapping[str, Any]] = (),
    since: str | None = None,
) -> list[Entry]:
    """Every source merged, oldest first (ties keep the source order above); ``since`` (ISO)
    drops what came before it."""
    entries = [
        *loop_entries(loop_events),
        *audit_entries(control_audit, source=CONTROL, allows_one_by_one=True),
        *audit_entries(access_audit, source=ACCESS, allows_one_by_one=False),
        *run_entries(runs),
    ]
    if since is not None:
        cutoff = _iso(since)
        entries = [e for e in entries if e.ts >= cutoff]
    order = {source: rank for rank, source in enumerate(SOURCES)}
    return sorted(entries, key=lambda e: (e.ts, order.get(e.source, len(order))))


def read_jsonl(path: str | Path, *, tail_bytes: int | None = None) -> list[dict[str, Any]]:
    """A JSON-lines file's records (with ``tail_bytes``, those in its last bytes only: a data
    plane audit log grows by a line per request, and the line the bound cuts is left out); a
    missing file is empty and a torn line is skipped."""
    return jsonl.read_records(path, tail_bytes=tail_bytes)


def dagster_runs(instance: Any, limit: int = 200) -> list[dict[str, Any]]:
    """The newest ``limit`` runs of a Dagster instance: run id, job, status, trigger tag, start
    and end (epoch seconds, None while unknown)."""
    records = instance.get_run_records(limit=limit)
    return [
        {
            "run_id": record.dagster_run.run_id,
            "job": record.dagster_run.job_name,
            "status": record.dagster_run.status.value,
            "trigger": record.dagster_run.tags.get("recsys/trigger"),
            "start": record.start_time,
            "end": record.end_time,
        }
        for record in records
    ]


@dataclass(frozen=True)
class CanaryIncident:
    """A challenger the canary analysis rolled back: when it went live, when the breach was
    detected (the rollback decision) and when the rollback took effect (the ``rolled_back``
    event: the service stops routing to it within its state refresh)."""

    challenger: str | None
    started: str | None
    detected: str
    resolved: str | None
    reasons: tuple[str, ...]

    @property
    def mttd_s(self) -> float | None:
        return seconds_between(self.started, self.detected)

    @property
    def mttr_s(self) -> float | None:
        return seconds_between(self.detected, self.resolved)


def canary_incidents(
    events: Sequence[Mapping[str, Any]],
    *,
    started_kind: str = "canary_started",
    decision_kind: str = "canary_decision",
    rolled_back_kind: str = "rolled_back",
) -> list[CanaryIncident]:
    """Each rollback decision of the canary analysis with the challenger's start before it and
    the rollback that followed, oldest first. A challenger is known by its ``challenger_tag``."""
    ordered = sorted(events, key=lambda e: pd.Timestamp(e["ts"]))
    started: dict[str | None, str] = {}
    found: list[CanaryIncident] = []
    open_ones: dict[str | None, dict[str, Any]] = {}
    closed: set[str | None] = set()  # rolled back: later decisions on it are after the fact
    for event in ordered:
        kind, tag = event.get("kind"), event.get("challenger_tag")
        if kind == started_kind:
            started[tag] = event["ts"]
            closed.discard(tag)
        elif (
            kind == decision_kind
            and event.get("action") == "rollback"
            and tag not in open_ones
            and tag not in closed
        ):
            open_ones[tag] = {
                "challenger": tag,
                "started": started.get(tag),
                "detected": event["ts"],
                "reasons": tuple(event.get("reasons", ())),
            }
        elif kind == rolled_back_kind and tag in open_ones:
            found.append(CanaryIncident(**open_ones.pop(tag), resolved=event["ts"]))
            closed.add(tag)
    found.extend(CanaryIncident(**o, resolved=None) for o in open_ones.values())
    return sorted(found, key=lambda i: i.detected)
