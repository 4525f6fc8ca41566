"""A staged incident: a faulty challenger goes out as a canary and the system rolls it back alone.

``python -m recsys_assets drill`` (after ``make demo``) rehearses the incident the canary exists
for, on a scratch copy of the environment's model store, with the real service over HTTP. Two
faults (``--fault``):

- ``slow`` (default): the champion saved again as the challenger, and the drill knob
  ``RECSYS_CHALLENGER_DELAY_MS`` makes every request the challenger serves that much slower;
  the p99 guardrail catches it;
- ``bad-model``: the champion saved again with its per-customer candidate lists handed to the
  wrong customers (each customer gets the next customer's candidates, as a join on a misaligned
  key would), :func:`misjoined`. It answers as fast as the champion, without errors or
  fallbacks: only the business guardrails (click-through, conversion) can catch it, so the
  shoppers react to each list with tastes of their own (the items they really bought, from the
  warehouse) and post impressions, clicks and purchases to ``/feedback`` (:func:`react`).

The steps:

1. the champion is served (``bentoml serve``) with tracing on, and the challenger is saved as a
   candidate;
2. the canary starts: the canary analyser's identity sets the challenger's share through the
   control-plane policy (state file), and shoppers (threads) ask for recommendations;
3. every ``interval_s`` the canary sensor is evaluated as the Dagster daemon would, and the run
   it requests (``canary_job``: the analysis, which applies its own decision) is executed;
4. the drill ends when the challenger is rolled back and no customer has met it for a few
   seconds, and reports what the shoppers saw, what the service's metrics and traces say, and
   the incident's timeline with its time to detect and to recover.

Nothing here decides anything: the drill only starts the canary and sends traffic; detection
and rollback are the canary sensor's and the analysis's, as in production.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys_assets.config import variables
from recsys_assets.config.settings import PROJECT_ROOT
from recsys_assets.core import constants as c
from recsys_assets.runs import SERVICE, run_job

if TYPE_CHECKING:
    from recsys_assets.serving.model import CandidateIndex, ServingModel

DEFAULT_WORKDIR = PROJECT_ROOT / "data" / "drill"
QUIET_S = 3.0  # no challenger answer for this long after the rollback: resolved
# How a shopper reacts to a list (bad-model drill): a shown item they like is clicked with this
# probability, a clicked one bought with this one.
CLICK_PROBABILITY = 0.5
PURCHASE_PROBABILITY = 0.5

SLOW, BAD_MODEL = "slow", "bad-model"


@dataclass(frozen=True)
class Fault:
    """One fault the drill can stage: the challenger's version suffix, its ``drill`` label in
    the model store, and how the reports name it."""

    suffix: str
    label: str
    description: str


FAULTS: dict[str, Fault] = {
    SLOW: Fault("-slow", "slow-challenger", "a slow challenger"),
    BAD_MODEL: Fault("-misjoined", "bad-model", "a bad model with misjoined candidates"),
}


@dataclass(frozen=True)
class DrillPlan:
    """What the drill stages: the fault, the challenger's extra latency (the slow fault only: the
    bad model answers at the champion's speed), its share, the analysis cadence, the shoppers'
    request rate and the time limit."""

    delay_ms: float = 60.0
    share: float = 0.5
    interval_s: float = 5.0
    shoppers: int = 2
    timeout_s: float = 300.0
    port: int = 3071
    fault: str = SLOW

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {sorted(FAULTS)}, got {self.fault!r}")


@dataclass(frozen=True)
class Tastes:
    """What shoppers like, independent of any model: per customer the items they really bought
    (``liked``), the items' mean unit prices where the data has prices, and the seed of the
    shoppers' dice."""

    liked: Mapping[str, frozenset[str]]
    prices: Mapping[str, float] = field(default_factory=dict)
    click_probability: float = CLICK_PROBABILITY
    purchase_probability: float = PURCHASE_PROBABILITY
    seed: int = c.SEED

    @classmethod
    def from_purchases(cls, purchases: pd.DataFrame, **options: Any) -> Tastes:
        """From purchase rows (``user_id``, ``item_id``, ``unit_price``)."""
        items = purchases[c.ITEM_ID].astype(str)
        liked = items.groupby(purchases[c.USER_ID].astype(str)).agg(frozenset)
        priced = purchases.dropna(subset=[c.UNIT_PRICE])
        prices = priced.groupby(c.ITEM_ID)[c.UNIT_PRICE].mean()
        return cls(
            liked={str(customer): items for customer, items in liked.items()},
            prices={str(item): float(price) for item, price in prices.items()},
            **options,
        )

    @classmethod
    def from_warehouse(cls, warehouse: Path, **options: Any) -> Tastes:
        """From the validated purchases in the environment's warehouse (DuckDB)."""
        import duckdb

        query = (
            f"SELECT {c.USER_ID}, {c.ITEM_ID}, {c.UNIT_PRICE} FROM events.validated_events "
            f"WHERE {c.EVENT_TYPE} = ?"
        )
        with duckdb.connect(str(warehouse), read_only=True) as con:
            purchases = con.execute(query, [c.PURCHASE]).fetch_df()
        return cls.from_purchases(purchases, **options)


def misjoined(index: CandidateIndex, shift: int = 1) -> CandidateIndex:
    """The same candidates with each customer's list handed to the customer ``shift`` places
    before its owner in the index (wrapping around): every customer gets another customer's
    candidates, as a join on a misaligned key would. Items, generator scores and bought flags
    move together, so the model still ranks and answers every customer without a fallback."""
    customers = list(index.offsets)
    lists = list(index.offsets.values())
    if customers:
        shift %= len(customers)
        lists = lists[shift:] + lists[:shift]
    return dataclasses.replace(index, offsets=dict(zip(customers, lists, strict=True)))


def challenger_of(model: ServingModel, fault: str) -> ServingModel:
    """The champion as the fault's challenger, under its own version: the same model for the
    slow fault (only the drill knob makes it slow), misjoined candidates for the bad model."""
    version = model.version + FAULTS[fault].suffix
    if fault == BAD_MODEL:
        return dataclasses.replace(model, version=version, candidates=misjoined(model.candidates))
    return dataclasses.replace(model, version=version)


def react(answer: Mapping[str, Any], tastes: Tastes, rng: np.random.Generator) -> list[dict]:
    """A shopper's ``/feedback`` events for one ``/recommend`` answer: an impression per shown
    item; a click on each shown item the customer likes with ``click_probability``; a purchase
    (quantity 1, one order per list) of each clicked item with ``purchase_probability``. Every
    event carries the answer's request id and variant. Two dice per item are drawn whatever
    the customer likes, so two lists of the same length under the same seed face the same
    dice. The order's value is the sum of the bought items' unit prices (1.0 when unknown)."""
    items = [str(item["item_id"]) for item in answer["items"]]
    liked = tastes.liked.get(answer["customer_id"], frozenset())
    dice = rng.random((len(items), 2))  # click, purchase
    clicked = np.array([item in liked for item in items], dtype=bool)
    clicked &= dice[:, 0] < tastes.click_probability
    bought = clicked & (dice[:, 1] < tastes.purchase_probability)
    order_value = sum(tastes.prices.get(items[i], 1.0) for i in np.flatnonzero(bought))
    base = {
        "request_id": answer["request_id"],
        "customer_id": answer["customer_id"],
        "variant": answer["variant"],
    }
    events = []
    for position, item in enumerate(items, start=1):
        shown = {**base, "item_id": item, "position": position}
        events.append({**shown, "type": "impression"})
        if clicked[position - 1]:
            events.append({**shown, "type": "click"})
        if bought[position - 1]:
            events.append({**shown, "type": "purchase", "quantity": 1,
                           "unit_price": tastes.prices.get(item),
                           "order_id": f"drill-{answer['request_id']}",
                           "order_value": round(float(order_value), 2)})  # fmt: skip
    return events


@dataclass
class Observation:
    """One answer a shopper got: when (epoch seconds, at the answer), which variant, latency;
    with tastes, whether the shopper reacted, to how many shown items, with how many clicks and
    purchases, and the status of the ``/feedback`` post (None: nothing posted)."""

    at: float
    variant: str
    latency_ms: float
    status: int
    reacted: bool = False
    shown: int = 0
    clicks: int = 0
    purchases: int = 0
    feedback_status: int | None = None


@dataclass
class Shoppers:
    """Threads that ask the service for recommendations until stopped, recording each answer;
    with ``tastes``, each also reacts to its lists through ``/feedback`` (:func:`react`, one
    seeded generator per thread)."""

    url: str
    customers: list[str]
    threads: int
    tastes: Tastes | None = None
    seen: list[Observation] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for index in range(self.threads):
            worker = threading.Thread(target=self._shop, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)

    def _shop(self, index: int) -> None:
        rng = np.random.default_rng([self.tastes.seed, index]) if self.tastes else None
        position = index
        while not self._stop.is_set():
            customer = self.customers[position % len(self.customers)]
            position += self.threads
            started = time.perf_counter()
            status, answer = ask(self.url, customer)
            observation = Observation(
                time.time(), answer.get("variant", "error"), (time.perf_counter() - started) * 1000,
                status,
            )  # fmt: skip
            if self.tastes is not None and status == 200:
                self._react(observation, answer, rng)
            with self._lock:
                self.seen.append(observation)

    def _react(self, observation: Observation, answer: dict, rng: np.random.Generator) -> None:
        """Post the shopper's reaction to ``answer`` and note it on ``observation``."""
        events = react(answer, self.tastes, rng)
        kinds = [event["type"] for event in events]
        observation.reacted = True
        observation.shown = len(answer["items"])
        observation.clicks = kinds.count("click")
        observation.purchases = kinds.count("purchase")
        if events:
            observation.feedback_status, _ = post_json(self.url + "/feedback", {"events": events})

    def since(self, moment: float) -> list[Observation]:
        with self._lock:
            return [o for o in self.seen if o.at >= moment]


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST ``body`` as JSON: (HTTP status, the JSON answer); the answer is {} when the call
    failed, and the status 0 when nothing answered."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}
    except OSError:
        return 0, {}


def ask(url: str, customer_id: str) -> tuple[int, dict[str, Any]]:
    """One /recommend call: (HTTP status, the answer: request id, variant, items...; {} when it
    failed)."""
    return post_json(url + "/recommend", {"customer_id": customer_id, "k": 10})


def shopper_figures(observations: list[Observation]) -> dict[str, Any]:
    """What shoppers saw of one variant's successful answers: how many, p50 and p99 latency and,
    when they reacted to the lists, click-through (clicks per shown item) and conversion (lists
    with a purchase per list)."""
    answered = [o for o in observations if o.status == 200]
    latencies = [o.latency_ms for o in answered]
    figures: dict[str, Any] = {
        "answers": len(answered),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }
    reacted = [o for o in answered if o.reacted]
    if reacted:
        shown = sum(o.shown for o in reacted)
        figures.update(
            shown=shown,
            clicks=sum(o.clicks for o in reacted),
            converted_lists=sum(1 for o in reacted if o.purchases),
            click_through=sum(o.clicks for o in reacted) / shown if shown else None,
            conversion=sum(1 for o in reacted if o.purchases) / len(reacted),
        )
    return figures


def iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def histogram_quantiles(metrics_text: str, name: str, q: float = 0.99) -> dict[str, float]:
    """Per canary variant, the ``q`` quantile of a Prometheus histogram from its cumulative
    buckets (the upper bound of the first bucket reaching ``q``, as a dashboard would read
    it), summed over the other labels."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            variant = sample.labels.get("variant", "")
            bound = float(sample.labels["le"])
            per_variant = buckets.setdefault(variant, {})
            per_variant[bound] = per_variant.get(bound, 0.0) + sample.value
    quantiles = {}
    for variant, counts in buckets.items():
        total = counts.get(float("inf"), 0.0)
        if not total:
            continue
        for bound in sorted(counts):
            if counts[bound] >= q * total:
                quantiles[variant] = bound
                break
    return quantiles


def traced_requests(log_text: str) -> dict[str, dict[str, float]]:
    """Per variant, how many request spans the console exporter wrote into the service's log
    and their mean duration (ms): the slow challenger as the traces show it."""
    durations: dict[str, list[float]] = {}
    for span in iter_spans(log_text):
        attributes = span.get("attributes") or {}
        variant = attributes.get("recsys.variant")
        if variant is None or span.get("parent_id"):  # the request span only
            continue
        start, end = span.get("start_time"), span.get("end_time")
        if not start or not end:
            continue
        seconds = (datetime.fromisoformat(end.rstrip("Z")) - datetime.fromisoformat(
            start.rstrip("Z"))).total_seconds()  # fmt: skip
        durations.setdefault(variant, []).append(seconds * 1000)
    return {
        variant: {"spans": len(values), "mean_ms": float(np.mean(values))}
        for variant, values in durations.items()
    }


def iter_spans(log_text: str) -> Iterator[dict[str, Any]]:
    """The JSON span objects the console exporter printed (one per line) among other lines."""
    for line in log_text.splitlines():
        line = line.strip()
        if not (line.startswith("{") and '"span_id"' in line):
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


class Drill:
    """One staged incident (the plan's fault) in ``workdir`` (wiped first)."""

    def __init__(self, plan: DrillPlan, workdir: Path = DEFAULT_WORKDIR) -> None:
        self.plan, self.root = plan, Path(workdir)
        self.fault = FAULTS[plan.fault]
        self.tastes: Tastes | None = None  # the shoppers' tastes (bad model), read by prepare

    def environment(self) -> dict[str, str]:
        logs = self.root / "logs"
        return {
            variables.BENTOML_HOME.name: str(self.root / "bentoml"),
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            variables.FEEDBACK_LOG.name: str(logs / "feedback.jsonl"),
            variables.SERVED_LOG.name: str(logs / "served.jsonl"),
            variables.LOOP_LOG.name: str(logs / "loop.jsonl"),
            variables.CANARY_STATE.name: str(self.root / "canary.json"),
            variables.REPORTS.name: str(self.root / "reports"),
            variables.SERVICE_URL.name: f"http://127.0.0.1:{self.plan.port}",
            "BENTOML_DO_NOT_TRACK": "true",
        }

    def prepare(self) -> tuple[str, str]:
        """The scratch workspace: a copy of the environment's model store with the challenger
        (the champion saved again under ``<version><suffix>``, :func:`challenger_of`) and, for
        the bad model, the shoppers' tastes from the environment's warehouse. Returns
        (champion, challenger) tags; a clear error when nothing is promoted yet."""
        from recsys_assets.config import get_settings

        settings = get_settings()
        if settings.environment.value in ("acceptance", "prod"):
            raise RuntimeError(
                f"the drill injects a fault ({self.fault.description}) and is refused in "
                f"{settings.environment.value}; run it in dev or test"
            )
        source = settings.bentoml_home  # the environment's own store, before the switch
        if not (source / "models").exists():
            raise RuntimeError(f"no model store at {source}: run `make demo` first")
        if self.plan.fault == BAD_MODEL:
            self.tastes = self.read_tastes(settings)
        if self.root.exists():
            shutil.rmtree(self.root)
        (self.root / "dagster_home").mkdir(parents=True)
        shutil.copy(PROJECT_ROOT / "dagster.yaml", self.root / "dagster_home" / "dagster.yaml")
        shutil.copytree(source / "models", self.root / "bentoml" / "models")
        os.environ.update(self.environment())  # before BentoML reads its home

        import bentoml

        from recsys_assets.serving.registry import (
            CANDIDATE,
            current_promoted,
            load_promoted,
            save_promoted,
        )

        champion = current_promoted()
        if champion is None:
            raise RuntimeError(f"nothing is promoted in {source}: run `make demo` first")
        stored = bentoml.models.get(champion["tag"])
        model = load_promoted(stored.path, dict(stored.info.metadata))
        # a candidate, not the champion, until the canary promotes it
        challenger = save_promoted(
            challenger_of(model, self.plan.fault), labels={"drill": self.fault.label},
            stage=CANDIDATE,
        )  # fmt: skip
        return champion["tag"], challenger

    @staticmethod
    def read_tastes(settings: Any) -> Tastes:
        """The shoppers' tastes from the environment's own warehouse (read before the scratch
        workspace replaces the environment's paths)."""
        warehouse = settings.warehouse_path
        if warehouse is None or not warehouse.exists():
            raise RuntimeError(
                f"the bad-model drill's shoppers need the warehouse's purchases; no warehouse "
                f"at {warehouse or 'a secret path'}: run `make demo` first"
            )
        import duckdb

        try:
            tastes = Tastes.from_warehouse(warehouse)
        except duckdb.Error as error:  # locked by a writer, or no validated events yet
            raise RuntimeError(f"the warehouse {warehouse} cannot be read: {error}") from error
        if not tastes.liked:
            raise RuntimeError(f"no purchases in {warehouse}: the shoppers would like nothing")
        return tastes

    def run(self) -> dict[str, Any]:
        from recsys_assets.config import get_settings
        from recsys_assets.simulation.closed_loop import Service

        champion, challenger = self.prepare()
        settings = get_settings()
        # the slow fault's knob; the bad model answers at the champion's speed
        delay = variables.CHALLENGER_DELAY_MS.name
        knobs = {delay: f"{self.plan.delay_ms:g}"} if self.plan.fault == SLOW else {}
        env = {
            **{name: value for name, value in os.environ.items() if name != delay},
            variables.MODEL_TAG.name: champion,
            variables.TRACING.name: "console",
            variables.SERVICE_WORKERS.name: "1",
            **knobs,
        }
        log = self.root / "logs" / "service.log"
        service = Service(SERVICE, self.plan.port, env, log)
        try:
            service.wait_ready()
            customers = sorted(self.customers())
            shoppers = Shoppers(service.url, customers, self.plan.shoppers, self.tastes)
            shoppers.start()
            time.sleep(2.0)  # a baseline of champion-only traffic
            canary_set = time.time()
            self.start_canary(challenger, settings)
            started = self.wait_for_challenger(shoppers, canary_set)
            ticks = self.analyse_until_rolled_back(shoppers, settings)
            metrics_text = self.scrape(service.url)
            shoppers.stop()
        finally:
            service.stop()
        return self.summary(champion, challenger, shoppers, started, ticks, metrics_text, log)

    def customers(self) -> list[str]:
        """Customers the champion knows (its candidate index), so each request is ranked; with
        tastes, only those who bought something, so they can like what they are shown."""
        import bentoml

        from recsys_assets.serving.registry import current_promoted, load_promoted

        stored = bentoml.models.get(current_promoted()["tag"])
        model = load_promoted(stored.path, dict(stored.info.metadata))
        known = list(model.candidates.offsets)
        if self.tastes is not None:
            known = [customer for customer in known if customer in self.tastes.liked]
        return known[:500]

    def start_canary(self, challenger: str, settings: Any) -> None:
        """The canary analyser's identity sets the challenger's share (through the policy,
        audited), which logs ``canary_started``: the incident's start."""
        from recsys_assets.access.control import CANARY_ANALYSER
        from recsys_assets.release.canary.actions import set_canary

        set_canary(
            challenger_tag=challenger, share=self.plan.share, subject=CANARY_ANALYSER,
            reason=f"drill: {self.fault.description} goes out as a canary",
            state_path=settings.canary_state, environment=settings.environment.value,
            loop_log=settings.loop_log,
        )  # fmt: skip

    def wait_for_challenger(self, shoppers: Shoppers, since: float) -> float:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answered = [o for o in shoppers.since(since) if o.variant == "challenger"]
            if answered:
                return answered[0].at
            time.sleep(0.1)
        raise RuntimeError("the service never routed a customer to the challenger in 60 s")

    def analyse_until_rolled_back(self, shoppers: Shoppers, settings: Any) -> list[dict]:
        """Evaluate the canary sensor every ``interval_s`` and execute the runs it requests,
        until the state has no challenger and customers stopped meeting it."""
        import dagster as dg

        from recsys_assets.definitions import defs
        from recsys_assets.defs.release.canary_sensor import CANARY_JOB, canary_sensor
        from recsys_assets.release.canary.routing import read_canary_state

        instance = dg.DagsterInstance.get()
        ticks: list[dict] = []
        deadline = time.monotonic() + self.plan.timeout_s
        rolled_back_at: float | None = None
        while time.monotonic() < deadline:
            time.sleep(self.plan.interval_s)
            state = read_canary_state(settings.canary_state)
            if state is not None and state.challenger_tag is None:
                rolled_back_at = rolled_back_at or time.time()
                last = [o for o in shoppers.since(rolled_back_at) if o.variant == "challenger"]
                if time.time() - max([rolled_back_at, *(o.at for o in last)]) >= QUIET_S:
                    return ticks
                continue
            context = dg.build_sensor_context(instance=instance, definitions=defs)
            result = canary_sensor(context)
            tick = {"at": iso(time.time()), "requested": len(result.run_requests or [])}
            for request in result.run_requests or []:
                job = request.job_name or CANARY_JOB  # the sensor's own job
                ok, meta, error = run_job(job, tags=dict(request.tags))
                report = meta.get("canary_report", {})
                tick.update(ok=ok, action=report.get("action"), error=error)
            ticks.append(tick)
        raise RuntimeError(f"the challenger was not rolled back within {self.plan.timeout_s} s")

    @staticmethod
    def scrape(url: str) -> str:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            return response.read().decode()

    def summary(self, champion, challenger, shoppers, started, ticks, metrics_text, log) -> dict:
        from recsys_assets.access.control import control_audit_path
        from recsys_assets.config import get_settings
        from recsys_assets.monitoring import loop, timeline

        settings = get_settings()
        events = loop.LoopLog(settings.loop_log).read()
        (incident, *_) = timeline.canary_incidents(events) or [None]
        seen = shoppers.seen
        last_challenger = max((o.at for o in seen if o.variant == "challenger"), default=None)
        detected = incident.detected if incident else None
        by_variant = {
            variant: figures
            for variant in ("champion", "challenger")
            if (figures := shopper_figures([o for o in seen if o.variant == variant]))["answers"]
        }
        entries = timeline.timeline(
            loop_events=events,
            control_audit=timeline.read_jsonl(control_audit_path(settings.loop_log)),
        )
        # recovered: the rollback applied and the last customer served by the challenger (the
        # service follows the state file within a second), whichever came later
        resolved = None
        if incident is not None and incident.resolved is not None:
            applied = datetime.fromisoformat(incident.resolved).timestamp()
            resolved = max(applied, last_challenger or applied)
        detected_s = datetime.fromisoformat(detected).timestamp() if detected else None
        return {
            "plan": asdict(self.plan),
            "fault": self.fault.description,
            "champion": champion,
            "challenger": challenger,
            "canary_started": incident.started if incident else None,
            "first_challenger_answer": iso(started),
            "detected": detected,
            "rolled_back": incident.resolved if incident else None,
            "last_challenger_answer": iso(last_challenger),
            "resolved": iso(resolved),
            "mttd_s": incident.mttd_s if incident else None,
            "rollback_applied_s": incident.mttr_s if incident else None,
            "mttr_s": resolved - detected_s if resolved and detected_s else None,
            "reasons": list(incident.reasons) if incident else [],
            "shoppers": by_variant,
            "errors": sum(1 for o in seen if o.status != 200),
            "feedback_errors": sum(
                1 for o in seen if o.feedback_status is not None and o.feedback_status != 200
            ),
            "metrics_p99_upper_bound_s": histogram_quantiles(
                metrics_text, "recsys_recommend_latency_seconds"
            ),
            "traces": traced_requests(log.read_text(errors="replace")),
            "analyses": ticks,
            "timeline": [e.as_dict() for e in entries],
        }


def print_summary(summary: dict[str, Any]) -> None:
    def seconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} s"

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    plan = summary["plan"]
    fault = f"+{plan['delay_ms']:g} ms" if plan["fault"] == SLOW else summary["fault"]
    print(f"champion {summary['champion']}, challenger {summary['challenger']} "
          f"({fault}, share {plan['share']:g})")  # fmt: skip
    for variant, figures in summary["shoppers"].items():
        line = (f"  shoppers on {variant:10s}: {figures['answers']:5d} answers, "
                f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms")  # fmt: skip
        if "click_through" in figures:  # the shoppers reacted to their lists
            line += (f", click-through {percent(figures['click_through'])} ({figures['clicks']} "
                     f"of {figures['shown']} shown), conversion {percent(figures['conversion'])} "
                     f"({figures['converted_lists']} lists)")  # fmt: skip
        print(line)
    print(f"  metrics p99 (histogram bucket bound): {summary['metrics_p99_upper_bound_s']}")
    print(f"  traces: {summary['traces']}")
    print(f"  canary started at  {summary['canary_started']}")
    print(f"  first challenger answer {summary['first_challenger_answer']}")
    print(f"  breach detected at  {summary['detected']}  ({'; '.join(summary['reasons'])})")
    print(f"  rolled back at      {summary['rolled_back']}")
    print(f"  last challenger answer {summary['last_challenger_answer']}")
    applied = seconds(summary["rollback_applied_s"])
    print(f"  time to detect {seconds(summary['mttd_s'])} (canary started -> decision), to "
          f"recover {seconds(summary['mttr_s'])} (decision -> rollback applied {applied}, "
          "last customer on the challenger)")  # fmt: skip
    print(f"  errors seen by shoppers: {summary['errors']}"
          + (f", failed feedback posts: {summary['feedback_errors']}"
             if summary["feedback_errors"] else ""))  # fmt: skip
    print("timeline:")
    for entry in summary["timeline"]:
        print(f"  {entry['ts'][11:23]}  {entry['source']:8s} {entry['kind']:22s} "
              f"{entry['subject'] or '':18s} {entry['summary'][:90]}")  # fmt: skip


def write_summary(summary: dict[str, Any], root: Path) -> Path:
    path = root / "incident.json"
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return path
