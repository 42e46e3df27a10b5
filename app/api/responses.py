"""How a route documents an error it may answer (the error envelope, with what the error means there), and
how every POST route is declared (`write`)."""

from __future__ import annotations

from typing import Any

from app.api.errors import WRITE_RESPONSES
from app.api.idempotency import Idempotent
from app.schemas import ErrorEnvelope

Responses = dict[int | str, dict[str, object]]


def error(description: str) -> dict[str, object]:
    """One documented error response of a route (its OpenAPI `responses` entry)."""
    return {"model": ErrorEnvelope, "description": description}


def resource_errors(not_found: str, invalid: str = "Invalid request.") -> Responses:
    """What every route of a tenant's resource may answer: 404 (no such object for the tenant) and 422."""
    return {404: error(not_found), 422: error(invalid)}


def write(
    model: Any, errors: Responses, *, created: bool = False, more: Responses | None = None
) -> dict[str, Any]:
    """The declaration every POST route shares: its answer model (201 when it creates), the Idempotency-Key
    it takes (a retried POST is answered from its first result: app.api.idempotency), and its documented
    errors, the route's own (`errors`), then those of every write, then `more` over both."""
    return {
        "response_model": model,
        "status_code": 201 if created else 200,
        "dependencies": [Idempotent],
        "responses": {**errors, **WRITE_RESPONSES, **(more or {})},
    }
