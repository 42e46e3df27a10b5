"""Alpaca records: `instruction`, optional `input`, `output`."""

from __future__ import annotations

from app.datasets.formats.base import instruction_spec

SPEC = instruction_spec("alpaca", context="input", target="output", source="Stanford Alpaca")
