"""The service's request and response bodies (pydantic): what ``/recommend``, ``/feedback`` and
``/customer_features`` accept and answer. Request models are strict, so that what they accept is
what their published JSON Schema says (bentos/recommender/contract.py): unknown fields, values of
another JSON type (``"5"`` for an integer, ``false`` for a number, a number for a timestamp) and
ids of nothing but whitespace are refused (400)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from recsys_assets.core import constants as c

REQUEST_CONFIG = ConfigDict(extra="forbid", strict=True)
# An id is stripped of whitespace (Unicode's White_Space) and must hold another character: the
# class spelled out, since regular expression engines disagree on what \s is.
_WHITESPACE = r"\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
Id = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=f"[^{_WHITESPACE}]"
    ),
]
Variant = Literal["champion", "challenger"]  # recsys_assets.release.canary.routing.VARIANTS


def _integral(value):
    """5.0 as 5: JSON Schema's integer (what the document publishes) includes it; a strict int
    refuses it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Strict integers that take integral floats; the limits before the validator, so the published
# schema shows them (minimum, maximum).
Rank = Annotated[int, Field(ge=1, le=c.MAX_K), BeforeValidator(_integral)]  # k, a position
Quantity = Annotated[int, Field(ge=1, le=100_000), BeforeValidator(_integral)]


class Context(BaseModel):
    """Where and when the shopper asks (all optional)."""

    model_config = REQUEST_CONFIG
    device: Annotated[str, StringConstraints(max_length=32)] | None = None
    country: Annotated[str, StringConstraints(max_length=64)] | None = None
    timestamp: datetime | None = Field(
        None, description="the request's time; default: the service clock (see serving.clock)"
    )


class RecommendRequest(BaseModel):
    """A request for one customer's list. Unknown fields are refused."""

    model_config = REQUEST_CONFIG
    customer_id: Id
    k: Rank = c.DEFAULT_K
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

    model_config = REQUEST_CONFIG
    request_id: Id
    customer_id: Id
    item_id: Id
    type: Literal["impression", "click", "add_to_cart", "purchase"]
    timestamp: datetime | None = None
    quantity: Quantity = 1
    unit_price: float | None = Field(None, ge=0)
    order_id: Id | None = None
    order_value: float | None = Field(None, ge=0)
    position: Rank | None = None
    variant: Variant | None = Field(
        None, description="the variant the recommendation's response named (canary analysis)"
    )


class CustomerFeaturesRequest(BaseModel):
    model_config = REQUEST_CONFIG
    customer_id: Id


class CustomerFeaturesResponse(BaseModel):
    customer_id: str
    found: bool = Field(description="whether the online store has a profile for the customer")
    features: dict[str, float | int | str | None]


class FeedbackRequest(BaseModel):
    model_config = REQUEST_CONFIG
    events: list[FeedbackItem] = Field(min_length=1, max_length=1_000)


class FeedbackResponse(BaseModel):
    accepted: int
