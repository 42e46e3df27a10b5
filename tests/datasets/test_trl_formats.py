"""TRL's dataset types in standard and conversational form (and Together's `text`), written from the TRL
dataset-formats page; what is screened for each, and their error codes with line numbers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.datasets.helpers import check, codes, jsonl, valid

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

SKY_Q = [{"role": "user", "content": "What color is the sky?"}]
SKY_A = [{"role": "assistant", "content": "It is blue."}]
SKY_BAD = [{"role": "assistant", "content": "It is green."}]


def test_language_modelling_text_is_plain_and_all_target() -> None:
    (ex,) = valid(jsonl({"text": "The sky is blue."}), "text")
    assert ex.plain and ex.text == "The sky is blue." and ex.targets == [0]


def test_conversational_language_modelling_is_openai_chat() -> None:
    (ex,) = valid(jsonl({"messages": [*SKY_Q, *SKY_A]}), "openai-chat")
    assert ex.text == "What color is the sky?\nIt is blue."


@pytest.mark.parametrize("prompt", ["The sky is", SKY_Q])
def test_prompt_only_screens_the_prompt(prompt: Any) -> None:
    (ex,) = valid(jsonl({"prompt": prompt}), "prompt-only")
    assert ex.targets == [] and ex.text in ("The sky is", "What color is the sky?")


def test_prompt_completion_standard_and_conversational() -> None:
    (std,) = valid(jsonl({"prompt": "The sky is", "completion": " blue."}), "prompt-completion")
    assert std.messages == [
        {"role": "user", "content": "The sky is"},
        {"role": "assistant", "content": " blue."},
    ]
    conv_prompt = [
        {"role": "system", "content": "Be brief."},
        *SKY_Q,
        {"role": "assistant", "content": "Hm?"},
        {"role": "user", "content": "The sky?"},
    ]
    (conv,) = valid(jsonl({"prompt": conv_prompt, "completion": SKY_A}), "prompt-completion")
    assert conv.targets == [4] and conv.context_turns == (2,)  # the prompt's assistant turn is context
    assert check(jsonl({"prompt": conv_prompt, "completion": SKY_A})).stats["excluded_turns"] == 1


@pytest.mark.parametrize(
    ("record", "screened", "other"),
    [
        (
            {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
            "The sky is\n blue.",
            " green.",
        ),
        (
            {"chosen": "The sky is blue.", "rejected": "The sky is green."},
            "The sky is blue.",
            "The sky is green.",
        ),
        (
            {"prompt": SKY_Q, "chosen": SKY_A, "rejected": SKY_BAD},
            "What color is the sky?\nIt is blue.",
            "It is green.",
        ),
        (
            {"chosen": [*SKY_Q, *SKY_A], "rejected": [*SKY_Q, *SKY_BAD]},
            "What color is the sky?\nIt is blue.",
            "It is green.",
        ),
    ],
)
def test_preference_screens_chosen_and_counts_rejected(
    record: dict[str, Any], screened: str, other: str
) -> None:
    (ex,) = valid(jsonl(record), "preference")
    assert ex.text == screened and [m["content"] for m in ex.other] == [other]
    stats = check(jsonl(record)).stats
    assert stats["preference"]["other_side"] == {
        "examples": 1,
        "characters": len(other),
        "approx_tokens": len(other) // 4,
    }


@pytest.mark.parametrize("conversational", [False, True])
def test_unpaired_preference_screens_desirable_completions_only(conversational: bool) -> None:
    prompt: Any = SKY_Q if conversational else "The sky is"
    good: Any = SKY_A if conversational else " blue."
    bad: Any = SKY_BAD if conversational else " green."
    data = jsonl(
        {"prompt": prompt, "completion": good, "label": True},
        {"prompt": prompt, "completion": bad, "label": False},
    )
    yes, no = valid(data, "unpaired-preference")
    assert yes.targets == [1] and "blue" in yes.text
    assert no.targets == [] and "green" not in no.text and "green" in no.other[0]["content"]
    assert check(data).stats["preference"]["other_side"]["examples"] == 1


GOOD = {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}


@pytest.mark.parametrize(
    ("first", "record", "code", "field"),
    [
        ({"text": "a"}, {"text": ""}, "empty_content", "text"),
        ({"text": "a"}, {"text": ["a"]}, "invalid_type", "text"),
        ({"prompt": "a"}, {"prompt": ""}, "empty_content", "prompt"),
        ({"prompt": "a"}, {"prompt": [{"role": "user"}]}, "missing_field", "prompt[0].content"),
        (GOOD, {"prompt": "a", "chosen": "", "rejected": "b"}, "empty_content", "chosen"),
        (GOOD, {"prompt": 3, "chosen": "a", "rejected": "b"}, "invalid_type", "prompt"),
        (GOOD, {"prompt": SKY_Q, "chosen": SKY_Q, "rejected": SKY_BAD}, "no_assistant_message", "chosen"),
        (GOOD, {"prompt": SKY_Q, "chosen": SKY_A, "rejected": "nope"}, "invalid_type", "rejected"),
        (
            {"prompt": "a", "completion": "b", "label": True},
            {"prompt": "a", "completion": "b", "label": "yes"},
            "invalid_type",
            "label",
        ),
        (
            {"prompt": "a", "completion": "b", "label": True},
            {"prompt": "a", "completion": "", "label": False},
            "empty_content",
            "completion[0].content",
        ),
        (
            {"prompt": "a", "completion": "b"},
            {"prompt": SKY_Q, "completion": SKY_Q},
            "no_assistant_message",
            "completion",
        ),
        (
            {"prompt": "a", "completion": "b"},
            {"prompt": SKY_Q, "completion": [{**SKY_A[0], "weight": 0}]},
            "no_trained_assistant_message",
            "completion",
        ),
        (
            {"prompt": "a", "completion": "b"},
            {"prompt": SKY_Q, "completion": [{"role": "bot", "content": "x"}]},
            "unrecognized_role",
            "completion[0].role",
        ),
    ],
)
def test_each_error_code_is_located(
    first: dict[str, Any], record: dict[str, Any], code: str, field: str
) -> None:
    rep = check(jsonl(first, first, record))
    assert codes(rep) == [(3, code)], rep.errors
    assert rep.errors[0]["field"] == field, rep.errors[0]


def test_an_unrecognised_shape_lists_its_fields_and_what_each_format_needs() -> None:
    rep = check(jsonl({"query": "q", "reply": "r"}))
    assert codes(rep) == [(1, "unsupported_format")]
    msg = rep.errors[0]["message"]
    assert "['query', 'reply']" in msg and "openai-chat: `messages`" in msg and "preference: `prompt`" in msg
    rep = check(b"query,reply\nq,r\n", filename="x.csv")
    assert "['query', 'reply']" in rep.errors[0]["message"] and rep.errors[0]["line"] == 2
