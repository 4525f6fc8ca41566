"""The closed-loop simulation: the synthetic shop against the real service, drift, and recovery.

``python -m recsys_assets simulate`` (``make simulate``) runs, in a workspace of its own
(``data/simulation/`` by default, nothing shared with the dev stores):

1. **History.** The seeded synthetic shop's first ``history_days`` land as daily partitions
   and go through ``ingestion_job``; ``retraining_job`` trains, gates and promotes the first
   model and builds its bento; the bento is served with ``bentoml serve`` over HTTP.
2. **Days.** Each simulated day a sample of active shoppers asks the service for ten items
   (``/recommend``, with the simulated time as the request's clock) and reacts according to
   their hidden tastes at that moment (``simulation/shoppers.py``): impressions, clicks and orders
   go
   back through ``/feedback`` into the feedback log. At the end of the day the shop's events
   land (the organic ones plus the orders placed from recommendations, read back from the
   feedback log) and are ingested; the nightly ``daily_refresh`` rebuilds the online store.
3. **The loop.** After each landing the simulation ticks ``retraining_sensor`` as the Dagster
   daemon would (``ticks_per_day`` evaluations) and executes the runs it requests:
   ``monitoring_job``, and ``retraining_job`` when the triggers fire. A newly promoted model's
   bento is deployed blue-green: started beside the old service, switched to when ready, the
   old one stopped. The deployment writes the ``serving`` event of the loop log.
4. **Drift.** From ``drift_day`` a segment of shoppers turns to other categories (a
   ``PreferenceShift`` of the generator, the hidden truth). The first landing after it writes
   ``drift_landed`` to the loop log, the start of MTTD.

The report (``reports/simulation.html`` and ``.json`` in the workspace) shows conversion and
average order value per day for the drifted segment and the others, with the timeline of
drift, detection, retraining and deployment. While a run executes, the simulated clock waits:
under ``make dev`` the daemon runs it while the service keeps serving.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from recsys_assets.config import variables
from recsys_assets.config.settings import PROJECT_ROOT
from recsys_assets.core import constants as c
from recsys_assets.core.processes import ServerProcess
from recsys_assets.runs import run_ingestion, run_job

DEFAULT_WORKDIR = PROJECT_ROOT / "data" / "simulation"
LEGACY_START_DAY = 14  # the shop's previous recommender goes live on this history day
# Timeline events drawn as markers on the report's plots.
MARKED_EVENTS = ("drift landed", "retraining triggered by retraining_sensor", "new model serving")


@dataclass(frozen=True)
class SimulationPlan:
    """What to simulate. ``SimulationPlan()`` is ``make simulate``; :meth:`small` the test's."""

    n_users: int = 1_500
    n_items: int = 400
    history_days: int = 84  # organic events only, before the recommender goes live
    warmup_days: int = 3  # served by the first model, then the scheduled retraining
    days: int = 21  # simulated days after the warm-up
    drift_day: int = 5  # simulated day (0-based, after the warm-up) the segment's tastes shift
    drift_categories: tuple[str, ...] = ("Garden", "Toys")
    drift_strength: float = 0.9
    drift_user_fraction: float = 0.4
    sessions_per_week: float = 3.0  # organic sessions per shopper and week (mean)
    shoppers_per_day: int = 300  # lists served per day
    ticks_per_day: int = 2  # retraining_sensor evaluations after each landing
    start: date = date(2024, 1, 1)
    seed: int = c.SEED
    port: int = 3011  # the service's first port; blue-green uses this and the next

    @classmethod
    def small(cls, **overrides: Any) -> SimulationPlan:
        """A few minutes on two cores: the loop closes, the numbers are noisier."""
        base = {"n_users": 600, "n_items": 240, "history_days": 56, "warmup_days": 2,
                "days": 12, "drift_day": 3, "shoppers_per_day": 300}  # fmt: skip
        return cls(**{**base, **overrides})

    def date_of(self, day: int) -> date:
        """The calendar date of simulated day ``day`` (negative: the warm-up)."""
        return self.start + timedelta(days=self.history_days + self.warmup_days + day)

    @property
    def drift_date(self) -> date:
        return self.date_of(self.drift_day)

    def shop(self):
        """The synthetic shop's config: the whole horizon, with the drift as hidden truth."""
        from recsys_assets.ingestion.synthetic import PreferenceShift, SyntheticConfig

        return SyntheticConfig(
            n_users=self.n_users,
            n_items=self.n_items,
            start=self.start,
            days=self.history_days + self.warmup_days + self.days,
            seed=self.seed,
            sessions_per_user_per_week=self.sessions_per_week,
            preference_shifts=(
                PreferenceShift(
                    target_categories=self.drift_categories,
                    start=self.drift_date,
                    strength=self.drift_strength,
                    user_fraction=self.drift_user_fraction,
                ),
            ),
        )


@dataclass
class Workspace:
    """Every store of a simulation under one folder, handed to the project as its overrides."""

    root: Path

    @property
    def landed(self) -> Path:
        return self.root / "landed" / "events.parquet"

    @property
    def source_config(self) -> Path:
        return self.root / "landed" / "source.yaml"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def environment(self) -> dict[str, str]:
        return {
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            variables.DATA_CONFIG.name: str(self.source_config),
            variables.WAREHOUSE.name: str(self.root / "warehouse.duckdb"),
            variables.FEATURE_REPO.name: str(self.root / "feature_repo"),
            variables.MODELS.name: str(self.root / "models"),
            variables.REPORTS.name: str(self.reports),
            variables.FEEDBACK_LOG.name: str(self.root / "logs" / "feedback.jsonl"),
            variables.SERVED_LOG.name: str(self.root / "logs" / "served.jsonl"),
            variables.LOOP_LOG.name: str(self.root / "logs" / "loop.jsonl"),
            variables.CANARY_STATE.name: str(self.root / "logs" / "canary.json"),
            variables.RELEASE_LEDGER.name: str(self.root / "releases" / "ledger.jsonl"),
            variables.BENTOML_HOME.name: str(self.root / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
        }

    def create(self, plan: SimulationPlan) -> None:
        """A fresh workspace: the Feast declarations, the source config and the Dagster home."""
        from recsys_assets.ingestion.synthetic import EVENT_COLUMNS

        if self.root.exists():
            shutil.rmtree(self.root)
        shutil.copytree(
            PROJECT_ROOT / "feature_repo",
            self.root / "feature_repo",
            ignore=shutil.ignore_patterns("data", "__pycache__"),
        )
        self.landed.parent.mkdir(parents=True)
        (self.root / "dagster_home").mkdir()
        shutil.copy(PROJECT_ROOT / "dagster.yaml", self.root / "dagster_home" / "dagster.yaml")
        end = plan.date_of(plan.days)
        config = {
            "name": "simulated_shop",
            "description": "The synthetic shop's events as they land, day by day",
            "path": self.landed.name,
            "format": "parquet",
            "columns": {name: name for name in EVENT_COLUMNS},
            "partitions": {"granularity": "daily", "start": str(plan.start), "end": str(end)},
        }
        self.source_config.write_text(yaml.safe_dump(config, sort_keys=False))


class Service(ServerProcess):
    """``bentoml serve`` of a bento (or the service's source) in its own process group."""

    def __init__(self, bento_tag: str, port: int, env: dict[str, str], log: Path) -> None:
        bentoml = str(Path(sys.executable).parent / "bentoml")
        command = [bentoml, "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)]
        super().__init__(command, port, env=env, log=log)
        self.bento_tag = bento_tag


@dataclass
class Simulation:
    """One run of the loop; :meth:`run` returns the summary the report is made of."""

    plan: SimulationPlan
    workspace: Workspace
    say: Callable[[str], None] = field(default=lambda message: print(message, flush=True))
    timeline: list[dict[str, Any]] = field(default_factory=list)
    lists: list[dict[str, Any]] = field(default_factory=list)
    reactions: list[dict[str, Any]] = field(default_factory=list)
    service: Service | None = None
    serving_version: str | None = None
    cursor: str | None = None

    # --- set-up ---------------------------------------------------------------------------

    def note(self, day: int | None, event: str, detail: str = "") -> None:
        self.timeline.append(
            {
                "day": day,
                "wall_ts": datetime.now(UTC).isoformat(timespec="seconds"),
                "event": event,
                "detail": detail,
            }
        )
        label = "history" if day is None else f"day {day:>2}"
        self.say(f"[{label}] {event}{': ' + detail if detail else ''}")

    def run(self) -> dict[str, Any]:
        plan = self.plan
        os.environ.update(self.workspace.environment())
        from recsys_assets.simulation.shoppers import Shoppers

        self.shop = plan.shop()
        self.shoppers = Shoppers(self.shop)
        self.drifted = self.shoppers.drifted_users()
        self.rng = np.random.default_rng([plan.seed, 7])
        started = time.perf_counter()
        try:
            self.history()
            for day in range(-plan.warmup_days, 0):
                self.simulate_day(day)
            if plan.warmup_days:
                ok, meta, error = self.run_job("retraining_job")
                if not ok:
                    raise RuntimeError(f"the scheduled retraining failed: {error}")
                self.note(-1, "scheduled retraining promoted", meta["promoted_model"]["tag"])
                self.deploy(-1)
            for day in range(plan.days):
                self.simulate_day(day)
        finally:
            if self.service is not None:
                self.service.stop()
        return self.summary(time.perf_counter() - started)

    def history(self) -> None:
        plan = self.plan
        self.write_landed(self.legacy_history())
        keys = [str(plan.start + timedelta(days=d)) for d in range(plan.history_days)]
        self.ingest(keys)
        self.note(None, "history landed", f"{plan.history_days} days ingested")
        ok, meta, error = self.run_job("retraining_job")
        if not ok:
            raise RuntimeError(f"the first model failed: {error}")
        self.note(None, "first model promoted", meta["promoted_model"]["tag"])
        self.deploy(None)

    def legacy_history(self) -> pd.DataFrame:
        """The organic history, plus the orders the shop's previous recommender brought in: from
        ``LEGACY_START_DAY`` on, each day's shoppers were shown their own past purchases, then
        the popular items (``RepeatThenPopular``, refitted weekly). Without it the first
        recommended orders would look like drift by themselves (repeat-heavy baskets of a
        different size)."""
        from recsys_assets.simulation.shoppers import organic_events, respond
        from recsys_assets.training.candidates import RepeatThenPopular

        plan = self.plan
        frames: list[pd.DataFrame] = []
        legacy = None
        for d in range(plan.history_days):
            today = plan.start + timedelta(days=d)
            frames.append(organic_events(self.shop, today))
            if d < LEGACY_START_DAY:
                continue
            if legacy is None or d % 7 == 0:
                landed = pd.concat(frames, ignore_index=True)
                legacy = RepeatThenPopular().fit(landed.loc[landed[c.EVENT_TYPE] == c.PURCHASE])
            shoppers = self.shoppers.active_sample(today, plan.shoppers_per_day, self.rng)
            lists = legacy.recommend(shoppers, n=c.DEFAULT_K)
            reactions = []
            for user, items in lists.groupby(c.USER_ID, sort=False)[c.ITEM_ID]:
                seconds = int(self.rng.integers(8 * 3600, 22 * 3600))
                ts = datetime.combine(today, datetime.min.time(), UTC) + timedelta(seconds=seconds)
                reactions += respond(
                    self.shoppers, str(user), [str(i) for i in items], ts, self.rng,
                    request_id=f"legacy-{d}-{user}",
                )  # fmt: skip
            frames.append(self.purchase_events(reactions))
        return pd.concat(frames, ignore_index=True)

    def purchase_events(self, reactions: list) -> pd.DataFrame:
        """Canonical purchase rows of simulated reactions (shop events, as the order system
        records them)."""
        from recsys_assets.ingestion.synthetic import EVENT_COLUMNS

        bought = [r for r in reactions if r.feedback_type == "purchase"]
        frame = pd.DataFrame(
            {
                c.EVENT_TS: [
                    pd.Timestamp(r.ts).tz_convert("UTC").tz_localize(None) for r in bought
                ],
                c.USER_ID: [r.customer_id for r in bought],
                c.ITEM_ID: [r.item_id for r in bought],
                c.EVENT_TYPE: c.PURCHASE,
                c.QUANTITY: [float(r.quantity) for r in bought],
                c.UNIT_PRICE: [r.unit_price for r in bought],
                c.ORDER_ID: [r.order_id for r in bought],
                c.DESCRIPTION: None,
                c.COUNTRY: [self.shoppers.home_country(r.customer_id) for r in bought],
                c.DEVICE: [self.shoppers.device(r.customer_id) for r in bought],
            },
            columns=list(EVENT_COLUMNS),
        )
        return frame.astype({c.EVENT_TS: "datetime64[ns]"})

    # --- Dagster ----------------------------------------------------------------------------

    def run_job(self, name: str, tags: dict[str, str] | None = None, run_config=None):
        return run_job(name, tags=tags, run_config=run_config)

    def ingest(self, keys: list[str]) -> None:
        failed = [row for row in run_ingestion(keys) if not row["ok"]]
        if failed:
            raise RuntimeError(f"ingestion failed: {failed[0]['partition']}: {failed[0]['error']}")

    def tick(self, day: int) -> None:
        """One evaluation of retraining_sensor, and the runs it requests (as the daemon would)."""
        import dagster as dg

        from recsys_assets.definitions import defs
        from recsys_assets.defs.monitoring.sensors import retraining_sensor

        instance = dg.DagsterInstance.get()
        context = dg.build_sensor_context(instance=instance, cursor=self.cursor, definitions=defs)
        result = retraining_sensor(context)
        self.cursor = result.cursor
        for request in result.run_requests or []:
            if request.job_name == "retraining_job":
                trigger = request.tags.get("recsys/trigger", "")
                self.note(day, "retraining triggered by retraining_sensor", trigger)
            ok, meta, error = self.run_job(
                request.job_name, tags=dict(request.tags), run_config=request.run_config
            )
            if request.job_name == "monitoring_job":
                self.note_monitors(day, meta)
            elif ok:
                self.note(day, "retrained model promoted", meta["promoted_model"]["tag"])
                self.deploy(day)
            else:
                gate = meta.get("check:quality_gate", {})
                self.note(day, "retraining did not promote", str(error or gate))

    def note_monitors(self, day: int, meta: dict[str, dict[str, Any]]) -> None:
        drift = meta.get("data_drift_report", {})
        perf = meta.get("live_performance", {})
        pred = meta.get("prediction_drift_report", {})

        def fmt(block: dict[str, Any], key: str) -> str:
            value = block.get(key)
            return f"{value:.3f}" if isinstance(value, int | float) else "-"

        self.note(
            day,
            "monitors ran",
            f"drifted share {fmt(drift, 'drifted_share')}, item mix "
            f"{fmt(drift, 'item_mix_distance')}, scores KS {fmt(pred, 'score_ks')}, "
            f"hit-rate drop {fmt(perf, 'performance_drop')}",
        )

    # --- serving ----------------------------------------------------------------------------

    def deploy(self, day: int | None) -> None:
        """Blue-green: serve the newest bento beside the old service, switch, stop the old."""
        import dagster as dg

        from recsys_assets.config import get_settings
        from recsys_assets.monitoring import loop

        instance = dg.DagsterInstance.get()
        record = instance.fetch_materializations(dg.AssetKey("bento"), limit=1).records[0]
        metadata = record.asset_materialization.metadata
        bento_tag = metadata["bento_tag"].value
        version = metadata["model_version"].value
        port = (
            self.plan.port
            if self.service is None or self.service.port != self.plan.port
            else (self.plan.port + 1)
        )

        # the bento's own default environment is prod: serve in the simulation's
        env = {
            **os.environ,
            variables.ENV.name: get_settings().environment.value,
            variables.SERVICE_WORKERS.name: "1",
        }
        new = Service(bento_tag, port, env, self.workspace.root / "logs" / f"service-{port}.log")
        try:
            new.wait_ready()
            probe = self.post(new.url, "/recommend", {"customer_id": "U00001", "k": 1})
            if probe["model_version"] != version:
                raise RuntimeError(
                    f"{bento_tag} answers with {probe['model_version']}, not {version}"
                )
        except BaseException:  # the old service keeps serving; the new one must not linger
            new.stop()
            raise
        old, self.service, self.serving_version = self.service, new, version
        loop.LoopLog(get_settings().loop_log).append(
            loop.SERVING, model_version=version, bento=bento_tag, port=port
        )
        if old is not None:
            old.stop()
        self.note(day, "new model serving", f"{version} ({bento_tag}, port {port})")

    @staticmethod
    def post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    # --- a day ------------------------------------------------------------------------------

    def context(self, user: str) -> dict[str, str]:
        """Where a shopper asks from: their home country and preferred device."""
        return {"country": self.shoppers.home_country(user), "device": self.shoppers.device(user)}

    def simulate_day(self, day: int) -> None:
        from recsys_assets.config import get_settings
        from recsys_assets.monitoring import loop
        from recsys_assets.simulation.shoppers import feedback_bodies, respond

        plan = self.plan
        today = plan.date_of(day)
        clock = time.perf_counter()
        if day == plan.drift_day:
            self.note(day, "drift injected", f"{len(self.drifted)} shoppers turn to "
                      f"{', '.join(plan.drift_categories)} (hidden truth)")  # fmt: skip
        assert self.service is not None
        day_reactions = []
        for user in self.shoppers.active_sample(today, plan.shoppers_per_day, self.rng):
            seconds = int(self.rng.integers(8 * 3600, 22 * 3600))
            ts = datetime.combine(today, datetime.min.time(), UTC) + timedelta(seconds=seconds)
            body = {"customer_id": user, "k": c.DEFAULT_K,
                    "context": {"timestamp": ts.isoformat(), **self.context(user)}}  # fmt: skip
            served = self.post(self.service.url, "/recommend", body)
            items = [item["item_id"] for item in served["items"]]
            reactions = respond(
                self.shoppers, user, items, ts, self.rng, request_id=served["request_id"]
            )
            self.lists.append({"day": day, "request_id": served["request_id"],
                               "customer_id": user, "model_version": served["model_version"],
                               "fallback": served["fallback"]})  # fmt: skip
            day_reactions += reactions
        for body in feedback_bodies(day_reactions):
            self.post(self.service.url, "/feedback", body)
        self.reactions += [{**asdict(r), "day": day} for r in day_reactions]
        timings = {"shoppers": time.perf_counter() - clock}
        self.land(day, today)
        timings["landing"] = time.perf_counter() - clock - sum(timings.values())
        if day >= plan.drift_day and not any(e["event"] == "drift landed" for e in self.timeline):
            loop.LoopLog(get_settings().loop_log).append(loop.DRIFT_LANDED, day=str(today))
            self.note(day, "drift landed", "the first drifted day is ingested (MTTD starts)")
        self.run_job("features_job")  # the nightly daily_refresh
        timings["features"] = time.perf_counter() - clock - sum(timings.values())
        for _ in range(plan.ticks_per_day):
            self.tick(day)
        timings["loop"] = time.perf_counter() - clock - sum(timings.values())
        served = [row for row in self.lists if row["day"] == day]
        orders = {r["order_id"] for r in self.reactions if r["day"] == day and r["order_id"]}
        self.say(
            f"[day {day:>2}] {today}: {len(served)} lists, {len(orders)} orders from them; "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
        )

    def land(self, day: int, today: date) -> None:
        """The day's shop events: organic ones plus the orders placed from recommendations."""
        from recsys_assets.config import get_settings
        from recsys_assets.ingestion.feedback import FeedbackLog, to_canonical_events
        from recsys_assets.simulation.shoppers import organic_events

        feedback = FeedbackLog(get_settings().feedback_log).read()
        start = pd.Timestamp(today, tz="UTC")
        feedback = feedback.loc[
            (feedback["ts"] >= start) & (feedback["ts"] < start + pd.Timedelta(days=1))
        ]
        from_recs, _ = to_canonical_events(feedback, source_name="recommendations")
        from_recs = from_recs.loc[from_recs[c.EVENT_TYPE] == c.PURCHASE]
        context = pd.DataFrame(
            [self.context(u) for u in from_recs[c.USER_ID]], index=from_recs.index
        )
        for column in (c.COUNTRY, c.DEVICE):
            if column in context:
                from_recs[column] = context[column].astype("string")
        organic = organic_events(self.shop, today)
        landed = pd.concat(
            [pd.read_parquet(self.workspace.landed), organic, from_recs[organic.columns]]
        )
        self.write_landed(landed)
        self.ingest([str(today)])

    def write_landed(self, events: pd.DataFrame) -> None:
        """The shop's export: every landed event, rewritten whole (a partial file, a rename)."""
        partial = self.workspace.landed.with_suffix(".partial")
        events.sort_values(c.EVENT_TS, kind="stable").to_parquet(partial, index=False)
        partial.replace(self.workspace.landed)

    # --- results ----------------------------------------------------------------------------

    def summary(self, seconds: float) -> dict[str, Any]:
        from recsys_assets.config import get_settings
        from recsys_assets.monitoring import loop
        from recsys_assets.simulation.shoppers import daily_metrics, write_report

        lists = pd.DataFrame(self.lists)
        reactions = pd.DataFrame(self.reactions)
        metrics = daily_metrics(lists, reactions, self.drifted)
        kpis = loop.kpis(loop.LoopLog(get_settings().loop_log).read())
        recovery = recovery_figures(metrics, lists, self.plan)
        summary = {"plan": {k: str(v) for k, v in asdict(self.plan).items()},
                   "wall_seconds": round(seconds, 1), "kpis": kpis, "recovery": recovery,
                   "timeline": self.timeline}  # fmt: skip
        self.workspace.reports.mkdir(parents=True, exist_ok=True)
        html = write_report(
            metrics, self.timeline, self.workspace.reports / "simulation.html",
            title="Closed-loop simulation", drift_day=self.plan.drift_day,
            events_of_note=MARKED_EVENTS,
        )  # fmt: skip
        summary["report"] = str(html)
        path = self.workspace.reports / "simulation-summary.json"
        path.write_text(json.dumps(summary, indent=2, default=str))
        return summary


def recovery_figures(
    metrics: pd.DataFrame, lists: pd.DataFrame, plan: SimulationPlan
) -> dict[str, Any]:
    """Conversion of the drifted segment and of the others: before the drift, after it under
    the model that was serving when it began (stale), and under the models retrained since.
    A day counts for the model that served most of its lists."""
    by_day = lists.groupby("day")["model_version"].agg(lambda v: v.value_counts().index[0])
    stale = by_day.get(plan.drift_day)
    after = by_day[by_day.index >= plan.drift_day]
    stale_days = [int(d) for d, v in after.items() if v == stale]
    retrained_days = [int(d) for d, v in after.items() if v != stale]
    before_days = [int(d) for d in by_day.index if 0 <= d < plan.drift_day]

    def conversion(days: list[int], group: str) -> float | None:
        rows = metrics.loc[metrics["day"].isin(days) & (metrics["group"] == group)]
        if rows.empty or rows["lists"].sum() == 0:
            return None
        return float((rows["conversion"] * rows["lists"]).sum() / rows["lists"].sum())

    figures: dict[str, Any] = {
        group: {
            "before_drift": conversion(before_days, group),
            "stale_model_after_drift": conversion(stale_days, group),
            "retrained_model": conversion(retrained_days, group),
        }
        for group in ("drifted", "others")
    }
    return figures | {"stale_days": stale_days, "retrained_days": retrained_days}


def print_summary(summary: dict[str, Any]) -> None:
    kpis = summary["kpis"]

    def minutes(block: dict[str, Any]) -> str:
        value = block.get("latest_s")
        return "-" if value is None else f"{value / 60:.1f} min"

    print("\nresults")
    for group, figures in summary["recovery"].items():
        if isinstance(figures, dict):
            cells = ", ".join(
                f"{name.replace('_', ' ')} {'-' if v is None else f'{v:.1%}'}"
                for name, v in figures.items()
            )
            print(f"  conversion, {group}: {cells}")
    evaluations = kpis.get("evaluations_to_detect") or ["-"]
    print(f"  incidents: {kpis['incidents']}, MTTD {minutes(kpis['mttd'])} "
          f"({evaluations[-1]} sensor evaluations after the drifted data landed), "
          f"MTTR {minutes(kpis['mttr'])}, deployment {minutes(kpis['deployment'])}")  # fmt: skip
    print(f"  wall time: {summary['wall_seconds'] / 60:.1f} min")
    print(f"  report: {summary['report']}")
