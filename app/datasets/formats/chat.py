"""Chat messages as OpenAI's fine-tuning guide documents them, shared by every conversational format.

Roles system, developer (rendered as system), user, assistant, tool and the legacy function (rendered as
tool); assistant `tool_calls` or a legacy `function_call` instead of content; `tool` messages answering an
earlier call by `tool_call_id`; `name`; `weight` 0/1 on assistant turns; content as a string or a list of
parts (`text`, `image_url`, `input_audio`, `file`; the non-text parts are counted, never fetched).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from app.datasets.formats.base import bad_field, err
from app.datasets.records import Example, RawRecord, render_calls

ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
MEDIA_PARTS = ("image_url", "input_audio", "file")
TEXT_PARTS = ("text", "refusal")


@dataclass
class Turns:
    """Messages parsed so far, with the calls they made (a later tool message must answer one)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    context: list[int] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)
    call_ids: set[str] = field(default_factory=set)
    function_names: set[str] = field(default_factory=set)

    def example(self, other: tuple[dict[str, Any], ...] = ()) -> Example:
        return Example(list(self.messages), tuple(self.context), other, notes=dict(self.notes))


def _content(turn: dict[str, Any], rec: RawRecord, where: str, notes: Counter[str]) -> tuple[str, int]:
    """(text, number of media parts) of a message's content."""
    content = turn.get("content")
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise err(
            rec,
            "invalid_type",
            f"{where}.content must be a string or a list of content parts, not {type(content).__name__}",
            f"{where}.content",
        )
    texts: list[str] = []
    media = 0
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise err(rec, "invalid_content_part", f"{at} must be an object with a 'type'", at)
        kind = part["type"]
        if kind in TEXT_PARTS:
            value = part.get(kind)
            if not isinstance(value, str):
                raise err(rec, "invalid_content_part", f"{at} of type {kind!r} needs a string '{kind}'", at)
            texts.append(value)
        elif kind in MEDIA_PARTS:
            if not isinstance(part.get(kind), dict):
                raise err(rec, "invalid_content_part", f"{at} of type {kind!r} needs an object '{kind}'", at)
            if kind == "image_url" and not isinstance(part[kind].get("url"), str):
                raise err(rec, "invalid_content_part", f"{at}.image_url needs a string 'url'", at)
            notes[kind] += 1
            media += 1
        else:
            allowed = [*TEXT_PARTS, *MEDIA_PARTS]
            raise err(
                rec, "invalid_content_part", f"{at} has type {kind[:40]!r}; expected one of {allowed}", at
            )
    return "\n".join(texts), media


def _arguments(value: Any, rec: RawRecord, at: str) -> Any:
    if not isinstance(value, str):
        raise err(
            rec,
            "invalid_tool_arguments",
            f"{at} must be a JSON string (the arguments encoded as text), not {type(value).__name__}",
            at,
        )
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        raise err(rec, "invalid_tool_arguments", f"{at} is not valid JSON", at) from None


def _calls(turn: dict[str, Any], rec: RawRecord, where: str, turns: Turns) -> list[dict[str, Any]]:
    """The tool calls of an assistant turn (tool_calls, or the legacy function_call), arguments parsed."""
    out: list[dict[str, Any]] = []
    calls = turn.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list) or not calls:
            raise err(
                rec, "invalid_type", f"{where}.tool_calls must be a non-empty list", f"{where}.tool_calls"
            )
        for j, call in enumerate(calls):
            at = f"{where}.tool_calls[{j}]"
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict):
                raise err(rec, "invalid_type", f"{at} must be an object with a 'function' object", at)
            if call.get("type", "function") != "function":
                raise err(rec, "invalid_value", f"{at}.type must be 'function'", f"{at}.type")
            cid = call.get("id")
            if not isinstance(cid, str) or not cid:
                raise err(rec, "missing_field", f"{at} has no 'id' (a tool message answers it)", f"{at}.id")
            name = fn.get("name")
            if not isinstance(name, str) or not name:
                raise err(rec, "missing_field", f"{at}.function has no 'name'", f"{at}.function.name")
            args = _arguments(fn.get("arguments"), rec, f"{at}.function.arguments")
            turns.call_ids.add(cid)
            out.append({"type": "function", "function": {"name": name, "arguments": args}})
    legacy = turn.get("function_call")
    if legacy is not None:
        at = f"{where}.function_call"
        if not isinstance(legacy, dict) or not isinstance(legacy.get("name"), str) or not legacy["name"]:
            raise err(rec, "invalid_type", f"{at} must be an object with a 'name'", at)
        args = _arguments(legacy.get("arguments"), rec, f"{at}.arguments")
        turns.function_names.add(legacy["name"])
        out.append({"type": "function", "function": {"name": legacy["name"], "arguments": args}})
    return out


def _weight(turn: dict[str, Any], role: str, rec: RawRecord, where: str) -> bool:
    """True when the turn is trained on (no weight, or weight 1)."""
    if "weight" not in turn:
        return True
    w = turn["weight"]
    at = f"{where}.weight"
    if role != "assistant":
        raise err(rec, "invalid_weight", f"{at}: only assistant messages carry a weight", at)
    if isinstance(w, bool) or not isinstance(w, int | float) or w not in (0, 1):
        raise err(rec, "invalid_weight", f"{at} must be 0 or 1, not {str(w)[:40]}", at)
    return w == 1


def add_turns(value: Any, rec: RawRecord, fld: str, turns: Turns, *, context: bool = False) -> None:
    """Parse a list of chat messages into `turns`; `context` marks every assistant turn as not trained."""
    if not isinstance(value, list) or not value:
        raise bad_field(rec, value, f"'{fld}' must be a non-empty list of messages", fld)
    for i, turn in enumerate(value):
        where = f"{fld}[{i}]"
        if not isinstance(turn, dict):
            raise err(rec, "invalid_type", f"{where} must be an object", where)
        if "role" not in turn:
            raise err(rec, "missing_field", f"{where} has no 'role'", f"{where}.role")
        src_role = turn["role"]
        if not isinstance(src_role, str) or src_role not in ROLES:
            raise err(
                rec,
                "unrecognized_role",
                f"{where} has role {str(src_role)[:40]!r}; expected one of {list(ROLES)}",
                f"{where}.role",
            )
        role = ROLES[src_role]
        if "name" in turn and not isinstance(turn["name"], str):
            raise err(rec, "invalid_type", f"{where}.name must be a string", f"{where}.name")
        trained = _weight(turn, role, rec, where)
        calls = _calls(turn, rec, where, turns) if role == "assistant" else []
        if role != "assistant" and ("tool_calls" in turn or "function_call" in turn):
            raise err(rec, "invalid_value", f"{where}: only assistant messages make tool calls", where)
        if "content" not in turn and not calls:
            raise err(rec, "missing_field", f"{where} has no 'content'", f"{where}.content")
        body, media = _content(turn, rec, where, turns.notes)
        if role == "tool":
            _answers(turn, src_role, rec, where, turns)
        if not body.strip() and not calls and not media:
            raise err(rec, "empty_content", f"message {i} ({src_role}) is empty", f"{where}.content")
        msg: dict[str, Any] = {"role": role, "content": body}
        if calls:
            rendered = render_calls(calls)
            msg["content"] = f"{body}\n{rendered}" if body.strip() else rendered
            msg["tool_calls"] = calls
            turns.notes["tool_calls"] += len(calls)
        if role == "assistant" and (context or not trained):
            turns.context.append(len(turns.messages))
            if not trained:
                turns.notes["weight_0"] += 1
        turns.messages.append(msg)


def _answers(turn: dict[str, Any], src_role: str, rec: RawRecord, where: str, turns: Turns) -> None:
    if src_role == "tool":
        cid = turn.get("tool_call_id")
        if not isinstance(cid, str) or not cid:
            raise err(rec, "missing_field", f"{where} has no 'tool_call_id'", f"{where}.tool_call_id")
        if cid not in turns.call_ids:
            raise err(
                rec,
                "unknown_tool_call",
                f"{where} answers tool call {cid[:60]!r}, which no earlier assistant message made",
                f"{where}.tool_call_id",
            )
        return
    name = turn.get("name")
    if not isinstance(name, str) or name not in turns.function_names:
        raise err(
            rec,
            "unknown_tool_call",
            f"{where} (function) answers {str(name)[:60]!r}, which no earlier function_call named",
            f"{where}.name",
        )


def check_conversation(turns: Turns, rec: RawRecord, fld: str) -> None:
    """The data-preparation checks on a whole supervised conversation."""
    roles = [m["role"] for m in turns.messages]
    if "assistant" not in roles:
        raise err(rec, "no_assistant_message", "the conversation has no assistant message", fld)
    if "user" not in roles:
        raise err(rec, "no_user_message", "the conversation has no user message", fld)
    if all(m["role"] != "assistant" or i in turns.context for i, m in enumerate(turns.messages)):
        raise err(
            rec,
            "no_trained_assistant_message",
            "every assistant message has weight 0: the example trains on nothing",
            fld,
        )


def check_tools(v: dict[str, Any], rec: RawRecord, turns: Turns, where: str = "") -> None:
    """A top-level `tools` / `functions` list and `parallel_tool_calls`."""
    for key, inner in (("tools", True), ("functions", False)):
        got = v.get(key)
        if got is None:
            continue
        at = f"{where}{key}"
        if not isinstance(got, list):
            raise err(rec, "invalid_type", f"'{at}' must be a list", at)
        for j, tool in enumerate(got):
            fn = tool.get("function") if inner and isinstance(tool, dict) else tool
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                what = "an object with a 'function' that has a 'name'" if inner else "an object with a 'name'"
                raise err(rec, "invalid_type", f"{at}[{j}] must be {what}", f"{at}[{j}]")
        turns.notes["tools_defined"] += len(got)
    ptc = v.get("parallel_tool_calls")
    if ptc is not None and not isinstance(ptc, bool):
        at = f"{where}parallel_tool_calls"
        raise err(rec, "invalid_type", f"'{at}' must be true or false", at)
