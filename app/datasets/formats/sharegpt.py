"""ShareGPT records: `conversations` of `{from, value}`."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, bad_field, err, obj
from app.datasets.formats.chat import Turns, add_turns, check_conversation
from app.datasets.records import Example, RawRecord, RecordError

ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
}


def detect(v: dict[str, Any]) -> bool:
    return "conversations" in v


def convert(rec: RawRecord) -> Example:
    v = obj(rec)
    turns = v.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise bad_field(rec, turns, "'conversations' must be a non-empty list", "conversations")
    messages = []
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise err(rec, "invalid_type", f"{where} must be an object", where)
        for key in ("from", "value"):
            if key not in turn:
                raise err(rec, "missing_field", f"{where} has no '{key}'", f"{where}.{key}")
        role = turn["from"]
        if not isinstance(role, str) or role.lower() not in ROLES:
            raise err(
                rec,
                "unrecognized_role",
                f"{where} has role {str(role)[:40]!r}; expected one of {sorted(ROLES)}",
                f"{where}.from",
            )
        messages.append({"role": ROLES[role.lower()], "content": turn["value"]})
    parsed = Turns()
    try:
        add_turns(messages, rec, "conversations", parsed)
    except RecordError as exc:  # name the source fields, not the translated ones
        if exc.field:
            exc.field = exc.field.replace(".content", ".value").replace(".role", ".from")
        raise
    check_conversation(parsed, rec, "conversations")
    return parsed.example()


SPEC = FormatSpec(
    name="sharegpt",
    fields="`conversations`: `[{from: system/human/gpt, value}]`",
    rendering="human as user, gpt as assistant; every assistant turn is a target",
    detect=detect,
    convert=convert,
    source="ShareGPT / FastChat",
)
