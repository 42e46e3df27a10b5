"""OpenAI preference (DPO) records: `input.messages`, `preferred_output`, `non_preferred_output`."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, bad_field, err, obj
from app.datasets.formats.chat import Turns, add_turns, check_tools
from app.datasets.records import Example, RawRecord


def detect(v: dict[str, Any]) -> bool:
    return "input" in v and ("preferred_output" in v or "non_preferred_output" in v)


def outputs(v: dict[str, Any], key: str, rec: RawRecord, turns: Turns, *, context: bool) -> None:
    """An output list: assistant messages only (the side of the pair)."""
    value = v.get(key)
    start = len(turns.messages)
    add_turns(value, rec, key, turns, context=context)
    for i, m in enumerate(turns.messages[start:]):
        if m["role"] != "assistant":
            raise err(rec, "invalid_value", f"{key}[{i}] must be an assistant message", f"{key}[{i}].role")


def convert(rec: RawRecord) -> Example:
    v = obj(rec)
    inp = v.get("input")
    if not isinstance(inp, dict):
        raise bad_field(rec, inp, "'input' must be an object with 'messages'", "input")
    turns = Turns()
    add_turns(inp.get("messages"), rec, "input.messages", turns, context=True)
    check_tools(inp, rec, turns, "input.")
    if not any(m["role"] == "user" for m in turns.messages):
        raise err(rec, "no_user_message", "input.messages has no user message", "input.messages")
    rejected = Turns(call_ids=set(turns.call_ids), function_names=set(turns.function_names))
    outputs(v, "non_preferred_output", rec, rejected, context=True)
    outputs(v, "preferred_output", rec, turns, context=False)
    return turns.example(other=tuple(rejected.messages))


SPEC = FormatSpec(
    name="openai-dpo",
    fields="`input`: `{messages, tools?, parallel_tool_calls?}`, `preferred_output`, "
    "`non_preferred_output` (lists of assistant messages)",
    rendering="`input.messages` (context) then `preferred_output`, the side trained towards; "
    "`non_preferred_output` is counted in the stats, not screened",
    detect=detect,
    convert=convert,
    source="OpenAI fine-tuning guide (direct preference optimization)",
)
