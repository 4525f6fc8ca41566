"""The service's request and response bodies (pydantic): what ``/recommend``, ``/feedback`` and
``/customer_features`` accept and answer. Unknown request fields are refused (400)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from recsys_assets.core import constants as c

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Variant = Literal["champion", "challenger"]  # recsys_assets.release.canary.routing.VARIANTS


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
