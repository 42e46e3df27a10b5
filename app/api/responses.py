"""How a route documents an error it may answer: the error envelope, with what the error means there."""

from __future__ import annotations

from app.schemas import ErrorEnvelope

Responses = dict[int | str, dict[str, object]]


def error(description: str) -> dict[str, object]:
    """One documented error response of a route (its OpenAPI `responses` entry)."""
    return {"model": ErrorEnvelope, "description": description}


def resource_errors(not_found: str, invalid: str = "Invalid request.") -> Responses:
    """What every route of a tenant's resource may answer: 404 (no such object for the tenant) and 422."""
    return {404: error(not_found), 422: error(invalid)}
