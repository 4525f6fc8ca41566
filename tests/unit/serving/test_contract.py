"""The service's published contract (bentos/recommender/contract.py): the OpenAPI document holds
the bodies the service answers, errors included, and the middleware serves it and refuses the
bodies it does not publish. Served over HTTP, Schemathesis checks the whole document against the
answers: tests/integration/test_api_contract.py."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("bentoml")
jsonschema_rs = pytest.importorskip("jsonschema_rs")
schemathesis = pytest.importorskip("schemathesis")

from pydantic import ValidationError  # noqa: E402

from bentos.recommender.access import REFUSALS, ROUTE_ACTIONS  # noqa: E402
from bentos.recommender.contract import (  # noqa: E402
    DOCS_PATH,
    ERROR_RESPONSES,
    UNSUPPORTED_MEDIA_TYPE,
    PublishedContract,
    published_document,
)
from bentos.recommender.schemas import FeedbackRequest, RecommendRequest  # noqa: E402
from bentos.recommender.service import Recommender  # noqa: E402


@pytest.fixture(scope="module")
def document() -> dict:
    return published_document(Recommender, access_enforced=False)


def _valid(document: dict, component: str, value) -> bool:
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    return jsonschema_rs.validator_for(schema).is_valid(value)


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_api_publishes_its_bodies_and_every_error(document):
    assert document["openapi"] == "3.1.0"  # pydantic's JSON Schema: null is a type
    for route in ROUTE_ACTIONS:
        operation = document["paths"][route]["post"]
        body = operation["requestBody"]
        assert body["required"] is True and list(body["content"]) == ["application/json"]
        assert set(operation["responses"]) == {"200", *ERROR_RESPONSES}
        assert {str(status) for status in REFUSALS} <= set(operation["responses"])
        assert "security" not in operation  # access control off: no key asked for
    schemas = document["components"]["schemas"]
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in _refs(document))
    assert document["paths"]["/readyz"]["get"]["responses"]["503"]


def test_fields_that_may_be_null_are_published_so():
    """BentoML publishes only the first branch of an anyOf: null was published as refused."""
    document = published_document(Recommender, access_enforced=False)
    answer = {
        "request_id": "r",
        "customer_id": "u",
        "items": [],
        "model_version": "v",
        "fallback": False,
        "fallback_reason": None,
        "as_of": "2024-01-01T00:00:00+00:00",
        "variant": "champion",
    }
    assert _valid(document, "RecommendResponseIODescriptor", answer)
    request = {"customer_id": "u", "context": None, "exclude_bought_within_days": None}
    assert _valid(document, "RecommendRequestIODescriptor", request)


@pytest.mark.parametrize(
    "model, body",
    [
        (RecommendRequest, b'{"customer_id": '),
        (RecommendRequest, b'{"customer_id": "1", "k": 0, "colour": "red"}'),
        (RecommendRequest, b'{"customer_id": "1", "k": "5"}'),
        (FeedbackRequest, b'{"events": [{"type": "click"}]}'),
    ],
)
def test_the_validation_error_is_published_as_bentoml_serves_it(document, model, body):
    with pytest.raises(ValidationError) as raised:
        model.model_validate_json(body)
    error = raised.value
    served = {  # what BentoML's api_endpoint_wrapper answers with the 400
        "error": f"{error.error_count()} validation error for {error.title}",
        "detail": error.errors(include_context=False, include_input=False),
    }
    assert _valid(document, "ValidationError", json.loads(json.dumps(served)))
    assert not _valid(document, "ValidationError", {"error": "x", "detail": "a string"})


def test_the_refusals_are_published(document):
    for status, body in {**REFUSALS, 415: UNSUPPORTED_MEDIA_TYPE}.items():
        assert _valid(document, "Error", json.loads(body))
        assert str(status) in ERROR_RESPONSES
    assert "WWW-Authenticate" in ERROR_RESPONSES["401"]["headers"]


def test_with_access_control_the_apis_ask_for_a_bearer_key():
    document = published_document(Recommender, access_enforced=True)
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for route in ROUTE_ACTIONS:
        assert document["paths"][route]["post"]["security"] == [{"apiKey": []}]


def test_schemathesis_reads_every_operation(document):
    schema = schemathesis.openapi.from_dict(document)
    operations = {(op.ok().method, op.ok().path) for op in schema.get_all_operations()}
    assert {("post", route) for route in ROUTE_ACTIONS} <= operations
    assert len(operations) == 7  # with /healthz, /livez, /readyz, /metrics


def _served(body: dict) -> bool:
    try:
        RecommendRequest.model_validate_json(json.dumps(body))
    except ValidationError:
        return False
    return True


def test_request_models_accept_what_their_schema_says(document):
    """Strict models: 5.0 is an integer (JSON Schema's), "5" and true are not; ids of nothing
    but whitespace are refused by the schema's pattern and by the model alike (each character
    some engine calls whitespace is tried)."""
    for body, accepted in [
        ({"customer_id": "1", "k": 5.0}, True),
        ({"customer_id": " 1 ", "k": 5}, True),
        ({"customer_id": "1", "k": "5"}, False),
        ({"customer_id": "1", "k": True}, False),
        ({"customer_id": "1", "exclude_bought_within_days": False}, False),
        ({"customer_id": "1", "context": {"timestamp": 1700000000}}, False),
        ({"customer_id": "  "}, False),
        ({"customer_id": "\u00a0\t\u3000"}, False),
        ({"customer_id": "\x1f"}, True),  # a control character, not whitespace
    ]:
        assert _valid(document, "RecommendRequestIODescriptor", body) is accepted, body
        assert _served(body) is accepted, body
    for character in map(chr, [*range(0x3001), 0xFEFF]):
        if character.isspace() or not character.strip():  # whitespace to Python, or to Rust
            for text in (character, f"{character}1{character}"):
                body = {"customer_id": text}
                assert _valid(document, "RecommendRequestIODescriptor", body) is _served(body)


def _call(method: str, path: str, content_type: bytes | None = None):
    """(status, body) PublishedContract answers, or "app" when it passed the request on."""
    sent = []

    async def app(scope, receive, send):
        sent.append("app")

    async def send(message):
        sent.append(message)

    headers = [(b"content-type", content_type)] if content_type is not None else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(PublishedContract(app, Recommender)(scope, None, send))
    if sent == ["app"]:
        return "app"
    return sent[0]["status"], sent[1]["body"]


@pytest.mark.parametrize(
    "content_type", [b"multipart/form-data", b"application/x-www-form-urlencoded", b"text/plain"]
)
def test_a_body_that_is_not_json_is_415(content_type):
    assert _call("POST", "/recommend", content_type) == (415, UNSUPPORTED_MEDIA_TYPE)


def test_json_other_methods_and_other_paths_pass():
    assert _call("POST", "/recommend", b"application/json; charset=utf-8") == "app"
    assert _call("POST", "/recommend") == "app"  # no Content-Type: read as JSON, as BentoML does
    assert _call("GET", "/recommend", b"text/plain") == "app"  # the router's 405
    assert _call("POST", "/elsewhere", b"text/plain") == "app"


def test_the_document_is_served_at_docs_json():
    status, body = _call("GET", DOCS_PATH)
    assert status == 200 and json.loads(body)["openapi"] == "3.1.0"
