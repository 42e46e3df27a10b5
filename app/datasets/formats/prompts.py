"""Evaluation prompts (purpose eval-prompts only; never detected): a user turn alone."""

from __future__ import annotations

from typing import Any

from app.datasets.formats.base import FormatSpec, err, join, obj, text
from app.datasets.records import Example, RawRecord

PROMPT_KEYS = ("prompt", "instruction", "question", "goal")
PROMPT_KINDS = ("harmful", "benign")


def detect(v: dict[str, Any]) -> bool:
    return any(k in v for k in PROMPT_KEYS)


def convert(rec: RawRecord) -> Example:
    """`prompt` (or `instruction`, `question`, `goal`), optional `input`/`context`, optional `category` (a
    string) and `kind` (harmful, the default, or benign), and an optional `system` prompt the model answers
    under (an attack that fine-tunes a persona into a system prompt, such as AOA, is evaluated with it)."""
    v = obj(rec)
    key = next((k for k in PROMPT_KEYS if k in v), PROMPT_KEYS[0])
    extra = "input" if "input" in v else "context"
    user = join(text(v, key, rec), text(v, extra, rec, required=False))
    if not user.strip():
        raise err(rec, "empty_content", f"'{key}' is empty", key)
    for name in ("category", "kind", "system"):
        if v.get(name) is not None:
            text(v, name, rec)
    if v.get("kind") is not None and v["kind"] not in PROMPT_KINDS:
        raise err(
            rec,
            "invalid_value",
            f"'kind' must be one of {list(PROMPT_KINDS)}, not {str(v['kind'])[:40]!r}",
            "kind",
        )
    system = text(v, "system", rec, required=False)
    turns = [{"role": "system", "content": system}] if system.strip() else []
    return Example([*turns, {"role": "user", "content": user}])


SPEC = FormatSpec(
    name="prompts",
    fields="`prompt` (or `instruction`, `question`, `goal`), `category`, `kind` (harmful/benign), "
    "`system`; "
    "purpose `eval-prompts` only",
    rendering="system: system (when given), user: prompt (the experiments' evaluation prompts; never "
    "screened as a fine-tune set)",
    detect=detect,
    convert=convert,
    detectable=False,
    source="HEx-PHI, AdvBench (goal, target)",
)
