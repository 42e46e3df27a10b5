"""API shapes of webhook endpoints and deliveries."""

from __future__ import annotations

import json
from typing import Any, Literal, Self

from pydantic import Field

from app.models import WebhookDelivery
from app.schemas import RequestModel, RowPublic, examples

EventType = Literal[
    "screening.succeeded",
    "screening.failed",
    "screening.cancelled",
    "experiment.succeeded",
    "experiment.failed",
    "experiment.cancelled",
    "decision.made",
]


class EndpointCreate(RequestModel):
    model_config = examples({"url": "https://hooks.example.com/ftguard", "events": ["decision.made"]})
    url: str = Field(min_length=8, max_length=2048, description="http(s) URL on a public address.")
    events: list[EventType] = Field(min_length=1, max_length=7)
    description: str = Field(default="", max_length=500)


class EndpointUpdate(RequestModel):
    url: str | None = Field(default=None, min_length=8, max_length=2048)
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=7)


class EndpointPublic(RowPublic):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    created_at: int
    url: str
    events: list[str]
    description: str


class EndpointWithSecret(EndpointPublic):
    secret: str = Field(
        description="`whsec_...`: shown only in this response; store it to verify deliveries."
    )


class DeliveryPublic(RowPublic):
    object: Literal["webhook_delivery"] = "webhook_delivery"
    id: str = Field(description="The `webhook-id` header of every attempt.")
    endpoint_id: str
    created_at: int
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: float | None
    delivered_at: int | None
    payload: dict[str, Any]
    log: list[dict[str, Any]]

    @classmethod
    def of(cls, row: WebhookDelivery, **derived: Any) -> Self:
        """The row's own columns; the payload parsed, and the next attempt only while one is pending."""
        next_attempt_at = row.next_attempt_at if row.status == "pending" else None
        return super().of(row, next_attempt_at=next_attempt_at, payload=json.loads(row.payload), **derived)
