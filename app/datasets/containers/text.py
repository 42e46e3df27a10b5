"""Text containers: JSONL, a JSON array and CSV, read in chunks so memory is bounded by one record."""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from app.datasets.records import RawRecord, RecordError

CHUNK = 1 << 20


def _json_error(exc: json.JSONDecodeError) -> str:
    """The decoder's message without its own "line 1 column 56 (char 55)": the caller names the line."""
    return f"invalid JSON: {exc.msg} at column {exc.colno}"


def _loads(text: str, line: int, record: int) -> Any:
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise RecordError("invalid_json", "JSON nested too deeply", line=line, record=record) from exc
    except json.JSONDecodeError as exc:
        raise RecordError("invalid_json", _json_error(exc), line=line, record=record) from exc
    except ValueError as exc:  # int() refusing a huge number
        raise RecordError(
            "invalid_json", f"invalid JSON: {str(exc)[:200]}", line=line, record=record
        ) from exc


def read_jsonl(stream: BinaryIO, *, max_line_bytes: int) -> Iterator[RawRecord | RecordError]:
    reader: Any = stream if isinstance(stream, io.BufferedIOBase) else io.BufferedReader(stream, CHUNK)
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
    seen = [0, 0]  # newlines counted in buf[:seen[0]] (records come in order: each count starts there)

    def fill() -> bool:
        nonlocal buf, pos, final, line_no
        chunk = stream.read(CHUNK)
        line_no += buf.count("\n", 0, pos)
        buf = buf[pos:]
        pos = 0
        seen[:] = [0, 0]
        try:
            buf += utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise RecordError(
                "invalid_utf8", "invalid UTF-8", line=line_no + buf.count("\n"), record=record + 1, fatal=True
            ) from exc
        final = not chunk
        return bool(chunk)

    def line_at(i: int) -> int:
        if i < seen[0]:
            return line_no + buf.count("\n", 0, i)
        seen[1] += buf.count("\n", seen[0], i)
        seen[0] = i
        return line_no + seen[1]

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
                    line=line_at(pos),
                    record=record + 1,
                    fatal=True,
                )
            here = line_at(pos)
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
                        # where the error is, from the record's start (fill() moves `pos`)
                        off = exc.pos - pos if isinstance(exc, json.JSONDecodeError) else 0
                        if len(buf) - pos > max_line_bytes:
                            raise RecordError(
                                "line_too_long",
                                f"record is longer than {max_line_bytes} bytes",
                                line=here,
                                record=record + 1,
                                fatal=True,
                            ) from exc
                        if final or not fill():
                            if isinstance(exc, json.JSONDecodeError):  # one line: where the error is
                                err_pos = min(pos + off, len(buf))
                                col = err_pos - buf.rfind("\n", 0, err_pos)
                                msg = f"invalid JSON: {exc.msg} at column {col}"
                                raise RecordError(
                                    "invalid_json", msg, line=line_at(err_pos), record=record + 1, fatal=True
                                ) from exc
                            raise RecordError(
                                "invalid_json",
                                f"invalid JSON: {str(exc)[:200]}",
                                line=here,
                                record=record + 1,
                                fatal=True,
                            ) from exc
                        here = line_at(pos)
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
                "invalid_json", "unexpected data after the JSON array", line=line_at(pos), fatal=True
            )
    except RecordError as err:
        yield err


class _RowTooLong(Exception):
    pass


def read_csv(stream: BinaryIO, *, max_line_bytes: int) -> Iterator[RawRecord | RecordError]:
    """CSV with a header row. A row (all its physical lines, quoted newlines included) is held to
    `max_line_bytes`, not only each field: many fields just under the limit make a row too long."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="")
    csv.field_size_limit(max_line_bytes)
    row_bytes = [0]

    def lines() -> Iterator[str]:
        while True:
            line = text.readline(max_line_bytes + 1)
            if not line:
                return
            row_bytes[0] += len(line.encode("utf-8", "surrogatepass"))
            if row_bytes[0] > max_line_bytes:
                raise _RowTooLong()
            yield line

    reader = csv.reader(lines())
    record, row_line = 0, 1
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip().lower() for h in header]
        row_bytes[0] = 0
        row_line = reader.line_num + 1
        for row in reader:
            row_bytes[0] = 0
            row_line = reader.line_num + 1
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
    except _RowTooLong:
        yield RecordError(
            "line_too_long",
            f"CSV row is longer than {max_line_bytes} bytes",
            line=row_line,
            record=record + 1,
            fatal=True,
        )
    except UnicodeDecodeError:
        yield RecordError(
            "invalid_utf8", "invalid UTF-8", line=reader.line_num + 1, record=record + 1, fatal=True
        )
    except csv.Error as exc:
        code = "line_too_long" if "field larger" in str(exc) else "invalid_csv"
        yield RecordError(code, f"CSV error: {exc}", line=reader.line_num, record=record + 1, fatal=True)
    finally:
        text.detach()
