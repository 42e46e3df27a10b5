"""Streaming validation: one pass over the bytes, record by record, with located errors and stats."""

from __future__ import annotations

import hashlib
import io
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from app.datasets.containers import (
    CONTAINERS,
    DEFAULT_MAX_ROW_GROUP_BYTES,
    open_text,
    read_records,
    sniff_container,
    unsupported,
)
from app.datasets.formats import (
    ALL_FORMATS,
    Example,
    RawRecord,
    RecordError,
    detect_format,
    to_example,
    unknown_shape,
)
from app.datasets.records import SCREENED_RULE

APPROX_CHARS_PER_TOKEN = 4  # rough English BPE average; stats only, never used for limits
PREFERENCE_FORMATS = ("openai-dpo", "preference", "unpaired-preference")
TRAINING_KEYS = ("trained_turns", "excluded_turns", "weight_0_turns", "tool_calls", "screened", "preference")


@dataclass
class Limits:
    max_bytes: int
    max_examples: int
    max_line_bytes: int
    max_errors: int
    max_row_group_bytes: int = DEFAULT_MAX_ROW_GROUP_BYTES


@dataclass
class ValidationReport:
    container: str | None = None
    format: str | None = None
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
        self.finished = False  # every byte read: `src` may be re-read by seeking (Parquet), never teed again

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.finished:
            return 0
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


class Stats:
    """What the stats say about the screened examples and, for preference data, the other side."""

    def __init__(self) -> None:
        self.hashes = array("Q")
        self.roles: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.chars = self.trained = self.excluded = 0
        self.other = Counter[str]()

    def add(self, ex: Example, *, hashed: bool = True) -> None:
        if hashed:
            self.hashes.append(int(ex.content_hash[:16], 16))
        for m in ex.messages:
            self.roles[m["role"]] += 1
        self.chars += sum(len(m["content"]) for m in ex.screened)
        self.trained += len(ex.targets)
        self.excluded += ex.excluded_turns
        self.notes.update(ex.notes)
        if ex.other:
            self.other["examples"] += 1
            self.other["characters"] += sum(len(m["content"]) for m in ex.other)

    def as_dict(self, examples: int, fmt: str | None) -> dict[str, Any]:
        unique = int(np.unique(np.frombuffer(self.hashes, dtype=np.uint64)).size) if self.hashes else 0
        out: dict[str, Any] = {
            "examples": examples,
            "characters": self.chars,
            "approx_tokens": self.chars // APPROX_CHARS_PER_TOKEN,
            "duplicates": examples - unique,
            "role_counts": dict(self.roles),
            "mean_characters": round(self.chars / examples, 1) if examples else 0.0,
            "trained_turns": self.trained,
            "excluded_turns": self.excluded,
            "weight_0_turns": self.notes["weight_0"],
            "tool_calls": self.notes["tool_calls"],
            "tools_defined": self.notes["tools_defined"],
            "media_parts": {k: self.notes[k] for k in ("image_url", "input_audio", "file") if self.notes[k]},
            "screened": SCREENED_RULE,
        }
        if fmt in PREFERENCE_FORMATS or self.other["examples"]:
            chars = self.other["characters"]
            out["preference"] = {
                "screened_side": "the side trained towards (chosen / preferred / label true)",
                "other_side": {
                    "examples": self.other["examples"],
                    "characters": chars,
                    "approx_tokens": chars // APPROX_CHARS_PER_TOKEN,
                },
            }
        return out


def _seekable(src: BinaryIO, tee: TeeReader, buffered: BinaryIO, stack: ExitStack) -> BinaryIO:
    """Read the whole file through the tee (hash, limit, copy to storage), then give a seekable handle on
    it: `src` itself when it can seek (a file, an upload spooled to disk), else a temporary copy. Only
    Parquet needs this: its index is at the end of the file."""
    try:
        can_seek = src.seekable()
    except (OSError, ValueError):
        can_seek = False
    copy: BinaryIO | None = None if can_seek else stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
    while chunk := buffered.read(1 << 20):
        if copy is not None:
            copy.write(chunk)
    tee.finished = True
    out = src if copy is None else copy
    out.seek(0)
    return out


def validate_stream(
    src: BinaryIO,
    *,
    limits: Limits,
    fmt: str | None = None,
    container: str | None = None,
    filename: str | None = None,
    sink: BinaryIO | None = None,
) -> ValidationReport:
    """Validate a dataset stream, copying it to `sink` as it goes. Memory is bounded by one record (one
    row group for Parquet)."""
    report = ValidationReport()
    tee = TeeReader(src, sink, limits.max_bytes)
    buffered: Any = io.BufferedReader(tee, buffer_size=1 << 20)
    stats = Stats()

    def add(err: RecordError) -> None:
        report.error_count += 1
        if len(report.errors) < limits.max_errors:
            report.errors.append(err.as_dict())

    with ExitStack() as stack:
        try:
            want_format = _parse_choice(fmt, ALL_FORMATS, "format")
            head = buffered.peek(4096)[:4096]
            report.container = _parse_choice(container, CONTAINERS, "container") or sniff_container(
                head, filename
            )
            if report.container is None:
                if not head.removeprefix(b"\xef\xbb\xbf").strip():
                    raise RecordError("empty_file", "the file is empty", line=1 if head else None, fatal=True)
                raise unsupported(head)
            report.format = want_format
            if report.container == "parquet":
                stream = _seekable(src, tee, buffered, stack)
                items = read_records(
                    stream,
                    "parquet",
                    max_line_bytes=limits.max_line_bytes,
                    max_row_group_bytes=limits.max_row_group_bytes,
                )
            else:
                report.container, text = open_text(buffered, report.container, filename, limits.max_bytes)
                inner = report.container.partition(".")[0]
                items = read_records(text, inner, max_line_bytes=limits.max_line_bytes)
            _validate_items(items, report, stats, limits, add)
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
    report.stats = stats.as_dict(report.examples, report.format)
    report.sha256 = tee.sha.hexdigest()
    report.bytes = tee.count
    return report


def _validate_items(
    items: Iterator[RawRecord | RecordError], report: ValidationReport, stats: Stats, limits: Limits, add: Any
) -> None:
    for item in items:
        if isinstance(item, RecordError):
            add(item)
            if item.fatal:
                return
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
            return
        if report.format is None:
            report.format = detect_format(item.value)
            if report.format is None:
                add(unknown_shape(item.value, line=item.line, record=item.record))
                return
        try:
            ex = to_example(item, report.format)
        except RecordError as err:
            add(err)
            continue
        report.examples += 1
        stats.add(ex)


def training_summary(examples: Sequence[Example], fmt: str | None = None) -> dict[str, Any]:
    """What a screening's report says about what was screened: trained and excluded turns, the rule, and
    for preference data the side the risk is computed on with the other side's statistics."""
    stats = Stats()
    for ex in examples:
        stats.add(ex, hashed=False)
    full = stats.as_dict(len(examples), fmt)
    return {k: full[k] for k in TRAINING_KEYS if k in full}


def iter_examples(
    stream: BinaryIO, *, container: str, fmt: str, max_line_bytes: int
) -> Iterator[tuple[RawRecord, Example]]:
    """Examples of an already validated dataset, with their raw records (for subsets in the source form)."""
    for item in read_records(stream, container, max_line_bytes=max_line_bytes, max_row_group_bytes=1 << 62):
        if isinstance(item, RecordError):
            raise item
        yield item, to_example(item, fmt)
