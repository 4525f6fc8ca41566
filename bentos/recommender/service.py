"""The recommendation service: the promoted ranker over Feast online features, over HTTP.

``bentoml serve service:Recommender`` (from this folder) or the bento built by the ``bento``
asset. Endpoints (JSON over POST): ``/recommend``, ``/feedback`` and ``/customer_features``;
BentoML adds ``/livez``,
``/readyz`` (false until the model and the feature store are loaded) and ``/metrics``
(Prometheus). Configuration comes from the project settings of ``RECSYS_ENV``; the model is the
BentoML model ``RECSYS_MODEL_TAG`` (default ``recsys-ranker:latest``), bundled into the bento.

Canary: with ``RECSYS_CHALLENGER_TAG`` set, the service also loads that model from the local
BentoML store (not bundled) and sends a sticky share of customers (``RECSYS_CANARY_SHARE``,
hashed with ``RECSYS_CANARY_SALT``) to it; see :mod:`recsys_assets.release.canary.routing`. The
canary
state file (``RECSYS_CANARY_STATE``), when it exists, overrides those variables, and the
service follows it while serving: at most once a second a request stats the file and, when it
changed, re-reads it (a share change or a rollback takes effect at once; a new challenger is
loaded off the event loop). Drill knobs, refused (never ready) in acceptance and prod:
``RECSYS_CHALLENGER_DELAY_MS`` (default 0) adds that many milliseconds to every request the
challenger serves, to rehearse a slow challenger; ``RECSYS_CHALLENGER_ERROR_RATE`` (default 0)
fails that share of the challenger's requests with a 500, to rehearse a failing one.

Access control: with API keys configured (``RECSYS_API_KEYS`` or ``RECSYS_API_KEYS_FILE``),
``/recommend`` and ``/feedback`` need ``Authorization: Bearer <key>`` and a subject the policy
allows (``read_recommendations``, ``send_feedback``): 401 without a valid key, 403 when the
policy denies; every decision goes to the audit log (``RECSYS_AUDIT_LOG``, default
``audit.jsonl`` next to the feedback log). The check runs in an ASGI middleware, before the
body is read. Acceptance and prod without keys are never ready; dev and test without keys serve
openly with one warning. See docs/access-control.md.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import gc
import logging
import os
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

import bentoml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from recsys_assets.core import constants as c
from recsys_assets.observability.telemetry import tracing_config

logger = logging.getLogger("bentoml.recommender")

MODEL_TAG = os.environ.get("RECSYS_MODEL_TAG", f"{c.SERVING_MODEL_NAME}:latest")
# Fault injection for tests and drills: extra milliseconds on each request the challenger serves.
CHALLENGER_DELAY_VAR = "RECSYS_CHALLENGER_DELAY_MS"
# ... and the share of the challenger's requests that fail with a 500 (drawn per request id).
CHALLENGER_ERROR_RATE_VAR = "RECSYS_CHALLENGER_ERROR_RATE"
STATE_CHECK_S = 1.0  # how often (at most) a request looks at the canary state file
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Variant = Literal["champion", "challenger"]  # recsys_assets.release.canary.routing.VARIANTS
# Every API route and the policy action that guards it (a test holds this to the service's
# routes, so a new endpoint cannot be added unguarded). /livez, /readyz, /metrics stay open.
ROUTE_ACTIONS = {
    "/recommend": "read_recommendations",
    "/feedback": "send_feedback",
    "/customer_features": "read_customer_features",
}
# What a refused request gets: the same body whatever the key, rule or subject.
REFUSALS = {
    401: b'{"error":"unauthenticated"}',
    403: b'{"error":"forbidden"}',
    503: b'{"error":"not ready"}',
}


def _model_ref() -> bentoml.models.BentoModel | None:
    """The model as a class attribute (so a bento bundles it); None if the store lacks it."""
    try:
        return bentoml.models.BentoModel(MODEL_TAG)
    except Exception as error:  # NotFound, or a broken store
        logger.error("model %s is not in the BentoML model store: %s", MODEL_TAG, error)
        return None


@functools.cache
def access_gate():
    """This process's :class:`~recsys_assets.access.policy.DataPlaneGate`, built once: the service
    (readiness) and the middleware (each request) share it."""
    from recsys_assets.access.policy import DataPlaneGate, audit_log_path
    from recsys_assets.config import get_settings

    settings = get_settings()
    return DataPlaneGate.from_environment(
        settings.environment, audit_log_path(settings.feedback_log)
    )


class AccessControl:
    """ASGI middleware: the routes in ROUTE_ACTIONS pass only what the gate admits; a refusal
    is answered here, before the body is read, with a body that names no key, rule or subject.
    Everything else (health, metrics, docs) passes untouched."""

    def __init__(self, app) -> None:
        self.app = app
        self._audit_warned: set[str] = set()

    async def __call__(self, scope, receive, send) -> None:
        action = ROUTE_ACTIONS.get(scope["path"]) if scope["type"] == "http" else None
        if action is None:
            return await self.app(scope, receive, send)
        gate = access_gate()
        if not gate.enforced:
            return await self.app(scope, receive, send)
        authorization = [v for k, v in scope["headers"] if k == b"authorization"]
        header = authorization[0].decode("latin-1") if len(authorization) == 1 else None
        try:
            status = gate.admit(action, header).status
        except OSError as error:  # no audit line, no access: fail closed
            status = 503
            kind = errno.errorcode.get(error.errno, type(error).__name__)
            if kind not in self._audit_warned:
                self._audit_warned.add(kind)
                logger.error(
                    "audit log %s: cannot write (%s); requests are refused with 503",
                    gate.audit.path,
                    kind,
                )
        if status == 200:
            return await self.app(scope, receive, send)
        body = REFUSALS[status]
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Context(BaseModel):
    """Where and when the shopper asks (all optional)."""

    model_config = ConfigDict(extra="forbid")
    device: Annotated[str, StringConstraints(max_length=32)] | None = None
    country: Annotated[str, StringConstraints(max_length=64)] | None = None
    timestamp: datetime | None = Field(
        None, description="the request's time; default: the service clock (see serving.clock)"
    )


class RecommendRequest(BaseModel):
    """A request for one customer's list. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    customer_id: Id
    k: int = Field(c.DEFAULT_K, ge=1, le=c.MAX_K)
    context: Context | None = None
    exclude: list[Id] = Field(default_factory=list, max_length=1_000)
    exclude_bought_within_days: float | None = Field(None, ge=0, le=3_650)


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    name: str


class RecommendResponse(BaseModel):
    request_id: str
    customer_id: str
    items: list[RecommendedItem]
    model_version: str
    fallback: bool
    fallback_reason: str | None
    as_of: str
    variant: Variant = Field(
        description="which model answered: champion, or the canary's challenger"
    )


class FeedbackItem(BaseModel):
    """One shopper event on a recommended item."""

    model_config = ConfigDict(extra="forbid")
    request_id: Id
    customer_id: Id
    item_id: Id
    type: Literal["impression", "click", "add_to_cart", "purchase"]
    timestamp: datetime | None = None
    quantity: int = Field(1, ge=1, le=100_000)
    unit_price: float | None = Field(None, ge=0)
    order_id: Id | None = None
    order_value: float | None = Field(None, ge=0)
    position: int | None = Field(None, ge=1, le=c.MAX_K)
    variant: Variant | None = Field(
        None, description="the variant the recommendation's response named (canary analysis)"
    )


class CustomerFeaturesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: Id


class CustomerFeaturesResponse(BaseModel):
    customer_id: str
    found: bool = Field(description="whether the online store has a profile for the customer")
    features: dict[str, float | int | str | None]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[FeedbackItem] = Field(min_length=1, max_length=1_000)


class FeedbackResponse(BaseModel):
    accepted: int


@bentoml.service(
    name=c.BENTO_NAME,
    http={"port": c.SERVICE_PORT},
    traffic={"timeout": 10},
    # Worker processes: 1 by default (in Kubernetes, scale out with pods); the benchmark runs 2
    # on its 2-core machine.
    workers=int(os.environ.get("RECSYS_SERVICE_WORKERS", "1")),
    # Per-request access lines cost CPU on the hot path; /metrics counts requests instead.
    logging={"access": {"enabled": False}},
    # RECSYS_TRACING: off (default), console or otlp (docs/observability.md); a bad value or a
    # missing exporter package stops `bentoml serve` here, naming it.
    **({"tracing": TRACING} if (TRACING := tracing_config()) is not None else {}),
)
class Recommender:
    """Recommendations from the promoted model, each also written to the served log;
    feedback into the durable event log."""

    model_ref = _model_ref()

    def __init__(self) -> None:
        from recsys_assets.config import get_settings
        from recsys_assets.ingestion.feedback import FeedbackLog
        from recsys_assets.release.canary.routing import CanaryConfig
        from recsys_assets.serving.served_log import ServedLog, served_log_path

        self.settings = get_settings()
        self.model = None
        self.reader = None
        self.challenger = None  # the canary's challenger model, when one is configured
        self.challenger_reader = None
        self.challenger_tag = None  # the tag self.challenger was loaded from
        self.canary = CanaryConfig(challenger_tag=None)  # replaced by _load
        self.challenger_delay_s = 0.0  # RECSYS_CHALLENGER_DELAY_MS, set by _load
        self.challenger_error_rate = 0.0  # RECSYS_CHALLENGER_ERROR_RATE, set by _load
        # Following the canary state file: its (inode, mtime, size) last read, when to look
        # again, the configuration it asks for, the challenger loading or failed to load.
        self.canary_state_path = self.settings.canary_state
        self._state_seen = None
        self._state_check_at = 0.0
        self._desired = None
        self._loading = None
        self._failed_tag = None
        self._load_task = None
        self._store = self._items_reader = None  # for challengers loaded later (set by _load)
        self._metrics()
        self.tracer = self._observability()
        self.access = access_gate()
        if self.access.error is not None:  # names the variables, never a key
            logger.error("not ready: %s", self.access.error)
        elif self.access.warning is not None:
            logger.warning("%s", self.access.warning)
        self.feedback_log = FeedbackLog(self.settings.feedback_log)  # open even without a model
        # What /recommend served, for monitoring; telemetry: a failure never fails a request.
        self.served_log = ServedLog(served_log_path(self.settings.feedback_log))
        self._served_log_warned: set[str] = set()
        try:
            self.served_log.open()
        except OSError as error:  # counted and retried on each request
            self._served_log_failed(error)
        try:
            self._load()
        except Exception as error:  # refuse readiness rather than serve garbage
            logger.error("not ready: %s", error)
            self.load_error = str(error)
        else:
            self.load_error = None
            # The model's candidate index holds ~10^6 Python objects: move them out of the
            # garbage collector's generations so full collections stop pausing requests.
            gc.collect()
            gc.freeze()
            logger.info(
                "ready: model %s, %d known customers, %d catalogue items",
                self.model.version,
                len(self.model.candidates),
                len(self.model.catalogue),
            )
            if self.challenger is not None:
                logger.info(
                    "canary: challenger %s (model %s) for %.1f%% of customers (salt %r)",
                    self.canary.challenger_tag,
                    self.challenger.version,
                    100 * self.canary.share,
                    self.canary.salt,
                )
            self.canary_share.set(self.canary.effective_share)

    def _observability(self):
        """JSON log lines when RECSYS_LOG_FORMAT (or the environment) says so; with
        RECSYS_TRACING on, an OpenTelemetry tracer on BentoML's own tracer provider (so the
        request's steps are children of BentoML's request span), else None (no spans)."""
        from recsys_assets.observability import telemetry

        if telemetry.log_format(self.settings.environment) == "json":
            # the service's logger and the package's (the ranking path's warnings), not BentoML's
            telemetry.install_json_logs(
                [logger.name, "recsys_assets"], os.environ.get(telemetry.LOG_LEVEL_VAR)
            )
        elif os.environ.get(telemetry.LOG_LEVEL_VAR):
            logger.setLevel(os.environ[telemetry.LOG_LEVEL_VAR].upper())
        if TRACING is None:
            return None
        from bentoml._internal.configuration.containers import BentoMLContainer
        from opentelemetry import trace

        provider = BentoMLContainer.tracer_provider.get()  # the request spans' provider
        if "exporter_type" not in TRACING:  # console: BentoML 1.4 has no console exporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(telemetry.console_exporter()))
        trace.set_tracer_provider(provider)  # other instrumentation in this worker too
        mode = TRACING.get("exporter_type", "console")
        logger.info("tracing: %s exporter, sample rate %s", mode, TRACING["sample_rate"])
        return trace.get_tracer(__name__)

    def _metrics(self) -> None:
        # prometheus_client is imported here, after BentoML set up its multiprocess directory
        import prometheus_client as prom

        # Its _count is the number of requests served per model version, fallback and canary
        # variant (so no separate counter of served requests).
        self.latency = prom.Histogram(
            "recsys_recommend_latency_seconds",
            "Latency of /recommend by model version, outcome and canary variant",
            ["model_version", "fallback", "variant"],
            buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25),
        )
        self.feature_latency = prom.Histogram(
            "recsys_feature_read_latency_seconds",
            "Latency of the online feature read per request",
            ["model_version"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
        )
        self.fallbacks = prom.Counter(
            "recsys_fallbacks_total",
            "Requests served the popularity fallback",
            ["reason", "variant"],
        )
        # One value per service, not per worker: "livemax" drops the pid label (and dead
        # workers' values) in BentoML's multiprocess collection.
        self.canary_share = prom.Gauge(
            "recsys_canary_share",
            "Configured share of customers routed to the challenger (0 without one)",
            multiprocess_mode="livemax",
        )
        self.errors = prom.Counter(
            "recsys_errors_total",
            "Requests that failed inside the service, by endpoint and canary variant",
            ["endpoint", "variant"],
        )
        self.challenger_load_failures = prom.Counter(
            "recsys_challenger_load_failures_total",
            "Challengers named by the canary state file that could not be loaded",
        )
        self.feedback_events = prom.Counter(
            "recsys_feedback_events_total", "Feedback events appended", ["type"]
        )
        self.served_log_errors = prom.Counter(
            "recsys_served_log_errors_total",
            "Served recommendations that could not be written to the served log",
            ["kind"],
        )

    def _load(self) -> None:
        """Load the champion, the challenger (if configured) and their feature readers; the
        attributes are set only once everything loaded, so a failure leaves no half state."""
        from recsys_assets.features.store import FeatureRepo
        from recsys_assets.release.canary.routing import CanaryConfig
        from recsys_assets.serving.model import FeastOnlineReader
        from recsys_assets.serving.registry import load_promoted

        canary = CanaryConfig.from_env(os.environ)  # bad values: not ready, naming the variable
        canary, seen = self._initial_canary(canary)
        delay_s = self._challenger_delay()
        error_rate = self._challenger_error_rate()
        if self.model_ref is None:
            raise RuntimeError(f"model {MODEL_TAG} is not in the BentoML model store")
        stored = getattr(self.model_ref, "stored", self.model_ref)  # resolved in a worker
        model = load_promoted(stored.path, dict(stored.info.metadata))
        challenger = None
        if canary.enabled:
            challenger = self._load_challenger(canary.challenger_tag)
        store = FeatureRepo(self.settings.feature_repo, self.settings.feature_store_yaml).store()
        refresh = self.settings.serving.item_refresh_s
        inner = FeastOnlineReader(store, list(model.catalogue), refresh)
        inner.items()  # warm the in-memory item features before ready
        reader = TimedReader(inner, self.feature_latency.labels(model.version))
        challenger_reader = None
        if challenger is not None:
            if list(challenger.catalogue) != inner.catalogue:  # else share the item features
                inner = FeastOnlineReader(store, list(challenger.catalogue), refresh)
                inner.items()
            challenger_reader = TimedReader(inner, self.feature_latency.labels(challenger.version))
        self.canary, self.challenger, self.challenger_reader = canary, challenger, challenger_reader
        self.challenger_tag = canary.challenger_tag if challenger is not None else None
        self.challenger_delay_s, self.challenger_error_rate = delay_s, error_rate
        self._store, self._items_reader = store, reader.reader
        self._state_seen, self._state_check_at = seen, time.monotonic() + STATE_CHECK_S
        self.model, self.reader = model, reader

    # --- Following the canary state file -----------------------------------------------------

    def _state_signature(self):
        """The state file's (inode, mtime, size), None when there is none: an atomic rewrite
        gets a new inode, so a change is seen even within the clock's resolution."""
        try:
            stat = os.stat(self.canary_state_path)
        except FileNotFoundError:
            return None
        except OSError as error:  # unreadable folder: a signature of its own, read fails once
            return ("error", error.errno)
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _initial_canary(self, from_env):
        """The canary at start: the state file's when it exists (else the environment's), with
        the file's signature (taken before reading it: a later change is seen on the next
        check). A file that cannot be read serves the champion only, logged, until it changes."""
        from recsys_assets.release.canary.routing import CanaryConfig, read_canary_state

        seen = self._state_signature()
        try:
            state = read_canary_state(self.canary_state_path)
        except (OSError, ValueError) as error:
            logger.error("canary state unreadable (%s): serving the champion only", error)
            return CanaryConfig(challenger_tag=None), seen
        if state is None:
            return from_env, seen
        logger.info(
            "canary state %s (generation %d) overrides the environment",
            self.canary_state_path,
            state.generation,
        )
        return state.config(), seen

    def _follow_canary_state(self) -> None:
        """At most every STATE_CHECK_S: stat the state file and, when it changed, read it and
        move to what it asks for. A file that is missing or cannot be read keeps the last good
        configuration (logged once per change of the file). About 1 us when nothing changed."""
        from recsys_assets.release.canary.routing import read_canary_state

        seen = self._state_signature()
        if seen == self._state_seen:
            return
        self._state_seen = seen
        self._failed_tag = None  # a changed file may name a challenger that failed before
        if seen is None:
            logger.warning(
                "canary state %s is gone: keeping the current canary (%s at share %g)",
                self.canary_state_path,
                self.canary.challenger_tag,
                self.canary.effective_share,
            )
            return
        try:
            state = read_canary_state(self.canary_state_path)
        except (OSError, ValueError) as error:
            logger.error("canary state unreadable (%s): keeping the last good canary", error)
            return
        if state is None:  # removed between the stat and the read: seen on the next check
            self._state_seen = None
            return
        self._desired = state.config()
        logger.info(
            "canary state generation %d: challenger %s at share %g (%s, by %s)",
            state.generation,
            state.challenger_tag,
            state.share,
            state.reason or "no reason given",
            state.updated_by or "unknown",
        )
        self._reconcile()

    def _reconcile(self) -> None:
        """Move towards the configuration the state file asks for: no challenger traffic (a
        rollback) or a share change of the loaded challenger at once; a challenger not loaded
        yet is loaded in a background thread while the current configuration keeps serving."""
        desired = self._desired
        if desired is None or desired == self.canary:
            return
        if desired.effective_share == 0.0:
            if desired.challenger_tag != self.challenger_tag:  # free a challenger left behind
                self.challenger = self.challenger_reader = self.challenger_tag = None
            self._set_canary(desired)
        elif self.challenger is not None and desired.challenger_tag == self.challenger_tag:
            self._set_canary(desired)
        elif desired.challenger_tag not in (self._loading, self._failed_tag):
            self._loading = desired.challenger_tag
            task = asyncio.get_running_loop().create_task(self._load_in_background(self._loading))
            self._load_task = task  # a reference, so the task is not collected mid-way

    def _set_canary(self, canary) -> None:
        self.canary = canary
        self.canary_share.set(canary.effective_share)
        logger.info(
            "canary now: challenger %s for %.1f%% of customers",
            canary.challenger_tag,
            100 * canary.effective_share,
        )

    async def _load_in_background(self, tag: str) -> None:
        """Load challenger ``tag`` in a thread; on the event loop again, swap it in if the state
        file still asks for it. A failure is logged and counted, never raised."""
        try:
            model, reader = await asyncio.to_thread(self._build_challenger, tag)
        except Exception as error:
            self.challenger_load_failures.inc()
            self._failed_tag = tag
            logger.error("canary: challenger %s not loaded, serving as before: %s", tag, error)
            return
        finally:
            self._loading = None
        if self._desired is not None and self._desired.challenger_tag == tag:
            self.challenger, self.challenger_reader, self.challenger_tag = model, reader, tag
            logger.info("canary: challenger %s loaded (model %s)", tag, model.version)
        self._reconcile()  # the share now, or the next challenger the file asked for meanwhile

    def _build_challenger(self, tag: str):
        """The challenger model and its feature reader (sharing the champion's item features
        when the catalogues match); runs in a worker thread."""
        from recsys_assets.serving.model import FeastOnlineReader

        model = self._load_challenger(tag)
        inner = self._items_reader
        if list(model.catalogue) != inner.catalogue:
            refresh = self.settings.serving.item_refresh_s
            inner = FeastOnlineReader(self._store, list(model.catalogue), refresh)
            inner.items()
        gc.freeze()  # as at start: the new model's objects out of the collector's generations
        return model, TimedReader(inner, self.feature_latency.labels(model.version))

    def _refuse_drill(self, variable: str, raw: str) -> None:
        """A drill knob set in acceptance or prod: raise (the service stays unready)."""
        environment = str(self.settings.environment)
        if environment in ("acceptance", "prod"):
            raise RuntimeError(
                f"{variable}={raw!r} is a test and drill knob (fault injection) and "
                f"is refused in the {environment} environment; unset it"
            )

    def _challenger_error_rate(self) -> float:
        """``RECSYS_CHALLENGER_ERROR_RATE`` (0 when unset): a drill knob that fails that share
        of the challenger's requests with a 500. A value outside [0, 1], or any rate in
        acceptance or prod, raises (the service stays unready, naming the variable)."""
        raw = os.environ.get(CHALLENGER_ERROR_RATE_VAR, "").strip()
        if not raw:
            return 0.0
        try:
            rate = float(raw)
        except ValueError:
            rate = float("nan")
        if not 0.0 <= rate <= 1.0:  # also refuses NaN
            raise ValueError(f"{CHALLENGER_ERROR_RATE_VAR}={raw!r}: must be a share in [0, 1]")
        if rate > 0:
            self._refuse_drill(CHALLENGER_ERROR_RATE_VAR, raw)
            logger.warning(
                "drill: %s=%g fails %g%% of the challenger's requests with a 500",
                CHALLENGER_ERROR_RATE_VAR,
                rate,
                100 * rate,
            )
        return rate

    def _challenger_delay(self) -> float:
        """``RECSYS_CHALLENGER_DELAY_MS`` in seconds (0 when unset): a drill knob that makes the
        challenger slow. A value that is not a finite number >= 0, or any delay in acceptance or
        prod, raises (the service stays unready, naming the variable)."""
        raw = os.environ.get(CHALLENGER_DELAY_VAR, "").strip()
        if not raw:
            return 0.0
        try:
            delay_ms = float(raw)
        except ValueError:
            delay_ms = float("nan")
        if not (delay_ms >= 0.0 and delay_ms < float("inf")):  # also refuses NaN
            raise ValueError(
                f"{CHALLENGER_DELAY_VAR}={raw!r}: must be a number of milliseconds >= 0"
            )
        if delay_ms > 0:
            self._refuse_drill(CHALLENGER_DELAY_VAR, raw)
            logger.warning(
                "drill: %s=%g adds %g ms to every request the challenger serves",
                CHALLENGER_DELAY_VAR,
                delay_ms,
                delay_ms,
            )
        return delay_ms / 1000.0

    @staticmethod
    def _load_challenger(tag: str):
        """The challenger from the local BentoML store (a canary is decided at deploy time, so
        it is not bundled into the bento); a clear error when it is missing or corrupt."""
        from recsys_assets.serving.registry import load_promoted

        try:
            stored = bentoml.models.get(tag)
        except bentoml.exceptions.NotFound as error:
            raise RuntimeError(
                f"challenger model {tag} (RECSYS_CHALLENGER_TAG) is not in the BentoML model "
                f"store: {error}"
            ) from error
        try:
            return load_promoted(stored.path, dict(stored.info.metadata))
        except Exception as error:
            raise RuntimeError(f"challenger model {tag}: {error}") from error

    def __is_ready__(self) -> bool:
        return self.model is not None and self.load_error is None and self.access.ready

    def _as_of(self, context: Context | None):
        if context is not None and context.timestamp is not None:
            return context.timestamp
        if self.settings.serving.clock == "wall":
            return datetime.now(UTC)
        return None  # the model's data end

    @bentoml.api(input_spec=RecommendRequest, output_spec=RecommendResponse)
    async def recommend(self, **request) -> RecommendResponse:
        """Top-k items for a customer: candidates, online features, ranker, business filters;
        the popularity list for unknown customers or when the feature store fails. Runs on the
        event loop: a few milliseconds of CPU, cheaper than a hop to the thread pool."""
        from recsys_assets.observability.telemetry import REQUEST
        from recsys_assets.serving.model import recommend

        request = RecommendRequest(**request)
        if self.model is None:
            raise bentoml.exceptions.ServiceUnavailable("model not loaded: " + self.load_error)
        started = time.perf_counter()
        if time.monotonic() >= self._state_check_at:  # the canary state file, once a second
            self._state_check_at = time.monotonic() + STATE_CHECK_S
            self._follow_canary_state()
        request_id = uuid.uuid4().hex
        # One hash per request, only while a challenger is served (about 1 us).
        variant = self.canary.assign(request.customer_id)
        if variant == "challenger":
            model, reader = self.challenger, self.challenger_reader
        else:
            model, reader = self.model, self.reader
        # what this request's log lines carry (JsonFormatter); reset when the request ends
        token = REQUEST.set(
            {
                "request_id": request_id,
                "model_version": model.version,
                "variant": variant,
                "customer_id": request.customer_id,
            }
        )
        try:
            if self.tracer is not None:  # on BentoML's request span: find a request by its id
                self._tag_request_span(request_id, variant)
            if variant == "challenger" and self.challenger_delay_s:  # drill: a slow challenger
                await asyncio.sleep(self.challenger_delay_s)
            if (  # drill: a failing challenger; the draw is seeded with the request id
                variant == "challenger"
                and self.challenger_error_rate
                and random.Random(request_id).random() < self.challenger_error_rate
            ):
                self.errors.labels("recommend", variant).inc()
                raise bentoml.exceptions.InternalServerError(
                    f"{CHALLENGER_ERROR_RATE_VAR}: injected failure (drill)"
                )
            try:
                got = recommend(
                    model,
                    reader,
                    request.customer_id,
                    k=request.k,
                    as_of=self._as_of(request.context),
                    country=request.context.country if request.context else None,
                    exclude=request.exclude,
                    exclude_bought_within_days=request.exclude_bought_within_days,
                    tracer=self.tracer,
                    span_attributes={"recsys.variant": variant},
                )
            except Exception:
                self.errors.labels("recommend", variant).inc()
                logger.exception("recommend failed")
                raise
            if got.fallback:
                self.fallbacks.labels(got.fallback_reason, variant).inc()
            elapsed = time.perf_counter() - started
            self.latency.labels(got.model_version, str(got.fallback).lower(), variant).observe(
                elapsed
            )
            if logger.isEnabledFor(logging.DEBUG):  # the hot path: one line, only when asked
                logger.debug(
                    "recommended %d items (fallback %s) in %.2f ms",
                    len(got.items),
                    got.fallback_reason,
                    elapsed * 1000,
                )
            as_of = got.as_of.isoformat()
            self._log_served(request_id, request.customer_id, got, as_of, variant, elapsed)
        finally:
            REQUEST.reset(token)
        return RecommendResponse(
            request_id=request_id,
            customer_id=request.customer_id,
            items=[
                RecommendedItem(item_id=i, score=s, name=n)
                for i, s, n in zip(got.items, got.scores, got.names, strict=True)
            ],
            model_version=got.model_version,
            fallback=got.fallback,
            fallback_reason=got.fallback_reason,
            as_of=as_of,
            variant=variant,
        )

    @staticmethod
    def _tag_request_span(request_id: str, variant: str) -> None:
        from opentelemetry import trace

        span = trace.get_current_span()
        span.set_attribute("recsys.request_id", request_id)
        span.set_attribute("recsys.variant", variant)

    def _log_served(
        self, request_id: str, customer_id: str, got, as_of: str, variant: str, elapsed: float
    ) -> None:
        """Append what was served to the served log (about 15 us for 10 items, no fsync), with
        ``elapsed`` (seconds, the latency histogram's observation) as ``latency_ms``. Never
        raises: a failure is counted in recsys_served_log_errors_total and logged once per
        kind of error."""
        from recsys_assets.serving.served_log import ServedRecord

        try:
            self.served_log.append(
                [
                    ServedRecord(
                        ts=datetime.now(UTC),
                        request_id=request_id,
                        customer_id=customer_id,
                        model_version=got.model_version,
                        variant=variant,
                        items=got.items,
                        scores=got.scores,
                        fallback_reason=got.fallback_reason,
                        as_of=as_of,
                        latency_ms=elapsed * 1000.0,
                    )
                ]
            )
        except Exception as error:  # OSError (disk full, permissions), or a record it refused
            self._served_log_failed(error)

    def _served_log_failed(self, error: Exception) -> None:
        kind = type(error).__name__
        if isinstance(error, OSError) and error.errno in errno.errorcode:
            kind = errno.errorcode[error.errno]  # ENOSPC, EACCES, ...
        self.served_log_errors.labels(kind).inc()
        if kind not in self._served_log_warned:  # once per kind: no log flood per request
            self._served_log_warned.add(kind)
            logger.warning(
                "served log %s: cannot write (%s: %s); requests are still served, further "
                "%s errors are only counted in recsys_served_log_errors_total",
                self.served_log.path,
                kind,
                error,
                kind,
            )

    @bentoml.api(input_spec=CustomerFeaturesRequest, output_spec=CustomerFeaturesResponse)
    def customer_features(self, **request) -> CustomerFeaturesResponse:
        """The customer's online profile features (the row the ranker reads), for support and
        analysis tools: a separate permission (``read_customer_features``) from reading
        recommendations, since it is personal data."""
        request = CustomerFeaturesRequest(**request)
        if self.reader is None:
            raise bentoml.exceptions.ServiceUnavailable("feature store not loaded")
        try:
            row = self.reader.customer_profile(request.customer_id)
        except Exception:
            self.errors.labels("customer_features", "none").inc()
            raise
        return CustomerFeaturesResponse(
            customer_id=request.customer_id, found=row is not None, features=row or {}
        )

    @bentoml.on_shutdown
    def _close_served_log(self) -> None:
        self.served_log.close()

    @bentoml.api(input_spec=FeedbackRequest, output_spec=FeedbackResponse)
    def feedback(self, **request) -> FeedbackResponse:
        """Append shopper events (linked to a request id) to the durable feedback log."""
        from recsys_assets.ingestion.feedback import FeedbackEvent

        request = FeedbackRequest(**request)
        if self.feedback_log is None:
            raise bentoml.exceptions.ServiceUnavailable("feedback log not open")
        now = datetime.now(UTC)
        version = self.model.version if self.model is not None else None
        # An event the client tagged with the challenger is attributed to the challenger's
        # model while one is served; everything else to the champion (as before the canary).
        challenger_version = self.challenger.version if self.challenger is not None else version
        events = [
            FeedbackEvent(
                request_id=e.request_id,
                customer_id=e.customer_id,
                item_id=e.item_id,
                feedback_type=e.type,
                ts=(e.timestamp or now).astimezone(UTC),
                quantity=e.quantity,
                unit_price=e.unit_price,
                order_id=e.order_id,
                order_value=e.order_value,
                model_version=challenger_version if e.variant == "challenger" else version,
                variant=e.variant,
                position=e.position,
            )
            for e in request.events
        ]
        try:
            accepted = self.feedback_log.append(events)
        except Exception:
            self.errors.labels("feedback", "none").inc()
            raise
        for e in request.events:
            self.feedback_events.labels(e.type).inc()
        return FeedbackResponse(accepted=accepted)


Recommender.add_asgi_middleware(AccessControl)


class TimedReader:
    """A feature reader that records each read's latency in a Prometheus histogram."""

    def __init__(self, reader, histogram) -> None:
        self.reader = reader
        self.histogram = histogram

    def read(self, customer_id, items, as_of, bought=None):
        started = time.perf_counter()
        try:
            return self.reader.read(customer_id, items, as_of, bought)
        finally:
            self.histogram.observe(time.perf_counter() - started)

    def customer_profile(self, customer_id):
        return self.reader.customer_profile(customer_id)
