"""How a route documents an error it may answer: the error envelope, with what the error means there."""

from __future__ import annotations

from app.schemas import ErrorEnvelope

Responses = dict[int | str, dict[str, object]]


def error(description: str) -> dict[str, object]:
    """One documented error response of a route (its OpenAPI `responses` entry)."""
    return {"model": ErrorEnvelope, "description": description}
