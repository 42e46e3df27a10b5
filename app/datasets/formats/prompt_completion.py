"""Prompt-completion records: `prompt` and `completion` (or `question` and `answer`) as strings, or, in
TRL's conversational form, as message lists. The prompt is context, the completion the target."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, err, obj, pair, text
from app.datasets.formats.chat import Turns, add_turns, check_tools
from app.datasets.records import Example, RawRecord

KEYS = (("prompt", "completion"), ("question", "answer"))


def detect(v: dict[str, Any]) -> bool:
    return any(p in v and c in v for p, c in KEYS)


def conversational(v: dict[str, Any], rec: RawRecord, keys: tuple[str, str]) -> tuple[Turns, int]:
    """A prompt (all context) followed by a completion (the targets), either one a string or a message
    list; with the index where the completion starts."""
    turns = Turns()
    prompt, completion = v.get(keys[0]), v.get(keys[1])
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    add_turns(prompt, rec, keys[0], turns, context=True)
    check_tools(v, rec, turns)
    start = len(turns.messages)
    add_turns(completion, rec, keys[1], turns)
    if not any(m["role"] == "assistant" for m in turns.messages[start:]):
        raise err(rec, "no_assistant_message", f"'{keys[1]}' has no assistant message", keys[1])
    if all(i in turns.context for i in range(start, len(turns.messages))):
        raise err(rec, "no_trained_assistant_message", f"every message of '{keys[1]}' has weight 0", keys[1])
    return turns, start


def convert(rec: RawRecord) -> Example:
    v = obj(rec)
    keys = next(((p, c) for p, c in KEYS if p in v), KEYS[0])
    if isinstance(v.get(keys[0]), list) or isinstance(v.get(keys[1]), list):
        return conversational(v, rec, keys)[0].example()
    return pair(text(v, keys[0], rec), text(v, keys[1], rec), rec, keys)


SPEC = FormatSpec(
    name="prompt-completion",
    fields="`prompt`, `completion` (or `question`, `answer`): strings, or message lists (TRL conversational)",
    rendering="user: prompt; assistant (target): completion; a conversational prompt's assistant "
    "turns are context (completion-only training)",
    detect=detect,
    convert=convert,
    source="TRL dataset formats (prompt-completion), Together, OpenAI legacy",
)
