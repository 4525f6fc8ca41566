"""A staged incident: a slow challenger goes out as a canary and the system rolls it back alone.

``python -m recsys_assets drill`` (after ``make demo``) rehearses the incident the canary exists
for, on a scratch copy of the environment's model store, with the real service over HTTP:

1. the champion is served (``bentoml serve``) with tracing on; a copy of it is saved as the
   challenger, and the drill knob ``RECSYS_CHALLENGER_DELAY_MS`` makes every request the
   challenger serves that much slower;
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

import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys_assets.config.settings import PROJECT_ROOT

DEFAULT_WORKDIR = PROJECT_ROOT / "data" / "drill"
CHALLENGER_SUFFIX = "-slow"
QUIET_S = 3.0  # no challenger answer for this long after the rollback: resolved


@dataclass(frozen=True)
class DrillPlan:
    """What the drill stages: the challenger's extra latency, its share, the analysis cadence,
    the shoppers' request rate and the time limit."""

    delay_ms: float = 60.0
    share: float = 0.5
    interval_s: float = 5.0
    shoppers: int = 2
    timeout_s: float = 300.0
    port: int = 3071


@dataclass
class Observation:
    """One answer a shopper got: when (epoch seconds, at the answer), which variant, latency."""

    at: float
    variant: str
    latency_ms: float
    status: int


@dataclass
class Shoppers:
    """Threads that ask the service for recommendations until stopped, recording each answer."""

    url: str
    customers: list[str]
    threads: int
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
        position = index
        while not self._stop.is_set():
            customer = self.customers[position % len(self.customers)]
            position += self.threads
            started = time.perf_counter()
            status, variant = ask(self.url, customer)
            observation = Observation(
                time.time(), variant, (time.perf_counter() - started) * 1000, status
            )
            with self._lock:
                self.seen.append(observation)

    def since(self, moment: float) -> list[Observation]:
        with self._lock:
            return [o for o in self.seen if o.at >= moment]


def ask(url: str, customer_id: str) -> tuple[int, str]:
    """One /recommend call: (HTTP status, variant; "error" when it failed)."""
    body = json.dumps({"customer_id": customer_id, "k": 10}).encode()
    request = urllib.request.Request(
        url + "/recommend", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())["variant"]
    except urllib.error.HTTPError as error:
        return error.code, "error"
    except OSError:
        return 0, "error"


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
    """One staged slow-challenger incident in ``workdir`` (wiped first)."""

    def __init__(self, plan: DrillPlan, workdir: Path = DEFAULT_WORKDIR) -> None:
        self.plan, self.root = plan, Path(workdir)

    def environment(self) -> dict[str, str]:
        logs = self.root / "logs"
        return {
            "BENTOML_HOME": str(self.root / "bentoml"),
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "RECSYS_FEEDBACK_LOG": str(logs / "feedback.jsonl"),
            "RECSYS_SERVED_LOG": str(logs / "served.jsonl"),
            "RECSYS_LOOP_LOG": str(logs / "loop.jsonl"),
            "RECSYS_CANARY_STATE": str(self.root / "canary.json"),
            "RECSYS_REPORTS": str(self.root / "reports"),
            "RECSYS_SERVICE_URL": f"http://127.0.0.1:{self.plan.port}",
            "BENTOML_DO_NOT_TRACK": "true",
        }

    def prepare(self) -> tuple[str, str]:
        """The scratch workspace: a copy of the environment's model store with the challenger
        (the champion saved again under ``<version>-slow``). Returns (champion, challenger)
        tags; a clear error when nothing is promoted yet."""
        import dataclasses

        from recsys_assets.config import get_settings

        settings = get_settings()
        if settings.environment.value in ("acceptance", "prod"):
            raise RuntimeError(
                f"the drill injects a fault (a slow challenger) and is refused in "
                f"{settings.environment.value}; run it in dev or test"
            )
        source = settings.bentoml_home  # the environment's own store, before the switch
        if not (source / "models").exists():
            raise RuntimeError(f"no model store at {source}: run `make demo` first")
        if self.root.exists():
            shutil.rmtree(self.root)
        (self.root / "dagster_home").mkdir(parents=True)
        shutil.copy(PROJECT_ROOT / "dagster.yaml", self.root / "dagster_home" / "dagster.yaml")
        shutil.copytree(source / "models", self.root / "bentoml" / "models")
        os.environ.update(self.environment())  # before BentoML reads its home

        import bentoml

        from recsys_assets.lib.model_registry import (
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
        # the same model under another version: only the drill knob makes it slow; a candidate,
        # not the champion, until the canary promotes it
        slow = dataclasses.replace(model, version=model.version + CHALLENGER_SUFFIX)
        challenger = save_promoted(slow, labels={"drill": "slow-challenger"}, stage=CANDIDATE)
        return champion["tag"], challenger

    def run(self) -> dict[str, Any]:
        from recsys_assets.cli import SERVICE
        from recsys_assets.config import get_settings
        from recsys_assets.simulate import Service

        champion, challenger = self.prepare()
        settings = get_settings()
        env = {
            **os.environ,
            "RECSYS_MODEL_TAG": champion,
            "RECSYS_CHALLENGER_DELAY_MS": f"{self.plan.delay_ms:g}",
            "RECSYS_TRACING": "console",
            "RECSYS_SERVICE_WORKERS": "1",
        }
        log = self.root / "logs" / "service.log"
        service = Service(SERVICE, self.plan.port, env, log)
        try:
            service.wait_ready()
            customers = sorted(self.customers())
            shoppers = Shoppers(service.url, customers, self.plan.shoppers)
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
        """Customers the champion knows (its candidate index), so each request is ranked."""
        import bentoml

        from recsys_assets.lib.model_registry import current_promoted, load_promoted

        stored = bentoml.models.get(current_promoted()["tag"])
        model = load_promoted(stored.path, dict(stored.info.metadata))
        return list(model.candidates.offsets)[:500]

    def start_canary(self, challenger: str, settings: Any) -> None:
        """The canary analyser's identity sets the challenger's share (through the policy,
        audited), which logs ``canary_started``: the incident's start."""
        from recsys_assets.lib.canary_control import set_canary
        from recsys_assets.lib.control import CANARY_ANALYSER

        set_canary(
            challenger_tag=challenger, share=self.plan.share, subject=CANARY_ANALYSER,
            reason="drill: a slow challenger goes out as a canary",
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

        from recsys_assets.cli import run_job
        from recsys_assets.definitions import defs
        from recsys_assets.defs.monitoring.canary_sensor import CANARY_JOB, canary_sensor
        from recsys_assets.lib.canary import read_canary_state

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
        from recsys_assets.config import get_settings
        from recsys_assets.lib import loop, timeline
        from recsys_assets.lib.control import control_audit_path

        settings = get_settings()
        events = loop.LoopLog(settings.loop_log).read()
        (incident, *_) = timeline.canary_incidents(events) or [None]
        seen = shoppers.seen
        last_challenger = max((o.at for o in seen if o.variant == "challenger"), default=None)
        detected = incident.detected if incident else None
        by_variant = {
            variant: {
                "answers": len(latencies),
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
            }
            for variant in ("champion", "challenger")
            if (
                latencies := [
                    o.latency_ms for o in seen if o.variant == variant and o.status == 200
                ]
            )
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

    print(f"champion {summary['champion']}, challenger {summary['challenger']} "
          f"(+{summary['plan']['delay_ms']:g} ms, share {summary['plan']['share']:g})")  # fmt: skip
    for variant, figures in summary["shoppers"].items():
        print(f"  shoppers on {variant:10s}: {figures['answers']:5d} answers, "
              f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms")  # fmt: skip
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
    print(f"  errors seen by shoppers: {summary['errors']}")
    print("timeline:")
    for entry in summary["timeline"]:
        print(f"  {entry['ts'][11:23]}  {entry['source']:8s} {entry['kind']:22s} "
              f"{entry['subject'] or '':18s} {entry['summary'][:90]}")  # fmt: skip


def write_summary(summary: dict[str, Any], root: Path) -> Path:
    path = root / "incident.json"
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return path
