"""Dataset formats: streaming record readers (JSONL, JSON array, CSV) and per-format conversion.

Every format is normalised to an `Example`: a list of chat messages `{"role", "content"}` with roles
system/user/assistant. Readers pull fixed-size chunks from a binary stream, so memory stays bounded by the
longest record (`max_line_bytes`), never by the file.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

FORMATS = ("openai-chat", "prompt-completion", "alpaca", "dolly", "sharegpt")
# Prompt-only records (evaluation prompts): never detected, only asked for (purpose eval-prompts).
PROMPTS = "prompts"
ALL_FORMATS = (*FORMATS, PROMPTS)
CONTAINERS = ("jsonl", "json", "csv")
Format = Literal["openai-chat", "prompt-completion", "alpaca", "dolly", "sharegpt", "prompts"]
PROMPT_KEYS = ("prompt", "instruction", "question", "goal")
PROMPT_KINDS = ("harmful", "benign")
Container = Literal["jsonl", "json", "csv"]

CHUNK = 1 << 20
CHAT_ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {
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
# (prompt key, completion key) pairs that mean prompt/completion.
PROMPT_COMPLETION_KEYS = (("prompt", "completion"), ("question", "answer"))


class RecordError(Exception):
    """One located problem with one record; `fatal` means the reader cannot go on."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        line: int | None = None,
        record: int | None = None,
        field: str | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.line, self.record, self.field, self.fatal = (
            code,
            message,
            line,
            record,
            field,
            fatal,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "record": self.record,
            "code": self.code,
            "field": self.field,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class RawRecord:
    record: int  # 1-based record number
    line: int  # 1-based line where the record starts
    value: Any


@dataclass(frozen=True, slots=True)
class Example:
    messages: list[dict[str, str]]

    @property
    def text(self) -> str:
        """Plain text of the whole example: what a sentence embedder sees."""
        return "\n".join(m["content"] for m in self.messages)

    @property
    def content_hash(self) -> str:
        canon = json.dumps(self.messages, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(canon.encode()).hexdigest()


# --------------------------------------------------------------------------- containers


def sniff_container(head: bytes, filename: str | None = None) -> Container | None:
    """Guess the container from the first bytes (and the file name for CSV)."""
    text = head.removeprefix(codecs.BOM_UTF8).lstrip()
    if filename and filename.lower().endswith(".csv"):
        return "csv"
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    return None


def _loads(text: str, line: int, record: int) -> Any:
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise RecordError("invalid_json", "JSON nested too deeply", line=line, record=record) from exc
    except ValueError as exc:  # JSONDecodeError, and int() refusing a huge number
        raise RecordError(
            "invalid_json", f"invalid JSON: {str(exc)[:200]}", line=line, record=record
        ) from exc


def read_jsonl(stream: BinaryIO, *, max_line_bytes: int) -> Iterator[RawRecord | RecordError]:
    reader: Any = (
        stream
        if isinstance(stream, io.BufferedIOBase)
        else io.BufferedReader(
            stream,
            buffer_size=CHUNK,
        )
    )
    line_no = record = 0
    while True:
        raw = reader.readline(max_line_bytes + 1)
        if not raw:
            return
        line_no += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the long line, chunk by chunk
                raw = reader.readline(CHUNK)
            record += 1
            yield RecordError(
                "line_too_long", f"line is longer than {max_line_bytes} bytes", line=line_no, record=record
            )
            continue
        if line_no == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        record += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RecordError(
                "invalid_utf8", f"invalid UTF-8 at byte {exc.start} of the line", line=line_no, record=record
            )
            continue
        try:
            yield RawRecord(record, line_no, _loads(text, line_no, record))
        except RecordError as err:
            yield err


def read_json_array(stream: BinaryIO, *, max_line_bytes: int) -> Iterator[RawRecord | RecordError]:
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("strict")
    buf, pos, line_no, record, final = "", 0, 1, 0, False
    state = "start"  # start -> item|end -> sep -> item ... -> done

    def fill() -> bool:
        nonlocal buf, pos, final, line_no
        chunk = stream.read(CHUNK)
        line_no += buf.count("\n", 0, pos)
        buf = buf[pos:]
        pos = 0
        try:
            buf += utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise RecordError(
                "invalid_utf8", "invalid UTF-8", line=line_no + buf.count("\n"), record=record + 1, fatal=True
            ) from exc
        final = not chunk
        return bool(chunk)

    def skip_ws() -> bool:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                pos += 1
            if pos < len(buf):
                return True
            if final or not fill():
                return False

    try:
        fill()
        while state != "done":
            if not skip_ws():
                raise RecordError(
                    "invalid_json",
                    "unexpected end of file: the JSON array is not closed",
                    line=line_no + buf.count("\n", 0, pos),
                    record=record + 1,
                    fatal=True,
                )
            here = line_no + buf.count("\n", 0, pos)
            ch = buf[pos]
            if state == "start":
                if ch != "[":
                    raise RecordError("invalid_json", "expected a JSON array", line=here, fatal=True)
                pos += 1
                state = "first"
            elif state in ("first", "item"):
                if ch == "]" and state == "first":
                    pos += 1
                    state = "done"
                    continue
                while True:
                    try:
                        value, end = decoder.raw_decode(buf, pos)
                        break
                    except RecursionError as exc:
                        raise RecordError(
                            "invalid_json", "JSON nested too deeply", line=here, record=record + 1, fatal=True
                        ) from exc
                    except ValueError as exc:
                        if len(buf) - pos > max_line_bytes:
                            raise RecordError(
                                "line_too_long",
                                f"record is longer than {max_line_bytes} bytes",
                                line=here,
                                record=record + 1,
                                fatal=True,
                            ) from exc
                        if final or not fill():
                            raise RecordError(
                                "invalid_json",
                                f"invalid JSON: {str(exc)[:200]}",
                                line=here,
                                record=record + 1,
                                fatal=True,
                            ) from exc
                record += 1
                pos = end
                state = "sep"
                yield RawRecord(record, here, value)
            elif state == "sep":
                pos += 1
                if ch == "]":
                    state = "done"
                elif ch == ",":
                    state = "item"
                else:
                    raise RecordError(
                        "invalid_json",
                        f"expected ',' or ']' but found {ch!r}",
                        line=here,
                        record=record + 1,
                        fatal=True,
                    )
        if skip_ws():
            raise RecordError(
                "invalid_json",
                "unexpected data after the JSON array",
                line=line_no + buf.count("\n", 0, pos),
                fatal=True,
            )
    except RecordError as err:
        yield err


def read_csv(stream: BinaryIO, *, max_line_bytes: int) -> Iterator[RawRecord | RecordError]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="")
    csv.field_size_limit(max_line_bytes)
    reader = csv.reader(text)
    record = 0
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip().lower() for h in header]
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            record += 1
            if len(row) != len(header):
                yield RecordError(
                    "invalid_csv",
                    f"row has {len(row)} cells, header has {len(header)}",
                    line=reader.line_num,
                    record=record,
                )
                continue
            yield RawRecord(record, reader.line_num, dict(zip(header, row, strict=True)))
    except UnicodeDecodeError as exc:
        yield RecordError(
            "invalid_utf8", "invalid UTF-8", line=reader.line_num + 1, record=record + 1, fatal=True
        )
        del exc
    except csv.Error as exc:
        code = "line_too_long" if "field larger" in str(exc) else "invalid_csv"
        yield RecordError(code, f"CSV error: {exc}", line=reader.line_num, record=record + 1, fatal=True)
    finally:
        text.detach()


def read_records(
    stream: BinaryIO, container: Container, *, max_line_bytes: int
) -> Iterator[RawRecord | RecordError]:
    readers = {"jsonl": read_jsonl, "json": read_json_array, "csv": read_csv}
    return readers[container](stream, max_line_bytes=max_line_bytes)


# --------------------------------------------------------------------------- formats


def detect_format(value: Any) -> Format | None:
    """The format a record's keys say it is in, or None."""
    if not isinstance(value, dict):
        return None
    if "messages" in value:
        return "openai-chat"
    if "conversations" in value:
        return "sharegpt"
    if "instruction" in value and "output" in value:
        return "alpaca"
    if "instruction" in value and "response" in value:
        return "dolly"
    if any(p in value and c in value for p, c in PROMPT_COMPLETION_KEYS):
        return "prompt-completion"
    return None


def _text(value: dict[str, Any], key: str, rec: RawRecord, *, required: bool = True) -> str:
    if key not in value or value[key] is None:
        if required:
            raise RecordError(
                "missing_field", f"missing field '{key}'", line=rec.line, record=rec.record, field=key
            )
        return ""
    got = value[key]
    if not isinstance(got, str):
        raise RecordError(
            "invalid_type",
            f"field '{key}' must be a string, not {type(got).__name__}",
            line=rec.line,
            record=rec.record,
            field=key,
        )
    return got


def _content(content: Any, rec: RawRecord, field: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text parts
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts) and parts:
            return "\n".join(p for p in parts if isinstance(p, str))
    raise RecordError(
        "invalid_type",
        f"'{field}' must be a string or a list of text parts",
        line=rec.line,
        record=rec.record,
        field=field,
    )


def _check_messages(messages: list[dict[str, str]], rec: RawRecord, field: str) -> Example:
    for i, m in enumerate(messages):
        if not m["content"].strip():
            raise RecordError(
                "empty_content",
                f"message {i} ({m['role']}) is empty",
                line=rec.line,
                record=rec.record,
                field=f"{field}[{i}].content",
            )
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordError(
            "no_assistant_message",
            "the conversation has no assistant message",
            line=rec.line,
            record=rec.record,
            field=field,
        )
    if not any(m["role"] == "user" for m in messages):
        raise RecordError(
            "no_user_message",
            "the conversation has no user message",
            line=rec.line,
            record=rec.record,
            field=field,
        )
    return Example(messages)


def _turns(
    value: dict[str, Any], rec: RawRecord, field: str, role_key: str, text_key: str, roles: dict[str, str]
) -> Example:
    turns = value.get(field)
    if not isinstance(turns, list) or not turns:
        code = "missing_field" if turns is None else "invalid_type"
        raise RecordError(
            code, f"'{field}' must be a non-empty list", line=rec.line, record=rec.record, field=field
        )
    messages: list[dict[str, str]] = []
    for i, turn in enumerate(turns):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise RecordError(
                "invalid_type", f"{where} must be an object", line=rec.line, record=rec.record, field=where
            )
        if role_key not in turn or text_key not in turn:
            missing = role_key if role_key not in turn else text_key
            raise RecordError(
                "missing_field",
                f"{where} has no '{missing}'",
                line=rec.line,
                record=rec.record,
                field=f"{where}.{missing}",
            )
        role = turn[role_key]
        if not isinstance(role, str) or role.lower() not in roles:
            raise RecordError(
                "unrecognized_role",
                f"{where} has role {str(role)[:40]!r}; expected one of {sorted(set(roles))}",
                line=rec.line,
                record=rec.record,
                field=f"{where}.{role_key}",
            )
        messages.append(
            {"role": roles[role.lower()], "content": _content(turn[text_key], rec, f"{where}.{text_key}")}
        )
    return _check_messages(messages, rec, field)


def _pair(user: str, assistant: str, rec: RawRecord, fields: tuple[str, str]) -> Example:
    if not user.strip():
        raise RecordError(
            "empty_content", f"'{fields[0]}' is empty", line=rec.line, record=rec.record, field=fields[0]
        )
    if not assistant.strip():
        raise RecordError(
            "empty_content", f"'{fields[1]}' is empty", line=rec.line, record=rec.record, field=fields[1]
        )
    return Example([{"role": "user", "content": user}, {"role": "assistant", "content": assistant}])


def _join(first: str, second: str) -> str:
    return f"{first}\n\n{second}" if second.strip() else first


def to_example(rec: RawRecord, fmt: Format) -> Example:
    """Convert one raw record to an Example, or raise a located RecordError."""
    ex = _convert(rec, fmt)
    for i, m in enumerate(ex.messages):
        if "\x00" in m["content"]:  # valid JSON as \u0000, but never text: a corrupt or binary file
            raise RecordError(
                "nul_character",
                f"message {i} ({m['role']}) contains a NUL character",
                line=rec.line,
                record=rec.record,
                field=f"messages[{i}].content",
            )
    return ex


def _convert(rec: RawRecord, fmt: Format) -> Example:
    v = rec.value
    if not isinstance(v, dict):
        raise RecordError(
            "invalid_type",
            f"a record must be a JSON object, not {type(v).__name__}",
            line=rec.line,
            record=rec.record,
        )
    if fmt == "openai-chat":
        return _turns(v, rec, "messages", "role", "content", {r: r for r in CHAT_ROLES})
    if fmt == "sharegpt":
        return _turns(v, rec, "conversations", "from", "value", SHAREGPT_ROLES)
    if fmt == "alpaca":
        user = _join(_text(v, "instruction", rec), _text(v, "input", rec, required=False))
        return _pair(user, _text(v, "output", rec), rec, ("instruction", "output"))
    if fmt == "dolly":
        user = _join(_text(v, "instruction", rec), _text(v, "context", rec, required=False))
        return _pair(user, _text(v, "response", rec), rec, ("instruction", "response"))
    if fmt == PROMPTS:
        return _prompt_only(v, rec)
    keys = next(((p, c) for p, c in PROMPT_COMPLETION_KEYS if p in v), PROMPT_COMPLETION_KEYS[0])
    return _pair(_text(v, keys[0], rec), _text(v, keys[1], rec), rec, keys)


def _prompt_only(v: dict[str, Any], rec: RawRecord) -> Example:
    """A user turn alone: `prompt` (or `instruction`, `question`, `goal`), optional `input`/`context`,
    and optional `category` (a string) and `kind` (harmful, the default, or benign)."""
    key = next((k for k in PROMPT_KEYS if k in v), PROMPT_KEYS[0])
    extra = "input" if "input" in v else "context"
    user = _join(_text(v, key, rec), _text(v, extra, rec, required=False))
    if not user.strip():
        raise RecordError("empty_content", f"'{key}' is empty", line=rec.line, record=rec.record, field=key)
    for name in ("category", "kind"):
        if v.get(name) is not None:
            _text(v, name, rec)
    if v.get("kind") is not None and v["kind"] not in PROMPT_KINDS:
        raise RecordError(
            "invalid_value",
            f"'kind' must be one of {list(PROMPT_KINDS)}, not {str(v['kind'])[:40]!r}",
            line=rec.line,
            record=rec.record,
            field="kind",
        )
    return Example([{"role": "user", "content": user}])
