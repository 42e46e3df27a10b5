"""A validation result as text lines (what `ftguard validate` prints without `--json`)."""

from __future__ import annotations

from typing import Any


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
