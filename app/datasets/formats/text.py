"""Language-modelling records (TRL standard, Together "text"): `text`, trained on as a whole."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, nonempty, obj, text
from app.datasets.records import Example, RawRecord


def detect(v: dict[str, Any]) -> bool:
    return "text" in v


def convert(rec: RawRecord) -> Example:
    v = obj(rec)
    body = nonempty(text(v, "text", rec), rec, "text")
    return Example([{"role": "assistant", "content": body}], plain=True)


SPEC = FormatSpec(
    name="text",
    fields="`text`",
    rendering="the text as it is, all of it a target; no chat template",
    detect=detect,
    convert=convert,
    source="TRL dataset formats (language modeling), Together (text)",
)
