"""`ftguard validate`: a validation result as text lines, or as the API's JSON object."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.core.config import get_settings
from app.datasets.formats import PROMPTS
from app.datasets.service import check


def validate_file(
    path: Path, *, fmt: str, purpose: str, as_json: bool, echo: Callable[[str], None] = print
) -> bool:
    """`ftguard validate`: check a local file (no server), print the result; True when it is valid.

    `--json` prints the `dataset.validation` object that `POST /v1/datasets/validate` answers."""
    if fmt == PROMPTS:  # evaluation prompts are only ever that purpose
        purpose = "eval-prompts"
    with path.open("rb") as fh:
        result = check(settings=get_settings(), src=fh, filename=path.name, purpose=purpose, fmt=fmt)
    return print_validation(result, as_json=as_json, echo=echo)


def print_validation(result: dict[str, Any], *, as_json: bool, echo: Callable[[str], None] = print) -> bool:
    """Print a validation result, as the API's JSON object or as text lines; True when it is valid."""
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        for line in validation_lines(result):
            echo(line)
    return bool(result["valid"])


def _where(e: dict[str, Any]) -> str:
    parts = [f"{k} {e[k]}" for k in ("line", "record") if e.get(k) is not None]
    if e.get("field"):
        parts.append(f"field {e['field']}")
    return ", ".join(parts) or "file"


def validation_lines(result: dict[str, Any]) -> list[str]:
    st = result.get("stats") or {}
    verdict = "valid" if result["valid"] else f"INVALID: {result['error_count']} error(s)"
    lines = [
        f"{result['filename']}: {verdict}",
        f"container {result['container'] or '?'} · format {result['format'] or '?'} · "
        f"{result['bytes']} bytes · sha256 {result['sha256'][:16]}",
    ]
    if st.get("examples"):
        roles = ", ".join(f"{k} {v}" for k, v in sorted(st.get("role_counts", {}).items()))
        lines += [
            f"examples {st['examples']} · duplicates {st['duplicates']} · ~{st['approx_tokens']} tokens "
            f"({st['characters']} characters, mean {st['mean_characters']})",
            f"roles: {roles}",
            f"trained turns {st.get('trained_turns', 0)} · excluded turns {st.get('excluded_turns', 0)} "
            f"(weight 0: {st.get('weight_0_turns', 0)}) · tool calls {st.get('tool_calls', 0)} · "
            f"tools defined {st.get('tools_defined', 0)}",
        ]
        if st.get("media_parts"):
            media = ", ".join(f"{k} {v}" for k, v in st["media_parts"].items())
            lines.append(f"media parts (counted, never fetched): {media}")
        pref = st.get("preference")
        if pref:
            other = pref["other_side"]
            lines.append(
                f"preference: screened {pref['screened_side']}; other side {other['examples']} examples, "
                f"~{other['approx_tokens']} tokens"
            )
    for e in result["errors"]:
        lines.append(f"  {_where(e)}: {e['code']}: {e['message']}")
    if result["error_count"] > len(result["errors"]):
        lines.append(f"  ... and {result['error_count'] - len(result['errors'])} more")
    return lines
