"""OpenAI chat fine-tuning records (also TRL's conversational language modelling): `messages`, with
optional `tools` / `functions` and `parallel_tool_calls`."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, obj
from app.datasets.formats.chat import Turns, add_turns, check_conversation, check_tools
from app.datasets.records import Example, RawRecord


def detect(v: dict[str, Any]) -> bool:
    return "messages" in v


def convert(rec: RawRecord) -> Example:
    v = obj(rec)
    turns = Turns()
    add_turns(v.get("messages"), rec, "messages", turns)
    check_tools(v, rec, turns)
    check_conversation(turns, rec, "messages")
    return turns.example()


SPEC = FormatSpec(
    name="openai-chat",
    fields="`messages`: `[{role, content, name?, weight?, tool_calls?, function_call?, tool_call_id?}]`; "
    "`tools`, `functions`, `parallel_tool_calls` (optional)",
    rendering="the conversation up to its last trained assistant turn; `weight: 0` turns are context; "
    "developer as system, function as tool; tool calls as `<tool_call>` JSON blocks (or the chat "
    "template's own form); image/audio/file parts counted, never fetched",
    detect=detect,
    convert=convert,
    source="OpenAI fine-tuning guide (chat, tools, functions, vision)",
)
