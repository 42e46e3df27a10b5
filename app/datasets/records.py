"""What every container yields and every format converts to: located errors, raw records, examples.

An `Example` is a chat: messages `{"role", "content"}` with roles system, user, assistant and tool, where
`content` is the text both representation backends see (tool calls rendered into it, see `render_calls`).
Some assistant turns are context and not training targets (`weight: 0`); the screened text is the
conversation up to its last target, so what the model is trained on is what is screened.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SCREENED_RULE = (
    "the screened text is the conversation up to its last trained assistant turn; weight-0 assistant turns "
    "and prompt text are context there, never targets, and turns after the last target are not screened"
)


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
    line: int  # 1-based line where the record starts (the row number for Parquet)
    value: Any


def render_calls(calls: Sequence[dict[str, Any]]) -> str:
    """Tool calls as text: one `<tool_call>` block of `{"name", "arguments"}` JSON per call (the form of the
    Hermes/Qwen chat templates). Used wherever the model's template does not render tool calls itself."""
    blocks = []
    for call in calls:
        fn = call.get("function", {})
        body = json.dumps(
            {"name": fn.get("name"), "arguments": fn.get("arguments")}, ensure_ascii=False, sort_keys=True
        )
        blocks.append(f"<tool_call>\n{body}\n</tool_call>")
    return "\n".join(blocks)


@dataclass(frozen=True, slots=True)
class Example:
    """One training example as it is screened.

    `messages`: `{"role", "content"}` (plus `tool_calls` on assistant turns that call tools, arguments
    parsed). `context_turns`: indices of assistant turns that are context only (weight 0, or the side
    trained away from). `other`: the other side of a preference pair (rejected / non-preferred), never
    screened, only counted. `plain`: raw text, never wrapped in a chat template. `notes`: counts for
    the stats (tool calls, media parts), outside equality.
    """

    messages: list[dict[str, Any]]
    context_turns: tuple[int, ...] = ()
    other: tuple[dict[str, Any], ...] = ()
    plain: bool = False  # plain text (language modelling): no chat template, the text as it is
    notes: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def targets(self) -> list[int]:
        """Indices of the assistant turns the fine-tune trains on."""
        skip = set(self.context_turns)
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant" and i not in skip]

    @property
    def screened(self) -> list[dict[str, Any]]:
        """The conversation up to its last target; without a target, every message but the context turns."""
        targets = self.targets
        if targets:
            return self.messages[: targets[-1] + 1]
        skip = set(self.context_turns)
        return [m for i, m in enumerate(self.messages) if i not in skip]

    @property
    def excluded_turns(self) -> int:
        """Assistant turns that are not targets (weight 0, or after the last target)."""
        return sum(1 for m in self.messages if m["role"] == "assistant") - len(self.targets)

    @property
    def text(self) -> str:
        """Plain text of the screened conversation: what a sentence embedder sees."""
        return "\n".join(m["content"] for m in self.screened)

    @property
    def content_hash(self) -> str:
        screened = self.screened
        ctx = [i for i in self.context_turns if i < len(screened)]
        body: Any = screened if not ctx else {"messages": screened, "context_turns": ctx}
        if self.plain:
            body = {"plain": body}
        canon = json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(canon.encode()).hexdigest()

    @property
    def target_text(self) -> str:
        """The last trained assistant turn (what a report shows as the completion)."""
        targets = self.targets
        return self.messages[targets[-1]]["content"] if targets else ""
