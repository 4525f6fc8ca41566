"""The continuous-deployment loop's decisions and records: when to retrain, and how fast it went.

Three parts, all pure:

- :class:`LoopLog`, an append-only JSON-lines file of loop events. The retraining sensor writes
  every decision to it (fired or not, with the trigger values and the reason); the training,
  promotion and deployment steps write when they finished. It is the record MTTD, MTTR and
  deployment velocity are computed from, so nothing about them is guessed.
- :func:`retraining_decision`: the triggers (data drift, item mix, prediction drift, live
  performance, model age) against the thresholds of ``monitoring`` in the environment's settings,
  with the guards that keep the loop from flapping (a retraining already running, the cooldown,
  a broken feed). A trigger whose signal was not judged (its monitor had nothing to compare)
  is neither fired nor healthy: the decision records it as not judged, with the reason.
- :func:`incidents` and :func:`kpis`: from the log, per drift incident the time to detect (first
  drifted data landed -> the decision that fired), the time to recover (detection -> the retrained
  model serving) and the deployment time (training finished -> serving), with their history.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_assets.config.settings import AUTO
from recsys_assets.core import jsonl

# Event kinds, in the order one incident goes through them.
DRIFT_LANDED = "drift_landed"  # ground truth or annotation: the first drifted data landed
DATA_LANDED = "data_landed"  # a partition of events was ingested
DECISION = "decision"  # the retraining sensor evaluated its triggers (fired or not)
MONITORS_REQUESTED = "monitors_requested"  # new data: the sensor asked for the monitors to run
TRAINING_FINISHED = "training_finished"  # the ranker of a retraining run was fitted
PROMOTED = "promoted"  # the gate passed and the model is in the registry
GATE_REFUSED = "gate_refused"  # the gate refused the challenger: nothing is deployed
SERVING = "serving"  # a service answers with this model version
CANARY_STARTED = "canary_started"  # a challenger began answering customers in a canary
CANARY_DECISION = "canary_decision"  # the canary analysis judged the challenger (any action)
ROLLED_BACK = "rolled_back"  # the challenger was taken out of service after a rollback decision
CANARY_WIDENED = "canary_widened"  # the canary analysis raised the challenger's share
CANARY_PROMOTED = "canary_promoted"  # the challenger got every customer (analyser or a person)
# gate passed, or a clean canary, where only a release manager may promote (prod)
AWAITING_APPROVAL = "awaiting_approval"
RELEASED = "released"  # a release bundle entered this environment (the release ledger has it)
EVENT_KINDS = (
    DRIFT_LANDED,
    DATA_LANDED,
    MONITORS_REQUESTED,
    DECISION,
    TRAINING_FINISHED,
    PROMOTED,
    GATE_REFUSED,
    SERVING,
    CANARY_STARTED,
    CANARY_DECISION,
    ROLLED_BACK,
    CANARY_WIDENED,
    CANARY_PROMOTED,
    AWAITING_APPROVAL,
    RELEASED,
)


def now_utc() -> str:
    """The wall clock in ISO 8601 UTC, as every loop event stamps it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


_dumps = functools.partial(json.dumps, separators=(",", ":"), default=str, allow_nan=False)


class LoopLog:
    """Append-only JSON lines ``{"ts": ..., "kind": ..., ...}``; safe for several writers.

    Low rate (a few events a minute), so every append takes an exclusive lock, writes whole
    lines and fsyncs (:class:`~recsys_assets.core.jsonl.JsonlWriter`, durable): a decision that
    was logged is on disk. A crashed writer's fragment is ended with a bare newline, so it stays
    a line of its own; readers skip lines that are not JSON.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer = jsonl.JsonlWriter(self.path, dumps=_dumps, durable=True, seal="newline")

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Record one event now (``ts`` may be given for events stamped elsewhere)."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown loop event kind {kind!r}; known: {list(EVENT_KINDS)}")
        record = {"ts": fields.pop("ts", None) or now_utc(), "kind": kind, **fields}
        self._writer.append([record])
        return record

    def read(self, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every well-formed event in the order written (optionally only some kinds)."""
        wanted = set(kinds) if kinds is not None else None
        return [
            record
            for record in jsonl.read_records(self.path)  # torn lines skipped
            if isinstance(record, dict) and (wanted is None or record.get("kind") in wanted)
        ]

    def last(self, kind: str, **match: Any) -> dict[str, Any] | None:
        """The newest event of ``kind`` whose fields equal ``match``."""
        for record in reversed(self.read([kind])):
            if all(record.get(k) == v for k, v in match.items()):
                return record
        return None


# --- The retraining decision ---------------------------------------------------------------

# A monitor's outcome, in its materialisation and check metadata (key "outcome"): judged and
# within its thresholds, judged and over one, or not judged (nothing to compare, too few lists,
# a figure that cannot be computed; key "reason" says why). Not judged is unknown, not healthy.
PASSED = "passed"
FAILED = "failed"
NOT_JUDGED = "not_judged"
OUTCOMES = (PASSED, FAILED, NOT_JUDGED)


@dataclass(frozen=True)
class Signals:
    """What the monitors saw in the latest window (None or NaN: not measured, e.g. no served
    lists). ``not_judged``: trigger (or ``data_quality``) -> why its monitor could not judge."""

    latest_data_ts: str | None = None  # newest landed event
    model_version: str | None = None  # the serving (newest promoted) model
    model_data_end: str | None = None  # the newest purchase that model was trained on
    data_drift_share: float | None = None  # share of the ranker's features drifted
    item_mix_distance: float | None = None  # JS distance of bought items, reference vs latest
    quality_problems: tuple[str, ...] = ()  # a broken feed, not a shift in behaviour
    score_ks: float | None = None  # served scores, reference vs latest
    served_item_distance: float | None = None  # recommended items, reference vs latest
    performance_drop: float | None = None  # relative drop of the live hit rate
    scored_lists: int = 0  # served lists whose delayed ground truth is in
    monitored_at: str | None = None  # when the monitors ran
    not_judged: dict[str, str] = field(default_factory=dict)  # signal -> why not judged

    @property
    def new_data_days(self) -> float | None:
        """Days of data landed since the serving model's data end."""
        if self.latest_data_ts is None or self.model_data_end is None:
            return None
        gap = _ts(self.latest_data_ts) - _ts(self.model_data_end)
        return gap.total_seconds() / 86_400


@dataclass(frozen=True)
class Decision:
    """Whether to retrain now, which triggers fired, which could not be judged, and why it did
    or did not fire."""

    fire: bool
    triggers: tuple[str, ...]  # triggers over their threshold
    reason: str  # one sentence for the log and the UI
    values: dict[str, Any] = field(default_factory=dict)  # every signal and threshold used
    not_judged: dict[str, str] = field(default_factory=dict)  # signal -> why it was not judged

    def as_event(self) -> dict[str, Any]:
        return {"fire": self.fire, "triggers": list(self.triggers), "reason": self.reason,
                "values": self.values, "not_judged": dict(self.not_judged)}  # fmt: skip


def _ts(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _over(value: float | None, threshold: float) -> bool:
    return value is not None and not math.isnan(value) and value >= threshold


def _unknown(*values: float | None) -> bool:
    return any(value is None or math.isnan(value) for value in values)


def retraining_decision(
    signals: Signals,
    thresholds: Any,
    *,
    last_retraining_data_ts: str | None = None,
    retraining_running: bool = False,
) -> Decision:
    """Retrain when any trigger is over its threshold, unless a guard holds it back.

    ``thresholds`` has the fields of ``config.settings.MonitoringSettings``. Triggers:
    ``data_drift`` (drifted feature share >= ``drift_share``), ``item_mix`` (JS distance of the
    bought items >= ``item_mix_distance``), ``prediction_drift`` (served scores' KS >=
    ``score_ks`` or recommended items' JS >= ``served_item_distance``), ``performance``
    (relative hit-rate drop >= ``performance_drop`` over at least ``min_lists`` lists) and
    ``model_age`` (new data since the model's data end >= ``max_model_age_days``).
    Guards, in order: no model serving yet; a retraining run in progress; quality problems (a
    broken feed must be fixed, not learnt); the cooldown (less than ``cooldown_days`` of data
    since the data end of the last retraining request).

    Not judged: a trigger not over its threshold whose monitor could not judge
    (``signals.not_judged``), whose signal is unknown (None or NaN) or, for ``performance``,
    with fewer than ``min_lists`` scored lists. It never fires and is not counted as healthy:
    ``Decision.not_judged`` (and the decision event) lists it with the reason, and the reason
    sentence says so.
    """
    t = thresholds
    limits = asdict(t) if hasattr(t, "__dataclass_fields__") else dict(t)
    values = {**asdict(signals), "new_data_days": signals.new_data_days, "thresholds": limits}
    performance = signals.performance_drop if signals.scored_lists >= t.min_lists else None
    checks = {
        "data_drift": _over(signals.data_drift_share, t.drift_share),
        "item_mix": _over(signals.item_mix_distance, t.item_mix_distance),
        "prediction_drift": _over(signals.score_ks, t.score_ks)
        or _over(signals.served_item_distance, t.served_item_distance),
        "performance": _over(performance, t.performance_drop),
        "model_age": _over(signals.new_data_days, t.max_model_age_days),
    }
    triggers = tuple(name for name, over in checks.items() if over)
    unknown = {
        "data_drift": _unknown(signals.data_drift_share),
        "item_mix": _unknown(signals.item_mix_distance),
        "prediction_drift": _unknown(signals.score_ks, signals.served_item_distance),
        "performance": _unknown(signals.performance_drop),
        "model_age": signals.new_data_days is None,
    }
    not_judged: dict[str, str] = {}
    for name, over in checks.items():
        if over:
            continue  # a signal over its threshold was judged
        if name in signals.not_judged:
            not_judged[name] = str(signals.not_judged[name])
        elif unknown[name]:
            not_judged[name] = "not measured"
        elif name == "performance" and signals.scored_lists < t.min_lists:
            not_judged[name] = f"{signals.scored_lists} scored lists, at least {t.min_lists} needed"
    for name, why in signals.not_judged.items():  # e.g. data_quality: a guard, not a trigger
        if name not in checks:
            not_judged[name] = str(why)
    unjudged = "; ".join(f"{name} ({why})" for name, why in not_judged.items())
    suffix = f"; not judged: {unjudged}" if not_judged else ""

    def hold(reason: str) -> Decision:
        return Decision(False, triggers, reason, values, not_judged)

    if signals.model_version is None:
        return hold("no promoted model yet: the first one comes from the full pipeline")
    if retraining_running:
        return hold("a retraining run is in progress; the service keeps the current model")
    if signals.quality_problems:
        return hold(
            "data quality problems, fix the feed first: " + "; ".join(signals.quality_problems)
        )
    if not triggers:
        if all(name in not_judged for name in checks):
            return hold(f"no trigger judged, nothing fires on unknown: {unjudged}")
        return hold("no trigger over its threshold" + suffix)
    if last_retraining_data_ts is not None and signals.latest_data_ts is not None:
        since = (_ts(signals.latest_data_ts) - _ts(last_retraining_data_ts)).total_seconds()
        if since < t.cooldown_days * 86_400:
            return hold(
                f"cooldown: {since / 86_400:.2f} of {t.cooldown_days:g} days of data since the "
                f"last retraining; triggers {list(triggers)} wait"
            )
    reason = f"retrain: {', '.join(triggers)} over threshold{suffix}"
    return Decision(True, triggers, reason, values, not_judged)


# --- KPIs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    """One drift incident: when drifted data landed, was detected and a recovered model served."""

    landed: str | None  # first drifted data landed (None: not annotated)
    detected: str  # the decision that fired
    triggers: tuple[str, ...]
    training_finished: str | None = None
    promoted: str | None = None
    serving: str | None = None  # the retrained model answered requests
    model_version: str | None = None
    refused: bool = False  # the gate refused the retrained model
    evaluations: int | None = None  # sensor evaluations from the landing to the detection

    @property
    def mttd_s(self) -> float | None:
        return seconds_between(self.landed, self.detected)

    @property
    def mttr_s(self) -> float | None:
        return seconds_between(self.detected, self.serving)

    @property
    def deployment_s(self) -> float | None:
        return seconds_between(self.training_finished, self.serving)


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one event time (ISO) to another; None when either is unknown."""
    if start is None or end is None:
        return None
    return (_ts(end) - _ts(start)).total_seconds()


def incidents(events: Iterable[Mapping[str, Any]]) -> list[Incident]:
    """Drift incidents in the log, oldest first.

    An incident opens at a decision that fired. Its ``landed`` time is the newest
    ``drift_landed`` event since the previous incident, if any. It is followed by the first
    ``training_finished`` after it, the ``promoted`` or ``gate_refused`` after that, and the
    ``serving`` event of the promoted version.
    """
    ordered = sorted((dict(e) for e in events), key=lambda e: _ts(e["ts"]))
    found: list[Incident] = []
    landed: str | None = None
    evaluations = 0  # logged sensor evaluations (monitors requested, decisions) since landing
    current: dict[str, Any] | None = None
    for event in ordered:
        kind = event.get("kind")
        if kind == DRIFT_LANDED and current is None:
            landed = landed or event["ts"]
        elif kind in (MONITORS_REQUESTED, DECISION) and current is None and landed is not None:
            evaluations += 1
        if kind == DRIFT_LANDED:
            continue
        if kind == DECISION and event.get("fire") and current is None:
            current = {"landed": landed, "detected": event["ts"],
                       "triggers": tuple(event.get("triggers", ())),
                       "evaluations": evaluations if landed is not None else None}  # fmt: skip
            landed, evaluations = None, 0
        elif current is None:
            continue
        elif kind == TRAINING_FINISHED and "training_finished" not in current:
            current["training_finished"] = event["ts"]
        elif kind == GATE_REFUSED and "training_finished" in current:
            found.append(Incident(**current, refused=True))
            current = None
        elif kind == PROMOTED and "training_finished" in current and "promoted" not in current:
            current["promoted"] = event["ts"]
            current["model_version"] = event.get("model_version")
        elif kind == SERVING and event.get("model_version") == current.get("model_version", 0):
            found.append(Incident(**current, serving=event["ts"]))
            current = None
    if current is not None:
        found.append(Incident(**current))  # still open
    return found


def deployments(events: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Every model version that reached a service: when its training finished, when it was
    promoted and first served, and the seconds from training to serving."""
    first: dict[tuple[str, str], str] = {}
    for event in sorted((dict(e) for e in events), key=lambda e: _ts(e["ts"])):
        version = event.get("model_version")
        if version and event.get("kind") in (TRAINING_FINISHED, PROMOTED, SERVING):
            first.setdefault((event["kind"], version), event["ts"])
    rows = []
    for (kind, version), served in first.items():
        if kind != SERVING:
            continue
        trained = first.get((TRAINING_FINISHED, version))
        rows.append({
            "model_version": version,
            "training_finished": trained,
            "promoted": first.get((PROMOTED, version)),
            "serving": served,
            "deployment_s": seconds_between(trained, served),
        })  # fmt: skip
    columns = ["model_version", "training_finished", "promoted", "serving", "deployment_s"]
    return pd.DataFrame(rows, columns=columns)


def kpis(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """MTTD, MTTR and deployment velocity (means and latest) with their history."""
    events = list(events)
    found = incidents(events)
    released = deployments(events)

    def stats(values: list[float | None]) -> dict[str, float | None]:
        known = [float(v) for v in values if v is not None and not math.isnan(v)]
        return {
            "count": len(known),
            "mean_s": float(sum(known) / len(known)) if known else None,
            "latest_s": known[-1] if known else None,
        }

    return {
        "incidents": len(found),
        "open_incidents": sum(1 for i in found if i.serving is None and not i.refused),
        "refused_by_gate": sum(1 for i in found if i.refused),
        "mttd": stats([i.mttd_s for i in found]),
        "evaluations_to_detect": [i.evaluations for i in found if i.evaluations is not None],
        "mttr": stats([i.mttr_s for i in found]),
        "deployment": stats(released["deployment_s"].tolist()),
        "deployments": len(released),
        "history": [
            {**asdict(i), "mttd_s": i.mttd_s, "mttr_s": i.mttr_s, "deployment_s": i.deployment_s}
            for i in found
        ],
        "releases": released.to_dict("records"),
    }


# --- Monitoring windows -----------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """The reference window (the last days the serving model was trained on) and the current
    one (the latest landed days, never before the model's data end); naive UTC, end exclusive."""

    reference_start: pd.Timestamp
    reference_end: pd.Timestamp
    current_start: pd.Timestamp
    current_end: pd.Timestamp

    def as_metadata(self) -> dict[str, str]:
        return {name: str(value) for name, value in asdict(self).items()}


def monitoring_windows(
    latest_ts: pd.Timestamp | str,
    model_data_end: pd.Timestamp | str,
    *,
    reference_days: float | str,
    window_days: float | str,
    purchase_ts: pd.Series | None = None,
    min_lines: int = 0,
) -> Windows | None:
    """The two windows a drift monitor compares; None when no data landed after the model's
    data end (nothing new to compare).

    A window of ``"auto"`` days follows the data's cadence (:func:`auto_window_days` over the
    ``purchase_ts``, the landed purchase times): the reference is the fewest whole days before
    the data end, at least :data:`AUTO_MIN_REFERENCE_DAYS`, that hold ``min_lines`` purchase
    lines; the current window the fewest whole days back from the latest event, at least
    :data:`AUTO_MIN_WINDOW_DAYS`, that hold them (all the lines since the data end when they
    are fewer). A busy shop gets a day, a sparse one weeks."""
    latest = _ts(latest_ts).tz_localize(None)
    data_end = _ts(model_data_end).tz_localize(None)
    if latest <= data_end:
        return None
    # both ends exclusive of the next event: include the latest and the data-end events
    end = latest + pd.Timedelta(microseconds=1)
    reference_end = data_end + pd.Timedelta(microseconds=1)
    if AUTO in (reference_days, window_days):
        if purchase_ts is None:
            raise ValueError("auto monitoring windows need the purchase times (purchase_ts)")
        ts = pd.Series(pd.to_datetime(pd.Series(purchase_ts), utc=True)).dt.tz_localize(None)
        before, after = ts[ts < reference_end], ts[(ts >= reference_end) & (ts < end)]
        if reference_days == AUTO:
            reference_days = auto_window_days(
                reference_end - before, min_lines, at_least=AUTO_MIN_REFERENCE_DAYS
            )
        if window_days == AUTO:
            window_days = auto_window_days(end - after, min_lines, at_least=AUTO_MIN_WINDOW_DAYS)
    return Windows(
        reference_start=data_end - pd.Timedelta(days=float(reference_days)),
        reference_end=reference_end,
        current_start=max(reference_end, end - pd.Timedelta(days=float(window_days))),
        current_end=end,
    )


AUTO_MIN_REFERENCE_DAYS = 28.0  # an "auto" reference covers at least four weeks
AUTO_MIN_WINDOW_DAYS = 1.0  # an "auto" current window at least a day


def auto_window_days(offsets: pd.Series, count: int, *, at_least: float) -> float:
    """The fewest whole days ``d >= at_least`` that a window needs to hold ``count`` events,
    given each event's distance from the window's fixed end (``offsets``, timedeltas; an event
    is inside when its distance is at most ``d``); when there are fewer events, the days that
    hold them all. ``at_least`` with no events."""
    days = pd.to_timedelta(pd.Series(offsets)).dropna() / pd.Timedelta(days=1)
    if days.empty or count <= 0:
        return float(at_least)
    k = min(int(count), len(days))
    needed = float(days.nsmallest(k).iloc[-1])
    return float(max(at_least, math.ceil(needed)))


def served_window_days(ts: pd.Series, count: int) -> float:
    """The days of the served-list windows (the model's first days of serving and its latest,
    of equal length) for ``"auto"``: the fewest whole days, at least one, in which both hold
    ``count`` lists; where the lists are fewer, the windows then overlap (nothing to compare)."""
    stamps = pd.Series(pd.to_datetime(pd.Series(ts), utc=True))
    if stamps.empty:
        return AUTO_MIN_WINDOW_DAYS
    tick = pd.Timedelta(microseconds=1)  # the first window ends before first + days: strictly
    first = auto_window_days(stamps - stamps.min() + tick, count, at_least=AUTO_MIN_WINDOW_DAYS)
    latest = auto_window_days(stamps.max() - stamps + tick, count, at_least=AUTO_MIN_WINDOW_DAYS)
    return max(first, latest)
