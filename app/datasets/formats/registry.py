"""The registry of dataset formats, in detection order (the first whose detector matches wins).

Adding a format is one module in this package with a `SPEC` and one line here: the API's `format`
parameter, the CLI's choices, the README table and the detection error's hints all read this list.
"""

from __future__ import annotations

from importlib import import_module

from app.datasets.formats.base import FormatSpec

MODULES = (
    "openai_dpo",
    "openai_chat",
    "sharegpt",
    "preference",
    "unpaired_preference",
    "alpaca",
    "dolly",
    "prompt_completion",
    "text",
    "prompt_only",
    "prompts",
)

REGISTRY: tuple[FormatSpec, ...] = tuple(import_module(f"app.datasets.formats.{m}").SPEC for m in MODULES)
