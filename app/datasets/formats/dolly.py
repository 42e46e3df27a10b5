"""Dolly records: `instruction`, optional `context`, `response`."""

from __future__ import annotations

from app.datasets.formats.base import instruction_spec

SPEC = instruction_spec("dolly", context="context", target="response", source="Databricks Dolly 15k")
