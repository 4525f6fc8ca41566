"""The recommendation service: the promoted ranker over Feast online features, over HTTP.

``bentoml serve bentos.recommender.service:Recommender`` (from the repository root) or the bento
built by the ``bento`` asset. Endpoints (JSON over POST): ``/recommend``, ``/feedback`` and
``/customer_features``; BentoML adds ``/livez``, ``/readyz`` (false until the model and the
feature store are loaded) and ``/metrics`` (Prometheus). Configuration comes from the project
settings of ``RECSYS_ENV``; the model is the BentoML model ``RECSYS_MODEL_TAG`` (default
``recsys-ranker:latest``), bundled into the bento.

This file is the service and its APIs; the parts around them are modules beside it:

- :mod:`~bentos.recommender.schemas`: the request and response bodies;
- :mod:`~bentos.recommender.access`: the API keys, checked in an ASGI middleware before the body
  is read (docs/access-control.md);
- :mod:`~bentos.recommender.contract`: the published OpenAPI document (``/docs.json``) as the
  service answers, error bodies included, and 415 for a body that is not JSON;
- :mod:`~bentos.recommender.canary`: the canary's challenger (``RECSYS_CHALLENGER_TAG``, a
  sticky share of customers), and following the canary state file while serving;
- :mod:`~bentos.recommender.faults`: the drill knobs that make the challenger slow or failing,
  refused (never ready) in acceptance and prod;
- :mod:`~bentos.recommender.metrics`: the Prometheus metrics;
- :mod:`~bentos.recommender.telemetry`: JSON logs and OpenTelemetry tracing.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import time
import uuid
from datetime import UTC, datetime

import bentoml

from bentos.recommender.access import AccessControl, access_gate
from bentos.recommender.canary import CanaryFollower, challenger_reader, load_challenger
from bentos.recommender.contract import PublishedContract
from bentos.recommender.faults import INJECTED_FAILURE, ChallengerFaults
from bentos.recommender.metrics import ServiceMetrics
from bentos.recommender.schemas import (
    Context,
    CustomerFeaturesRequest,
    CustomerFeaturesResponse,
    FeedbackRequest,
    FeedbackResponse,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
)
from bentos.recommender.telemetry import install as install_telemetry
from bentos.recommender.telemetry import service_tracing, tag_request_span
from recsys_assets.config import variables
from recsys_assets.core import constants as c

logger = logging.getLogger("bentoml.recommender")

MODEL_TAG = variables.MODEL_TAG.read()


def _model_ref() -> bentoml.models.BentoModel | None:
    """The model as a class attribute (so a bento bundles it); None if the store lacks it."""
    try:
        return bentoml.models.BentoModel(MODEL_TAG)
    except Exception as error:  # NotFound, or a broken store
        logger.error("model %s is not in the BentoML model store: %s", MODEL_TAG, error)
        return None


@bentoml.service(
    name=c.BENTO_NAME,
    http={"port": c.SERVICE_PORT},
    traffic={"timeout": 10},
    # Worker processes: 1 by default (in Kubernetes, scale out with pods); the benchmark runs 2
    # on its 2-core machine.
    workers=int(variables.SERVICE_WORKERS.read()),
    # Per-request access lines cost CPU on the hot path; /metrics counts requests instead.
    logging={"access": {"enabled": False}},
    # RECSYS_TRACING: off (default), console or otlp (docs/observability.md)
    **service_tracing(),
)
class Recommender:
    """Recommendations from the promoted model, each also written to the served log;
    feedback into the durable event log."""

    model_ref = _model_ref()

    def __init__(self) -> None:
        from recsys_assets.config import get_settings
        from recsys_assets.ingestion.feedback import FeedbackLog
        from recsys_assets.serving.served_log import ServedLog, served_log_path

        self.settings = get_settings()
        self.model = None
        self.reader = None
        self.faults = ChallengerFaults()  # RECSYS_CHALLENGER_DELAY_MS, ..._ERROR_RATE, by _load
        self.metrics = ServiceMetrics()
        self.canary = CanaryFollower(self.settings, self.metrics)  # set up by _load
        self.tracer = install_telemetry(self.settings.environment, __name__)
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
            canary = self.canary.config
            if self.canary.challenger is not None:
                logger.info(
                    "canary: challenger %s (model %s) for %.1f%% of customers (salt %r)",
                    canary.challenger_tag,
                    self.canary.challenger.version,
                    100 * canary.share,
                    canary.salt,
                )
            self.metrics.canary_share.set(canary.effective_share)

    def _load(self) -> None:
        """Load the champion, the challenger (if configured) and their feature readers; the
        attributes are set only once everything loaded, so a failure leaves no half state."""
        from recsys_assets.features.store import FeatureRepo
        from recsys_assets.release.canary.routing import CanaryConfig
        from recsys_assets.serving.model import FeastOnlineReader
        from recsys_assets.serving.registry import load_promoted

        canary = CanaryConfig.from_env(os.environ)  # bad values: not ready, naming the variable
        canary, seen = self.canary.initial_config(canary)  # the state file's, when there is one
        faults = ChallengerFaults.from_environment(self.settings.environment)
        if self.model_ref is None:
            raise RuntimeError(f"model {MODEL_TAG} is not in the BentoML model store")
        stored = getattr(self.model_ref, "stored", self.model_ref)  # resolved in a worker
        model = load_promoted(stored.path, dict(stored.info.metadata))
        challenger = load_challenger(canary.challenger_tag) if canary.enabled else None
        store = FeatureRepo(self.settings.feature_repo, self.settings.feature_store_yaml).store()
        refresh = self.settings.serving.item_refresh_s
        inner = FeastOnlineReader(store, list(model.catalogue), refresh)
        inner.items()  # warm the in-memory item features before ready
        reader = self.metrics.timed(inner, model.version)
        challenger_read = None
        if challenger is not None:  # the champion's item features when the catalogues match
            challenger_read = challenger_reader(challenger, store, inner, refresh, self.metrics)
        self.canary.start(canary, seen, challenger, challenger_read, store, inner)
        self.faults = faults
        self.model, self.reader = model, reader

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
        self.canary.follow()  # the canary state file, once a second
        request_id = uuid.uuid4().hex
        # One hash per request, only while a challenger is served (about 1 us).
        variant = self.canary.config.assign(request.customer_id)
        if variant == "challenger":
            model, reader = self.canary.challenger, self.canary.challenger_reader
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
                tag_request_span(request_id, variant)
            if variant == "challenger" and self.faults.delay_s:  # drill: a slow challenger
                await asyncio.sleep(self.faults.delay_s)
            if variant == "challenger" and self.faults.fails(request_id):  # drill: failing
                self.metrics.errors.labels("recommend", variant).inc()
                raise bentoml.exceptions.InternalServerError(INJECTED_FAILURE)
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
                self.metrics.errors.labels("recommend", variant).inc()
                logger.exception("recommend failed")
                raise
            if got.fallback:
                self.metrics.fallbacks.labels(got.fallback_reason, variant).inc()
            elapsed = time.perf_counter() - started
            self.metrics.latency.labels(
                got.model_version, str(got.fallback).lower(), variant
            ).observe(elapsed)
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
        self.metrics.served_log_errors.labels(kind).inc()
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
            self.metrics.errors.labels("customer_features", "none").inc()
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
        challenger = self.canary.challenger
        challenger_version = challenger.version if challenger is not None else version
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
            self.metrics.errors.labels("feedback", "none").inc()
            raise
        for e in request.events:
            self.metrics.feedback_events.labels(e.type).inc()
        return FeedbackResponse(accepted=accepted)


Recommender.add_asgi_middleware(AccessControl)  # outermost: the key before anything else
Recommender.add_asgi_middleware(PublishedContract, service=Recommender)  # /docs.json, 415
