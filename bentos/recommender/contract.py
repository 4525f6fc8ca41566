"""The service's published contract: the OpenAPI document at ``/docs.json`` (read by BentoML's
Swagger page at ``/``) publishes what the service answers, error bodies included, and the service
refuses the request bodies the document does not publish.

BentoML 1.4 builds the document from the APIs' pydantic models (``Service.openapi_spec``, in
``_bentoml_sdk/service/openapi.py``), but it does not publish what it serves:

- every error as ``{"error": string, "detail": string}``, while its validation error (400, built
  in ``api_endpoint_wrapper``, ``_bentoml_impl/server/app.py``) has pydantic's error list as
  ``detail``;
- each body's fields with only the first branch of their ``anyOf``, so a field that may be null
  (``fallback_reason``, ``exclude_bought_within_days``) is published as never null;
- no request body as required, none of the access middleware's refusals (401, 403, 503), and
  pydantic's JSON Schema (``"type": "null"``) under ``openapi: 3.0.2``, which has no null type.

It has no hook to amend the document, so :class:`PublishedContract` (an ASGI middleware, inside
the access middleware) answers ``GET /docs.json`` with :func:`published_document`: BentoML's
document with those parts replaced. It also answers 415 to an API request whose body is not JSON,
the only media type published (BentoML would parse a form as the body, and a multipart body
without a boundary was a 500). tests/integration/test_api_contract.py runs Schemathesis over the
served document, with access control on and off.
"""

from __future__ import annotations

import json

from recsys_assets.config import variables

JSON = "application/json"
DOCS_PATH = "/docs.json"
OPENAPI_VERSION = "3.1.0"  # JSON Schema 2020-12, as pydantic writes it (null is a type)
SECURITY_SCHEME = "apiKey"
UNSUPPORTED_MEDIA_TYPE = b'{"error":"unsupported media type"}'
_REF = "#/components/schemas/{model}"

# The error bodies, as served (components of the document).
ERROR_SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object",
        "title": "Error",
        "description": (
            "A refusal or a failure. The access middleware's bodies are fixed "
            '({"error": "unauthenticated"}, {"error": "forbidden"}, {"error": "not ready"}) '
            "and name no key, rule or subject; a failure's body names no cause (the server "
            "log does)."
        ),
        "properties": {"error": {"type": "string", "title": "Error"}},
        "required": ["error"],
    },
    "ValidationError": {
        "type": "object",
        "title": "ValidationError",
        "description": "A body the request model refused (BentoML's validation error).",
        "properties": {
            "error": {
                "type": "string",
                "title": "Error",
                "description": "how many errors, and the request model's name",
            },
            "detail": {
                "type": "array",
                "title": "Detail",
                "description": "pydantic's errors, one per refused field",
                "items": {"$ref": _REF.format(model="ValidationErrorDetail")},
            },
        },
        "required": ["error", "detail"],
    },
    "ValidationErrorDetail": {
        "type": "object",
        "title": "ValidationErrorDetail",
        "properties": {
            "type": {
                "type": "string",
                "title": "Type",
                "description": "pydantic's error type: missing, extra_forbidden, json_invalid, ...",
            },
            "loc": {
                "type": "array",
                "title": "Location",
                "description": "the field's path in the body (empty: the whole body)",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"type": "string", "title": "Message"},
            "url": {"type": "string", "title": "Url", "description": "pydantic's page on the type"},
        },
        "required": ["type", "loc", "msg"],
    },
}


def _error(description: str, schema: str = "Error", **extra) -> dict:
    content = {JSON: {"schema": {"$ref": _REF.format(model=schema)}}}
    return {"description": description, "content": content, **extra}


# What an API operation may answer besides its 200, as served.
ERROR_RESPONSES: dict[str, dict] = {
    "400": _error(
        "the body is not JSON or not what the request schema accepts (unknown fields, types, "
        "ranges)",
        "ValidationError",
    ),
    "401": _error(
        "access control on: no valid API key (`Authorization: Bearer <key>`)",
        headers={
            "WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}
        },
    ),
    "403": _error("access control on: the policy refuses the key's role, or the key expired"),
    "415": _error("a body that is not application/json"),
    "500": _error("an unexpected error (the server log has it)"),
    "503": _error(
        "not ready: the model or the feature store is not loaded, access control is not "
        "configured, or the audit log cannot be written"
    ),
    "504": _error("not answered within the service's timeout"),
}


def _model_ref(model, mode: str, schemas: dict) -> dict:
    """A reference to the pydantic model's JSON Schema, added to ``schemas`` with its $defs."""
    schema = model.model_json_schema(ref_template=_REF, mode=mode)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def published_document(service, *, access_enforced: bool) -> dict:
    """The OpenAPI document of ``service`` (a BentoML service) as it serves: BentoML's, with each
    API's bodies from the models BentoML validates and serialises with, and every error body.
    ``access_enforced``: API keys are required (a bearer security scheme on the APIs)."""
    document = service.openapi_spec.asdict()
    document["openapi"] = OPENAPI_VERSION
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(ERROR_SCHEMAS)
    for api in service.apis.values():
        operation = document["paths"][api.route]["post"]
        request = _model_ref(api.input_spec, "validation", schemas)
        response = _model_ref(api.output_spec, "serialization", schemas)
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": request}}}
        operation["responses"] = {
            "200": {"description": "Successful Response", "content": {JSON: {"schema": response}}},
            **ERROR_RESPONSES,
        }
        if access_enforced:
            operation["security"] = [{SECURITY_SCHEME: []}]
    readyz = document["paths"].get("/readyz", {}).get("get")
    if readyz is not None:
        readyz["responses"]["503"] = {"description": "not ready"}
    if access_enforced:
        components["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": f"an API key of {variables.API_KEYS.name} (docs/access-control.md)",
            }
        }
    return document


def _media_type(scope) -> str | None:
    """The request's Content-Type without parameters, lower case; None when it has none."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return None


async def _answer(send, status: int, body: bytes, *, head: bool = False) -> None:
    headers = [(b"content-type", JSON.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


class PublishedContract:
    """ASGI middleware: ``GET /docs.json`` answers :func:`published_document` (built once per
    process); an API request with a body other than JSON gets 415 before it is read (no
    Content-Type reads as JSON, as BentoML reads it). Everything else passes untouched."""

    def __init__(self, app, service) -> None:
        self.app = app
        self.service = service
        self.routes = {api.route for api in service.apis.values()}
        self._document: bytes | None = None

    def document(self) -> bytes:
        if self._document is None:
            from bentos.recommender.access import access_gate

            document = published_document(self.service, access_enforced=access_gate().enforced)
            self._document = json.dumps(document).encode()
        return self._document

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path == DOCS_PATH and method in ("GET", "HEAD"):
            return await _answer(send, 200, self.document(), head=method == "HEAD")
        if path in self.routes and method == "POST" and _media_type(scope) not in (None, JSON):
            return await _answer(send, 415, UNSUPPORTED_MEDIA_TYPE)
        return await self.app(scope, receive, send)
