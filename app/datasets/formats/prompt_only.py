"""Prompt-only records (TRL; online methods such as GRPO generate the completions): `prompt`, a string or
a message list. Nothing in the file is a target, so the prompt itself is screened."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, nonempty, obj, text
from app.datasets.formats.chat import Turns, add_turns, check_tools
from app.datasets.records import Example, RawRecord


def detect(v: dict[str, Any]) -> bool:
    return "prompt" in v and not ({"completion", "chosen", "rejected", "label"} & v.keys())


def convert(rec: RawRecord) -> Example:
    v = obj(rec)
    if isinstance(v.get("prompt"), list):
        turns = Turns()
        add_turns(v["prompt"], rec, "prompt", turns, context=True)
        check_tools(v, rec, turns)
        return turns.example()
    return Example([{"role": "user", "content": nonempty(text(v, "prompt", rec), rec, "prompt")}])


SPEC = FormatSpec(
    name="prompt-only",
    fields="`prompt`: a string or a message list",
    rendering="user: prompt (no target in the file: the prompt is what is screened)",
    detect=detect,
    convert=convert,
    source="TRL dataset formats (prompt-only)",
)
