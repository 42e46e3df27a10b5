"""Dolly records: `instruction`, optional `context`, `response`."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, join, obj, pair, text
from app.datasets.records import Example, RawRecord


def detect(v: dict[str, Any]) -> bool:
    return "instruction" in v and "response" in v


def convert(rec: RawRecord) -> Example:
    v = obj(rec)
    user = join(text(v, "instruction", rec), text(v, "context", rec, required=False))
    return pair(user, text(v, "response", rec), rec, ("instruction", "response"))


SPEC = FormatSpec(
    name="dolly",
    fields="`instruction`, `context` (optional), `response`",
    rendering="user: instruction + blank line + context; assistant (target): response",
    detect=detect,
    convert=convert,
    source="Databricks Dolly 15k",
)
