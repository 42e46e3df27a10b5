"""Alpaca records: `instruction`, optional `input`, `output`."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, join, obj, pair, text
from app.datasets.records import Example, RawRecord


def detect(v: dict[str, Any]) -> bool:
    return "instruction" in v and "output" in v


def convert(rec: RawRecord) -> Example:
    v = obj(rec)
    user = join(text(v, "instruction", rec), text(v, "input", rec, required=False))
    return pair(user, text(v, "output", rec), rec, ("instruction", "output"))


SPEC = FormatSpec(
    name="alpaca",
    fields="`instruction`, `input` (optional), `output`",
    rendering="user: instruction + blank line + input; assistant (target): output",
    detect=detect,
    convert=convert,
    source="Stanford Alpaca",
)
