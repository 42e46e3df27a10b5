"""What the backends see follows what is trained on: the screened text ends at the last target, weight-0
turns are context, tool calls are text (through the chat template when it renders them), and a report says
how many turns were excluded and which preference side was scored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.datasets.formats import to_example
from app.datasets.records import Example, RawRecord, render_calls
from app.datasets.validate import training_summary
from workers.representations.chat_format import format_example, renders_tool_calls

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

ARGS = json.dumps({"city": "Paris"})
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ARGS}}
CHAT = {
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny.", "weight": 0},
    ]
}


def ex(value: dict[str, Any], fmt: str = "openai-chat") -> Example:
    return to_example(RawRecord(1, 1, value), fmt)


def test_the_screened_conversation_ends_at_the_last_target() -> None:
    e = ex(CHAT)
    assert e.targets == [1] and e.excluded_turns == 1
    assert [m["role"] for m in e.screened] == ["user", "assistant"]
    assert "sunny" not in e.text and '"name": "get_weather"' in e.text


def test_tool_calls_through_a_template_that_renders_them_and_text_otherwise(tokenizer: Any) -> None:
    e = ex({"messages": [*CHAT["messages"][:3], {"role": "assistant", "content": "It is sunny."}]})
    original = tokenizer.chat_template
    try:
        # A template that writes tool calls its own way (as Qwen- and Llama-style templates do).
        tokenizer.chat_template = (
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
            "{% for c in m.tool_calls or [] %}"
            "[CALL {{ c.function.name }} {{ c.function.arguments | tojson }}]"
            "{% endfor %}</{{ m.role }}>{% endfor %}"
        )
        assert renders_tool_calls(tokenizer)
        text = format_example(tokenizer, e)
        assert '[CALL get_weather {"city": "Paris"}]' in text and "<tool_call>" not in text
        assert text.endswith("<assistant>It is sunny.</assistant>")
        # A template that ignores tool calls: the call stays as text in the content.
        tokenizer.chat_template = (
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
        )
        assert not renders_tool_calls(tokenizer)
        text = format_example(tokenizer, e)
        assert render_calls(e.messages[1]["tool_calls"]) in text
        # A template that refuses the tool role: role lines.
        tokenizer.chat_template = (
            "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tool role') }}{% endif %}"
            "{{ m.content }}{% endfor %}"
        )
        assert format_example(tokenizer, e).startswith("user: Weather in Paris?\nassistant: <tool_call>")
    finally:
        tokenizer.chat_template = original


def test_weight_zero_and_plain_text_in_the_causal_lm_text(tokenizer: Any) -> None:
    text = format_example(tokenizer, ex(CHAT))
    assert "sunny" not in text and "Weather in Paris?" in text
    assert format_example(tokenizer, ex({"text": "The sky is blue."}, "text")) == "The sky is blue."


def test_the_report_says_what_was_trained_on_and_which_side_was_scored() -> None:
    summary = training_summary([ex(CHAT), ex({"prompt": "a", "completion": "b"}, "prompt-completion")])
    assert (summary["trained_turns"], summary["excluded_turns"], summary["weight_0_turns"]) == (2, 1, 1)
    assert summary["tool_calls"] == 1 and "last trained assistant turn" in summary["screened"]
    assert "preference" not in summary
    pair = ex({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}, "preference")
    summary = training_summary([pair], "preference")
    assert summary["preference"]["other_side"]["examples"] == 1
    assert "trained towards" in summary["preference"]["screened_side"]
