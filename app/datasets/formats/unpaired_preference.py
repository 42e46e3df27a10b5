"""TRL unpaired preference records (KTO): `prompt`, `completion`, `label` (true: desirable). A desirable
completion is a target; an undesirable one is trained away from, so only its prompt is screened."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, bad_field, obj
from app.datasets.formats.prompt_completion import conversational
from app.datasets.records import Example, RawRecord


def detect(v: dict[str, Any]) -> bool:
    return "label" in v and "completion" in v


def convert(rec: RawRecord) -> Example:
    v = obj(rec)
    label = v.get("label")
    if not isinstance(label, bool):
        raise bad_field(rec, label, "'label' must be true (desirable) or false (undesirable)", "label")
    turns, start = conversational(v, rec, ("prompt", "completion"))
    ex = turns.example()
    if label:
        return ex
    ctx = tuple(i for i in ex.context_turns if i < start)
    return Example(ex.messages[:start], ctx, tuple(ex.messages[start:]), notes=ex.notes)


SPEC = FormatSpec(
    name="unpaired-preference",
    fields="`prompt`, `completion` (strings or message lists), `label` (true or false)",
    rendering="label true: prompt (context) then completion (target); label false: the prompt only, the "
    "completion (trained away from) is counted in the stats, not screened",
    detect=detect,
    convert=convert,
    source="TRL dataset formats (unpaired preference)",
)
