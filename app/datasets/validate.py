"""Streaming validation: one pass over the bytes, record by record, with located errors and stats."""

from __future__ import annotations

import hashlib
import io
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from app.datasets.formats import (
    ALL_FORMATS,
    CONTAINERS,
    FORMATS,
    Container,
    Example,
    Format,
    RawRecord,
    RecordError,
    detect_format,
    read_records,
    sniff_container,
    to_example,
)

APPROX_CHARS_PER_TOKEN = 4  # rough English BPE average; stats only, never used for limits


@dataclass
class Limits:
    max_bytes: int
    max_examples: int
    max_line_bytes: int
    max_errors: int


@dataclass
class ValidationReport:
    container: Container | None = None
    format: Format | None = None
    examples: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and self.examples > 0


class TeeReader(io.RawIOBase):
    """Reads from `src`, copies every byte to `sink`, hashes it and stops past `max_bytes`."""

    def __init__(self, src: BinaryIO, sink: BinaryIO | None, max_bytes: int) -> None:
        self.src, self.sink, self.max_bytes = src, sink, max_bytes
        self.sha = hashlib.sha256()
        self.count = 0
        self.too_large = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.src.read(len(b))
        if not data:
            return 0
        self.count += len(data)
        if self.count > self.max_bytes:
            self.too_large = True
            raise RecordError("file_too_large", f"the file is larger than {self.max_bytes} bytes", fatal=True)
        self.sha.update(data)
        if self.sink is not None:
            self.sink.write(data)
        n = len(data)
        b[:n] = data
        return n

    def drain(self) -> None:
        """Copy whatever the parser did not read (trailing bytes after a fatal error are still stored)."""
        while self.read(1 << 20):
            pass


def _parse_choice(value: str | None, allowed: tuple[str, ...], what: str) -> Any:
    if value is None or value == "auto":
        return None
    if value not in allowed:
        raise RecordError(
            "unsupported_format", f"unknown {what} {value!r}; expected one of {list(allowed)}", fatal=True
        )
    return value


def validate_stream(
    src: BinaryIO,
    *,
    limits: Limits,
    fmt: str | None = None,
    container: str | None = None,
    filename: str | None = None,
    sink: BinaryIO | None = None,
) -> ValidationReport:
    """Validate a dataset stream, copying it to `sink` as it goes. Memory is bounded by one record."""
    report = ValidationReport()
    tee = TeeReader(src, sink, limits.max_bytes)
    buffered = io.BufferedReader(tee, buffer_size=1 << 20)
    hashes = array("Q")
    roles: Counter[str] = Counter()
    chars = 0

    def add(err: RecordError) -> None:
        report.error_count += 1
        if len(report.errors) < limits.max_errors:
            report.errors.append(err.as_dict())

    try:
        want_format = _parse_choice(fmt, ALL_FORMATS, "format")
        report.container = _parse_choice(container, CONTAINERS, "container") or sniff_container(
            buffered.peek(4096)[:4096], filename
        )
        if report.container is None:
            if not buffered.peek(4096)[:4096].removeprefix(b"\xef\xbb\xbf").strip():
                raise RecordError(
                    "empty_file", "the file is empty", line=1 if buffered.peek(1) else None, fatal=True
                )
            raise RecordError(
                "unsupported_format",
                "cannot tell the container: expected JSONL, a JSON array or CSV (name the file .csv)",
                line=1,
                fatal=True,
            )
        report.format = want_format
        for item in read_records(buffered, report.container, max_line_bytes=limits.max_line_bytes):
            if isinstance(item, RecordError):
                add(item)
                if item.fatal:
                    break
                continue
            if report.examples >= limits.max_examples:
                add(
                    RecordError(
                        "too_many_examples",
                        f"more than {limits.max_examples} examples",
                        line=item.line,
                        record=item.record,
                        fatal=True,
                    )
                )
                break
            if report.format is None:
                report.format = detect_format(item.value)
                if report.format is None:
                    add(
                        RecordError(
                            "unsupported_format",
                            "cannot tell the format from this record's fields; "
                            f"expected one of {list(FORMATS)}",
                            line=item.line,
                            record=item.record,
                            fatal=True,
                        )
                    )
                    break
            try:
                ex = to_example(item, report.format)
            except RecordError as err:
                add(err)
                continue
            report.examples += 1
            hashes.append(int(ex.content_hash[:16], 16))
            for m in ex.messages:
                roles[m["role"]] += 1
                chars += len(m["content"])
        tee.drain()
    except RecordError as err:
        add(err)
        if not tee.too_large:
            try:
                tee.drain()
            except RecordError as too_large:
                add(too_large)
    if report.examples == 0 and report.error_count == 0:
        add(RecordError("empty_file", "the file holds no examples", line=1, fatal=True))
    unique = int(np.unique(np.frombuffer(hashes, dtype=np.uint64)).size) if hashes else 0
    report.stats = {
        "examples": report.examples,
        "characters": chars,
        "approx_tokens": chars // APPROX_CHARS_PER_TOKEN,
        "duplicates": report.examples - unique,
        "role_counts": dict(roles),
        "mean_characters": round(chars / report.examples, 1) if report.examples else 0.0,
    }
    report.sha256 = tee.sha.hexdigest()
    report.bytes = tee.count
    return report


def iter_examples(
    stream: BinaryIO, *, container: Container, fmt: Format, max_line_bytes: int
) -> Iterator[tuple[RawRecord, Example]]:
    """Examples of an already validated dataset, with their raw records (for subsets in the source form)."""
    for item in read_records(stream, container, max_line_bytes=max_line_bytes):
        if isinstance(item, RecordError):
            raise item
        yield item, to_example(item, fmt)
