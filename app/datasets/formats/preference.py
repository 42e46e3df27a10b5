"""TRL preference records: `prompt` (optional: an implicit prompt is the shared start), `chosen`,
`rejected`, as strings or message lists. `chosen` is the side trained towards and is screened."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, err, nonempty, obj, text
from app.datasets.formats.chat import Turns, add_turns, check_tools
from app.datasets.records import Example, RawRecord


def detect(v: dict[str, Any]) -> bool:
    return "chosen" in v and "rejected" in v


def convert(rec: RawRecord) -> Example:
    v = obj(rec)
    conversational = any(isinstance(v.get(k), list) for k in ("prompt", "chosen", "rejected"))
    if not conversational:
        good = nonempty(text(v, "chosen", rec), rec, "chosen")
        bad = nonempty(text(v, "rejected", rec), rec, "rejected")
        other = ({"role": "assistant", "content": bad},)
        if "prompt" not in v:  # implicit prompt: whole texts
            return Example([{"role": "assistant", "content": good}], other=other, plain=True)
        prompt = nonempty(text(v, "prompt", rec), rec, "prompt")
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": good}]
        return Example(msgs, other=other)
    turns = Turns()
    if "prompt" in v:
        add_turns(v["prompt"], rec, "prompt", turns, context=True)
    check_tools(v, rec, turns)
    start = len(turns.messages)
    rejected = Turns(call_ids=set(turns.call_ids), function_names=set(turns.function_names))
    add_turns(v.get("rejected"), rec, "rejected", rejected)
    add_turns(v.get("chosen"), rec, "chosen", turns)
    chosen = turns.messages[start:]
    if "prompt" not in v:  # implicit prompt: the shared start of both lists is context
        shared = 0
        while (
            shared < min(len(chosen), len(rejected.messages)) and chosen[shared] == rejected.messages[shared]
        ):
            shared += 1
        turns.context.extend(i for i in range(shared) if chosen[i]["role"] == "assistant")
        rejected.messages = rejected.messages[shared:]
    if not any(m["role"] == "assistant" for m in turns.messages[start:]):
        raise err(rec, "no_assistant_message", "'chosen' has no assistant message", "chosen")
    return turns.example(other=tuple(rejected.messages))


SPEC = FormatSpec(
    name="preference",
    fields="`prompt` (optional), `chosen`, `rejected`: strings or message lists",
    rendering="prompt (context) then `chosen`, the side trained towards; `rejected` is counted in the "
    "stats, not screened; without `prompt`, the shared start of the two lists is the prompt",
    detect=detect,
    convert=convert,
    source="TRL dataset formats (preference, explicit and implicit prompt)",
)
