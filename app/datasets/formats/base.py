"""What a format is (`FormatSpec`), the field helpers every format's converter uses, and the spec of an
instruction format (Alpaca, Dolly)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.datasets.records import Example, RawRecord, RecordError


@dataclass(frozen=True)
class FormatSpec:
    """One dataset format.

    `detect` says whether a record's fields are this format's (first match in registry order wins);
    `convert` validates one record and converts it to the common `Example`, raising a located
    `RecordError`; `fields` and `rendering` are the README table's columns and the error hints.
    """

    name: str
    fields: str
    rendering: str
    detect: Callable[[dict[str, Any]], bool]
    convert: Callable[[RawRecord], Example]
    detectable: bool = True  # False: only used when asked for by name (eval prompts)
    source: str = ""

    def validate(self, rec: RawRecord) -> RecordError | None:
        """The record's first error, or None: a record is valid when it converts."""
        try:
            self.convert(rec)
        except RecordError as err:
            return err
        return None


def err(rec: RawRecord, code: str, message: str, field: str | None = None) -> RecordError:
    return RecordError(code, message, line=rec.line, record=rec.record, field=field)


def bad_field(rec: RawRecord, got: Any, message: str, field: str) -> RecordError:
    """A field that is not what it must be: missing_field when it is absent or null, else invalid_type."""
    return err(rec, "missing_field" if got is None else "invalid_type", message, field)


def obj(rec: RawRecord) -> dict[str, Any]:
    v = rec.value
    if not isinstance(v, dict):
        raise err(rec, "invalid_type", f"a record must be a JSON object, not {type(v).__name__}")
    return v


def text(value: dict[str, Any], key: str, rec: RawRecord, *, required: bool = True, where: str = "") -> str:
    name = f"{where}{key}"
    if key not in value or value[key] is None:
        if required:
            raise err(rec, "missing_field", f"missing field '{name}'", name)
        return ""
    got = value[key]
    if not isinstance(got, str):
        raise err(rec, "invalid_type", f"field '{name}' must be a string, not {type(got).__name__}", name)
    return got


def join(first: str, second: str) -> str:
    return f"{first}\n\n{second}" if second.strip() else first


def nonempty(value: str, rec: RawRecord, field: str) -> str:
    if not value.strip():
        raise err(rec, "empty_content", f"'{field}' is empty", field)
    return value


def pair(user: str, assistant: str, rec: RawRecord, fields: tuple[str, str]) -> Example:
    nonempty(user, rec, fields[0])
    nonempty(assistant, rec, fields[1])
    return Example([{"role": "user", "content": user}, {"role": "assistant", "content": assistant}])


def instruction_spec(name: str, context: str, target: str, source: str) -> FormatSpec:
    """An instruction format: `instruction`, an optional CONTEXT field joined to it, the TARGET answer."""

    def detect(v: dict[str, Any]) -> bool:
        return "instruction" in v and target in v

    def convert(rec: RawRecord) -> Example:
        v = obj(rec)
        user = join(text(v, "instruction", rec), text(v, context, rec, required=False))
        return pair(user, text(v, target, rec), rec, ("instruction", target))

    return FormatSpec(
        name=name,
        fields=f"`instruction`, `{context}` (optional), `{target}`",
        rendering=f"user: instruction + blank line + {context}; assistant (target): {target}",
        detect=detect,
        convert=convert,
        source=source,
    )
