"""The text a causal LM reads for one example: the model's chat template over the screened conversation (tool
calls written by the template when it renders them), or role lines where there is no template."""

from __future__ import annotations

import logging
from typing import Any

from app.datasets.formats import Example
from app.datasets.records import render_calls

log = logging.getLogger("ftguard.representations")
_RENDERS_CALLS: dict[str, bool] = {}
_PROBE = "ftguard_probe_tool"


def renders_tool_calls(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template writes an assistant turn's `tool_calls` itself."""
    template = str(getattr(tokenizer, "chat_template", None) or "")
    if template not in _RENDERS_CALLS:
        call = {"type": "function", "function": {"name": _PROBE, "arguments": {"x": 1}}}
        probe = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ]
        try:
            out = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
            _RENDERS_CALLS[template] = _PROBE in str(out)
        except Exception:  # a template that refuses tool calls does not render them
            _RENDERS_CALLS[template] = False
    return _RENDERS_CALLS[template]


def _template_message(m: dict[str, Any], own_calls: bool) -> dict[str, Any]:
    calls = m.get("tool_calls")
    if not calls or not own_calls:
        return {"role": m["role"], "content": m["content"]}
    text = m["content"].removesuffix(render_calls(calls)).rstrip("\n")
    return {"role": m["role"], "content": text, "tool_calls": calls}


def format_example(tokenizer: Any, example: Example) -> str:
    """The chat-template text of the screened conversation (up to its last target, so no generation prompt).

    Tool calls are written by the template when it renders them, else as the `<tool_call>` text already in
    the content. Plain-text examples (language modelling) and models without a template (or whose template
    refuses the conversation, e.g. a `tool` role) get the text itself, as "role: content" lines for chats.
    """
    messages = example.screened
    if example.plain:
        return "\n".join(m["content"] for m in messages)
    if getattr(tokenizer, "chat_template", None):
        own = any("tool_calls" in m for m in messages) and renders_tool_calls(tokenizer)
        chat = [_template_message(m, own) for m in messages]
        try:
            text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
            return str(text)
        except Exception as exc:  # jinja2 TemplateError, or a template raising on a role it does not know
            log.debug("chat template refused the conversation (%s); using role lines", exc)
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
