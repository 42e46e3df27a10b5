"""Shared helpers of the dataset-format tests."""

from __future__ import annotations

import io
import json
from typing import Any

from app.datasets.records import Example
from app.datasets.validate import Limits, ValidationReport, iter_examples, validate_stream

LIMITS = Limits(max_bytes=1 << 20, max_examples=1000, max_line_bytes=4096, max_errors=5)


def check(data: bytes, *, limits: Limits = LIMITS, **kw: Any) -> ValidationReport:
    return validate_stream(io.BytesIO(data), limits=limits, **kw)


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def codes(rep: ValidationReport) -> list[tuple[int | None, str]]:
    return [(e["line"], e["code"]) for e in rep.errors]


def examples(data: bytes, rep: ValidationReport) -> list[Example]:
    assert rep.container and rep.format
    return [
        ex
        for _, ex in iter_examples(
            io.BytesIO(data), container=rep.container, fmt=rep.format, max_line_bytes=4096
        )
    ]


def valid(data: bytes, fmt: str, **kw: Any) -> list[Example]:
    """Validate, assert it is valid in `fmt`, and read its examples back."""
    rep = check(data, **kw)
    assert rep.ok, rep.errors
    assert rep.format == fmt, rep.format
    return examples(data, rep)
