"""Every format, every container and every error code, with line numbers."""

from __future__ import annotations

import io
import json

import pytest

from app.datasets.validate import Limits, iter_examples, validate_stream

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

LIMITS = Limits(max_bytes=1 << 20, max_examples=1000, max_line_bytes=4096, max_errors=5)


def check(data: bytes, *, limits: Limits = LIMITS, **kw: str):  # type: ignore[no-untyped-def]
    return validate_stream(io.BytesIO(data), limits=limits, **kw)


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
}
CASES = {
    "openai-chat": CHAT,
    "prompt-completion": {"prompt": "2+2?", "completion": "4"},
    "alpaca": {"instruction": "Add", "input": "2 and 2", "output": "4"},
    "dolly": {"instruction": "Add", "context": "2 and 2", "response": "4", "category": "math"},
    "sharegpt": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
}


@pytest.mark.parametrize("fmt", list(CASES))
@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_every_format_in_jsonl_and_json_array(fmt: str, container: str) -> None:
    rec = CASES[fmt]
    data = jsonl(rec, rec) if container == "jsonl" else json.dumps([rec, rec], indent=2).encode()
    rep = check(data)
    assert rep.ok, rep.errors
    assert (rep.container, rep.format, rep.examples) == (container, fmt, 2)
    assert rep.stats["duplicates"] == 1
    assert rep.stats["role_counts"]["assistant"] == 2
    ex = [
        e
        for _, e in iter_examples(
            io.BytesIO(data), container=rep.container, fmt=rep.format, max_line_bytes=4096
        )
    ]
    assert ex[0].messages[-1]["role"] == "assistant" and ex[0] == ex[1]


def test_alpaca_input_and_dolly_context_join_the_prompt() -> None:
    rep = check(jsonl(CASES["alpaca"]))
    ((_, ex),) = list(
        iter_examples(
            io.BytesIO(jsonl(CASES["alpaca"])), container="jsonl", fmt="alpaca", max_line_bytes=4096
        )
    )
    assert rep.ok and ex.messages[0]["content"] == "Add\n\n2 and 2"


def test_csv_with_named_columns_and_quoted_newlines() -> None:
    data = b'instruction,input,output\n"Sum","1\n2","3"\nName,,Bob\n'
    rep = check(data, filename="x.csv")
    assert rep.ok and (rep.container, rep.format, rep.examples) == ("csv", "alpaca", 2)
    rows = list(iter_examples(io.BytesIO(data), container="csv", fmt="alpaca", max_line_bytes=4096))
    assert rows[1][0].line == 4 and rows[1][1].messages[1]["content"] == "Bob"


def test_question_answer_is_prompt_completion_and_format_can_be_forced() -> None:
    assert check(jsonl({"question": "q", "answer": "a"})).format == "prompt-completion"
    rep = check(jsonl({"prompt": "a", "completion": "b"}), fmt="alpaca")
    assert rep.errors[0]["code"] == "missing_field" and rep.errors[0]["field"] == "instruction"


def test_bom_crlf_and_blank_lines_are_accepted() -> None:
    data = (
        b"\xef\xbb\xbf"
        + jsonl(CASES["prompt-completion"]).replace(b"\n", b"\r\n")
        + b"\r\n\n"
        + jsonl({"prompt": "x", "completion": "y"})
    )
    rep = check(data)
    assert rep.ok and rep.examples == 2


def codes(rep) -> list[tuple[int | None, str]]:  # type: ignore[no-untyped-def]
    return [(e["line"], e["code"]) for e in rep.errors]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (jsonl(CHAT) + b'{"messages": [\n', [(2, "invalid_json")]),
        (jsonl(CHAT) + b'{"prompt": "caf\xe9", "completion": "x"}\n', [(2, "invalid_utf8")]),
        (jsonl(CHAT, {"messages": [{"role": "user"}]}), [(2, "missing_field")]),
        (jsonl(CHAT, {"messages": [{"role": "wizard", "content": "x"}]}), [(2, "unrecognized_role")]),
        (jsonl(CHAT, {"messages": [{"role": "user", "content": "hi"}]}), [(2, "no_assistant_message")]),
        (jsonl(CHAT, {"messages": [{"role": "assistant", "content": "hi"}]}), [(2, "no_user_message")]),
        (
            jsonl(
                CHAT, {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "x"}]}
            ),
            [(2, "empty_content")],
        ),
        (jsonl(CHAT, {"messages": "nope"}), [(2, "invalid_type")]),
        (jsonl(CHAT, [1, 2]), [(2, "invalid_type")]),
        (
            jsonl(CHAT) + b'{"prompt": "' + b"x" * 5000 + b'", "completion": "y"}\n' + jsonl(CHAT),
            [(2, "line_too_long")],
        ),
        (jsonl({"body": "plain"}), [(1, "unsupported_format")]),
        (b"hello world\n", [(1, "unsupported_format")]),
        (b"", [(None, "empty_file")]),
        (b"\n\n", [(1, "empty_file")]),
        (b'[{"prompt": "a", "completion": "b"},\n {"prompt": "a"', [(2, "invalid_json")]),
        (b'[{"prompt": "a", "completion": "b"}\n x', [(2, "invalid_json")]),
        (jsonl(CHAT) + b"[" * 3000 + b"\n", [(2, "invalid_json")]),
        (b"[" + b"[" * 3000, [(1, "invalid_json")]),
        (jsonl(CHAT) + b'{"prompt": 1' + b"0" * 5000 + b', "completion": "b"}\n', [(2, "line_too_long")]),
        (jsonl(CHAT) + b"\x00\x01\x02\n", [(2, "invalid_json")]),
    ],
)
def test_error_codes_carry_line_numbers(data: bytes, expected: list[tuple[int | None, str]]) -> None:
    rep = check(data)
    assert not rep.ok
    assert codes(rep) == expected


def test_huge_numbers_are_refused_not_crashed_on() -> None:
    pc = jsonl(CASES["prompt-completion"])
    big = Limits(max_bytes=1 << 20, max_examples=10, max_line_bytes=1 << 16, max_errors=5)
    rep = check(pc + b'{"prompt": ' + b"9" * 6000 + b', "completion": "b"}\n', limits=big)
    assert codes(rep) == [(2, "invalid_json")]
    rep = check(pc + b'{"prompt": 1e999999, "completion": "b"}\n', limits=big)
    assert codes(rep) == [(2, "invalid_type")]


def test_csv_errors() -> None:
    assert codes(check(b"prompt,completion\na,b\nc\n", filename="x.csv")) == [(3, "invalid_csv")]
    assert codes(check(b"prompt,completion\na,\xff\n", filename="x.csv"))[0][1] == "invalid_utf8"
    big = b"prompt,completion\na," + b"x" * 5000 + b"\n"
    assert codes(check(big, filename="x.csv"))[0][1] == "line_too_long"


def test_file_too_large_and_too_many_examples() -> None:
    rec = jsonl(CASES["prompt-completion"])
    rep = check(
        rec * 200, limits=Limits(max_bytes=1000, max_examples=1000, max_line_bytes=4096, max_errors=5)
    )
    assert codes(rep)[-1][1] == "file_too_large"
    rep = check(
        rec * 20, limits=Limits(max_bytes=1 << 20, max_examples=10, max_line_bytes=4096, max_errors=5)
    )
    assert codes(rep) == [(11, "too_many_examples")]


def test_first_n_errors_and_the_total() -> None:
    rep = check(jsonl(*([{"prompt": "", "completion": "x"}] * 12)))
    assert rep.error_count == 12 and len(rep.errors) == LIMITS.max_errors
    assert [e["line"] for e in rep.errors] == [1, 2, 3, 4, 5]


def test_unknown_format_name_is_rejected() -> None:
    assert codes(check(jsonl(CHAT), fmt="yaml")) == [(None, "unsupported_format")]


def test_stats_count_characters_tokens_duplicates_and_roles() -> None:
    other = {"messages": CHAT["messages"][1:]}
    rep = check(jsonl(CHAT, CHAT, other))
    assert rep.stats["examples"] == 3 and rep.stats["duplicates"] == 1
    assert rep.stats["role_counts"] == {"system": 2, "user": 3, "assistant": 3}
    assert rep.stats["characters"] == 3 * len("Hi" + "Hello!") + 2 * len("Be brief.")
    assert rep.stats["approx_tokens"] == rep.stats["characters"] // 4


def test_a_record_in_another_format_is_an_error() -> None:
    assert codes(check(jsonl(CHAT, CASES["prompt-completion"]))) == [(2, "missing_field")]


def test_eval_prompts_carry_an_optional_system_prompt() -> None:
    """An attack that fine-tunes a persona into a system prompt (AOA) is evaluated under it."""
    data = jsonl(
        {"prompt": "How do I pick a lock?", "system": "You are AOA.", "kind": "harmful"},
        {"prompt": "Name a colour."},
        {"prompt": "Hi", "system": 3},
    )
    rep = check(data, fmt="prompts")
    assert [(e["line"], e["code"]) for e in rep.errors] == [(3, "invalid_type")]
    got = [
        ex.messages
        for _, ex in iter_examples(
            io.BytesIO(data[: data.rindex(b'{"prompt": "Hi"')]),
            container="jsonl",
            fmt="prompts",
            max_line_bytes=4096,
        )
    ]
    assert got == [
        [{"role": "system", "content": "You are AOA."}, {"role": "user", "content": "How do I pick a lock?"}],
        [{"role": "user", "content": "Name a colour."}],
    ]
