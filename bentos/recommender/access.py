"""Access control of the service's API: an ASGI middleware (:class:`AccessControl`, added with
``Recommender.add_asgi_middleware``) that lets through the routes in :data:`ROUTE_ACTIONS` only
what the data-plane gate admits, before the body is read. The gate (:func:`access_gate`) is
built once per process and shared with the service's readiness. See docs/access-control.md."""

from __future__ import annotations

import errno
import functools
import logging

logger = logging.getLogger("bentoml.recommender")  # the service's logger, in every module

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
    """ASGI middleware: POSTs to the routes in ROUTE_ACTIONS pass only what the gate admits; a
    refusal is answered here, before the body is read, with a body that names no key, rule or
    subject (published in /docs.json: bentos/recommender/contract.py). Everything else (other
    methods, health, metrics, docs) passes untouched."""

    def __init__(self, app) -> None:
        self.app = app
        self._audit_warned: set[str] = set()

    async def __call__(self, scope, receive, send) -> None:
        # Only the APIs' method: any other is answered 405 by the router, never reaching an API.
        guarded = scope["type"] == "http" and scope["method"] == "POST"
        action = ROUTE_ACTIONS.get(scope["path"]) if guarded else None
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
