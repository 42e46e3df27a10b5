"""OpenAI chat (roles, tools, functions, weights, content parts) and DPO files, written from the OpenAI
fine-tuning guide's examples; one test per data-preparation error code, with line numbers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.datasets.helpers import check, codes, jsonl, valid

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

WEATHER_ARGS = json.dumps({"location": "San Francisco, USA", "format": "celsius"})
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and country, eg. San Francisco, USA"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "format"],
        },
    },
}
TOOL_CALL = {
    "messages": [
        {"role": "user", "content": "What is the weather in San Francisco?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_id",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": WEATHER_ARGS},
                }
            ],
        },
    ],
    "tools": [WEATHER_TOOL],
    "parallel_tool_calls": False,
}
TOOL_ROUND_TRIP = {
    "messages": [
        {"role": "developer", "content": "You are a weather bot."},
        {"role": "user", "content": "What is the weather in San Francisco?", "name": "ana"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": WEATHER_ARGS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18}'},
        {"role": "assistant", "content": "It is 18 degrees Celsius in San Francisco."},
    ],
    "tools": [WEATHER_TOOL],
}
FUNCTION_CALL = {
    "messages": [
        {"role": "user", "content": "What is the weather in San Francisco?"},
        {"role": "assistant", "function_call": {"name": "get_current_weather", "arguments": WEATHER_ARGS}},
        {"role": "function", "name": "get_current_weather", "content": "21.0"},
        {"role": "assistant", "content": "It is 21 degrees celsius in San Francisco, CA"},
    ],
    "functions": [WEATHER_TOOL["function"]],
}
WEIGHTS = {
    "messages": [
        {"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "Paris", "weight": 0},
        {"role": "user", "content": "Can you be more sarcastic?"},
        {"role": "assistant", "content": "Paris, as if everyone doesn't know that already.", "weight": 1},
    ]
}
VISION = {
    "messages": [
        {"role": "system", "content": "You are an assistant that identifies uncommon cheeses."},
        {"role": "user", "content": "What is this cheese?"},
        {
            "role": "user",
            "content": [
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/Danbo_Cheese.jpg", "detail": "low"},
                }
            ],
        },
        {"role": "assistant", "content": "Danbo"},
    ]
}
PARTS = {
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Transcribe this and summarise the file."},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-abc123", "filename": "notes.pdf"}},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Hello, and a summary."}]},
    ]
}
DPO = {
    "input": {
        "messages": [{"role": "user", "content": "Hello, can you tell me how cold San Francisco is today?"}],
        "tools": [],
        "parallel_tool_calls": True,
    },
    "preferred_output": [
        {
            "role": "assistant",
            "content": "Today in San Francisco, it is not quite cold as expected. Morning clouds will give "
            "away to sunshine, with a high near 68°F (20°C) and a low around 57°F (14°C).",
        }
    ],
    "non_preferred_output": [
        {"role": "assistant", "content": "It is not particularly cold in San Francisco today."}
    ],
}


def test_tool_calls_without_content_are_accepted_and_rendered_as_text() -> None:
    (ex,) = valid(jsonl(TOOL_CALL), "openai-chat")
    call = ex.messages[1]
    assert (
        call["role"] == "assistant" and call["tool_calls"][0]["function"]["arguments"]["format"] == "celsius"
    )
    assert call["content"].startswith("<tool_call>\n") and '"name": "get_current_weather"' in call["content"]
    assert "get_current_weather" in ex.text  # the sentence backend sees the call
    rep = check(jsonl(TOOL_CALL))
    assert rep.stats["tool_calls"] == 1 and rep.stats["tools_defined"] == 1


def test_developer_tool_name_roles_and_a_tool_answer() -> None:
    (ex,) = valid(jsonl(TOOL_ROUND_TRIP), "openai-chat")
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert ex.targets == [2, 4] and ex.messages[3]["content"] == '{"temperature": 18}'


def test_legacy_function_call_and_function_role() -> None:
    (ex,) = valid(jsonl(FUNCTION_CALL), "openai-chat")
    assert ex.messages[2]["role"] == "tool" and "get_current_weather" in ex.messages[1]["content"]


def test_weight_zero_turns_are_context_not_targets() -> None:
    (ex,) = valid(jsonl(WEIGHTS), "openai-chat")
    assert ex.context_turns == (2,) and ex.targets == [4] and ex.excluded_turns == 1
    assert "Paris\n" in ex.text  # context is still seen, as context
    rep = check(jsonl(WEIGHTS))
    assert (rep.stats["trained_turns"], rep.stats["excluded_turns"], rep.stats["weight_0_turns"]) == (1, 1, 1)
    # The same conversation trained on both answers is another example (another target set).
    both = {"messages": [{k: v for k, v in m.items() if k != "weight"} for m in WEIGHTS["messages"]]}
    (ex2,) = valid(jsonl(both), "openai-chat")
    assert ex2.content_hash != ex.content_hash and ex2.text == ex.text


def test_turns_after_the_last_target_are_not_screened() -> None:
    msgs = [
        *WEIGHTS["messages"][:2],
        {"role": "assistant", "content": "Paris"},
        WEIGHTS["messages"][3],
        {"role": "assistant", "content": "Paris, obviously.", "weight": 0},
    ]
    (ex,) = valid(jsonl({"messages": msgs}), "openai-chat")
    assert ex.text.endswith("Paris") and "obviously" not in ex.text and ex.excluded_turns == 1


def test_image_audio_and_file_parts_are_counted_never_fetched() -> None:
    rep = check(jsonl(VISION, PARTS))
    assert rep.ok, rep.errors
    assert rep.stats["media_parts"] == {"image_url": 1, "input_audio": 1, "file": 1}
    ex = valid(jsonl(VISION, PARTS), "openai-chat")
    assert ex[0].messages[2]["content"] == "" and "example.com" not in ex[0].text
    assert ex[1].messages[0]["content"] == "Transcribe this and summarise the file."


def test_openai_dpo_screens_the_preferred_side_and_counts_the_other() -> None:
    (ex,) = valid(jsonl(DPO), "openai-dpo")
    assert [m["role"] for m in ex.messages] == ["user", "assistant"] and "68°F" in ex.text
    assert ex.other[0]["content"].startswith("It is not particularly")
    assert "particularly" not in ex.text
    pref = check(jsonl(DPO, DPO)).stats["preference"]
    assert pref["other_side"]["examples"] == 2 and pref["other_side"]["characters"] == 2 * len(
        DPO["non_preferred_output"][0]["content"]  # type: ignore[index]
    )
    assert "trained towards" in pref["screened_side"]


def _with(base: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


_DELETE = object()
CALL = ["messages", 1, "tool_calls", 0]


@pytest.mark.parametrize(
    ("record", "code", "field"),
    [
        (
            _with(TOOL_ROUND_TRIP, ["messages", 3, "tool_call_id"], "call_9"),
            "unknown_tool_call",
            "messages[3].tool_call_id",
        ),
        (
            _with(TOOL_ROUND_TRIP, ["messages", 3, "tool_call_id"], _DELETE),
            "missing_field",
            "messages[3].tool_call_id",
        ),
        (_with(FUNCTION_CALL, ["messages", 2, "name"], "other_fn"), "unknown_tool_call", "messages[2].name"),
        (
            _with(TOOL_CALL, [*CALL, "function", "arguments"], {"location": "SF"}),
            "invalid_tool_arguments",
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            _with(TOOL_CALL, [*CALL, "function", "arguments"], "{location: SF"),
            "invalid_tool_arguments",
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            _with(FUNCTION_CALL, ["messages", 1, "function_call", "arguments"], "nope"),
            "invalid_tool_arguments",
            "messages[1].function_call.arguments",
        ),
        (_with(TOOL_CALL, [*CALL, "id"], _DELETE), "missing_field", "messages[1].tool_calls[0].id"),
        (_with(TOOL_CALL, [*CALL, "type"], "retrieval"), "invalid_value", "messages[1].tool_calls[0].type"),
        (_with(TOOL_CALL, ["messages", 1, "tool_calls"], []), "invalid_type", "messages[1].tool_calls"),
        (_with(WEIGHTS, ["messages", 2, "weight"], 0.5), "invalid_weight", "messages[2].weight"),
        (_with(WEIGHTS, ["messages", 2, "weight"], True), "invalid_weight", "messages[2].weight"),
        (_with(WEIGHTS, ["messages", 1, "weight"], 1), "invalid_weight", "messages[1].weight"),
        (_with(WEIGHTS, ["messages", 4, "weight"], 0), "no_trained_assistant_message", "messages"),
        (
            _with(VISION, ["messages", 2, "content", 0, "type"], "video_url"),
            "invalid_content_part",
            "messages[2].content[0]",
        ),
        (
            _with(VISION, ["messages", 2, "content", 0, "image_url"], "https://x"),
            "invalid_content_part",
            "messages[2].content[0]",
        ),
        (
            _with(PARTS, ["messages", 0, "content", 0, "text"], 3),
            "invalid_content_part",
            "messages[0].content[0]",
        ),
        (_with(TOOL_CALL, ["tools"], {"type": "function"}), "invalid_type", "tools"),
        (_with(TOOL_CALL, ["tools", 0, "function"], {}), "invalid_type", "tools[0]"),
        (_with(FUNCTION_CALL, ["functions", 0], "get_current_weather"), "invalid_type", "functions[0]"),
        (_with(TOOL_CALL, ["parallel_tool_calls"], "yes"), "invalid_type", "parallel_tool_calls"),
        (_with(TOOL_ROUND_TRIP, ["messages", 1, "name"], 7), "invalid_type", "messages[1].name"),
        (_with(TOOL_ROUND_TRIP, ["messages", 1, "tool_calls"], []), "invalid_value", "messages[1]"),
        (_with(TOOL_ROUND_TRIP, ["messages", 0, "role"], "robot"), "unrecognized_role", "messages[0].role"),
        (
            _with(TOOL_ROUND_TRIP, ["messages", 2], {"role": "assistant"}),
            "missing_field",
            "messages[2].content",
        ),
        (_with(DPO, ["preferred_output", 0, "role"], "user"), "invalid_value", "preferred_output[0].role"),
        (_with(DPO, ["non_preferred_output"], _DELETE), "missing_field", "non_preferred_output"),
        (_with(DPO, ["input"], ["messages"]), "invalid_type", "input"),
        (_with(DPO, ["input", "messages", 0, "role"], "system"), "no_user_message", "input.messages"),
        (_with(DPO, ["input", "tools"], "all"), "invalid_type", "input.tools"),
    ],
)
def test_each_error_code_is_located(record: dict[str, Any], code: str, field: str) -> None:
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    if "input" in record:
        good = DPO
    rep = check(jsonl(good, good, record, good))
    assert codes(rep) == [(3, code)], rep.errors
    assert rep.errors[0]["record"] == 3 and rep.errors[0]["field"] == field, rep.errors[0]
