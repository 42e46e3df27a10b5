"""Dataset formats: one module per format, each a `FormatSpec` (name, detector, converter to the common
`Example`), listed in `registry.REGISTRY`. Containers (how records are stored) live in
`app.datasets.containers`; the shared types in `app.datasets.records`."""

from __future__ import annotations

from typing import Any

from app.datasets.containers import CONTAINERS, Container, read_records, sniff_container
from app.datasets.formats.base import FormatSpec
from app.datasets.formats.registry import REGISTRY
from app.datasets.records import Example, RawRecord, RecordError

BY_NAME: dict[str, FormatSpec] = {spec.name: spec for spec in REGISTRY}
ALL_FORMATS: tuple[str, ...] = tuple(BY_NAME)
FORMATS: tuple[str, ...] = tuple(s.name for s in REGISTRY if s.detectable)  # detected from a record
PROMPTS = "prompts"  # eval prompts: never detected, only asked for (purpose eval-prompts)
Format = str  # one of ALL_FORMATS

__all__ = [
    "ALL_FORMATS",
    "BY_NAME",
    "CONTAINERS",
    "FORMATS",
    "PROMPTS",
    "REGISTRY",
    "Container",
    "Example",
    "Format",
    "FormatSpec",
    "RawRecord",
    "RecordError",
    "detect_format",
    "read_records",
    "readme_table",
    "sniff_container",
    "to_example",
    "unknown_shape",
]


def detect_format(value: Any) -> str | None:
    """The format a record's fields say it is in, or None."""
    if not isinstance(value, dict):
        return None
    return next((s.name for s in REGISTRY if s.detectable and s.detect(value)), None)


def unknown_shape(value: Any, *, line: int | None, record: int | None) -> RecordError:
    """The error for a record no format claims: the fields it has and the fields each format needs."""
    if isinstance(value, dict):
        found = f"the record has fields {sorted(str(k)[:40] for k in value)[:20]}"
    else:
        found = f"the record is a JSON {type(value).__name__}, not an object"
    needs = "; ".join(f"{s.name}: {s.fields}" for s in REGISTRY if s.detectable)
    return RecordError(
        "unsupported_format",
        f"cannot tell the format: {found}. Each format needs: {needs}",
        line=line,
        record=record,
        fatal=True,
    )


def to_example(rec: RawRecord, fmt: str) -> Example:
    """Convert one raw record to an Example, or raise a located RecordError."""
    ex = BY_NAME[fmt].convert(rec)
    for i, m in enumerate([*ex.messages, *ex.other]):
        if "\x00" in m["content"]:  # valid JSON as \u0000, but never text: a corrupt or binary file
            raise RecordError(
                "nul_character",
                f"message {i} ({m['role']}) contains a NUL character",
                line=rec.line,
                record=rec.record,
                field=f"messages[{i}].content",
            )
    return ex


def readme_table() -> str:
    """The README's format table, from the registry (a test keeps the README equal to it)."""
    rows = ["| format | fields | what is screened (rendering) | documented by |", "|---|---|---|---|"]
    rows += [f"| `{s.name}` | {s.fields} | {s.rendering} | {s.source} |" for s in REGISTRY]
    return "\n".join(rows)
