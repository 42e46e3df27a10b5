"""ShareGPT, Alpaca, Dolly and plain prompt-completion: each format's own error codes, located (the
OpenAI and TRL formats have theirs in their own test files)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.datasets.helpers import check, codes, jsonl

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

SHAREGPT = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
ALPACA = {"instruction": "Add", "input": "2 and 2", "output": "4"}
DOLLY = {"instruction": "Add", "context": "", "response": "4", "category": "math"}
PC = {"question": "2+2?", "answer": "4"}


@pytest.mark.parametrize(
    ("first", "record", "code", "field"),
    [
        (
            SHAREGPT,
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt"}]},
            "missing_field",
            "conversations[1].value",
        ),
        (
            SHAREGPT,
            {"conversations": [{"from": "alien", "value": "Hi"}]},
            "unrecognized_role",
            "conversations[0].from",
        ),
        (
            SHAREGPT,
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": " "}]},
            "empty_content",
            "conversations[1].value",
        ),
        (
            SHAREGPT,
            {"conversations": [{"from": "human", "value": "Hi"}]},
            "no_assistant_message",
            "conversations",
        ),
        (SHAREGPT, {"conversations": {}}, "invalid_type", "conversations"),
        (ALPACA, {"instruction": "Add", "input": "1"}, "missing_field", "output"),
        (ALPACA, {"instruction": "Add", "output": 4}, "invalid_type", "output"),
        (ALPACA, {"instruction": " ", "output": "4"}, "empty_content", "instruction"),
        (DOLLY, {"instruction": "Add", "response": ""}, "empty_content", "response"),
        (DOLLY, {"instruction": "Add", "context": ["x"], "response": "4"}, "invalid_type", "context"),
        (PC, {"question": "q", "answer": "a\u0000"}, "nul_character", "messages[1].content"),
        (PC, {"question": None, "answer": "a"}, "missing_field", "question"),
    ],
)
def test_each_error_code_is_located(
    first: dict[str, Any], record: dict[str, Any], code: str, field: str
) -> None:
    rep = check(jsonl(first, record))
    assert codes(rep) == [(2, code)], rep.errors
    assert rep.errors[0]["record"] == 2 and rep.errors[0]["field"] == field, rep.errors[0]
