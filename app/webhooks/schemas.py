"""API shapes of webhook endpoints and deliveries."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models import WebhookDelivery, WebhookEndpoint

EventType = Literal[
    "screening.succeeded",
    "screening.failed",
    "screening.cancelled",
    "experiment.succeeded",
    "experiment.failed",
    "experiment.cancelled",
    "decision.made",
]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"url": "https://hooks.example.com/ftguard", "events": ["decision.made"]}]
        },
    )
    url: str = Field(min_length=8, max_length=2048, description="http(s) URL on a public address.")
    events: list[EventType] = Field(min_length=1, max_length=7)
    description: str = Field(default="", max_length=500)


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, min_length=8, max_length=2048)
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=7)


class EndpointPublic(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    created_at: int
    url: str
    events: list[str]
    description: str

    @classmethod
    def of(cls, ep: WebhookEndpoint) -> EndpointPublic:
        return cls(
            id=ep.id, created_at=ep.created_at, url=ep.url, events=ep.events, description=ep.description
        )


class EndpointWithSecret(EndpointPublic):
    secret: str = Field(
        description="`whsec_...`: shown only in this response; store it to verify deliveries."
    )

    @classmethod
    def of(cls, ep: WebhookEndpoint) -> EndpointWithSecret:
        return cls(**EndpointPublic.of(ep).model_dump(), secret=ep.secret)


class DeliveryPublic(BaseModel):
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
    def of(cls, d: WebhookDelivery) -> DeliveryPublic:
        return cls(
            id=d.id,
            endpoint_id=d.endpoint_id,
            created_at=d.created_at,
            event_type=d.event_type,
            status=d.status,  # type: ignore[arg-type]
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
            delivered_at=d.delivered_at,
            payload=json.loads(d.payload),
            log=d.log,
        )
