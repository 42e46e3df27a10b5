"""studies/anchor_layers.py: the layer rule (the cheapest layer within 0.01 of the best criterion) and the doc
block it keeps inside docs/reference_sets.md, whatever rewrites the rest; and that the shipped default is
the layer its committed JSON chose."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "studies"))

import anchor_layers  # noqa: E402

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store


def _layer(k: int, crit: float) -> dict[str, object]:
    return {"layer": k, "blocks_run": k, "criterion": crit}


def test_the_cheapest_layer_within_the_margin_of_the_best_is_chosen() -> None:
    layers = [_layer(1, 0.70), _layer(2, 0.805), _layer(3, 0.81), _layer(4, 0.80), _layer(30, 0.79)]
    assert anchor_layers.choose(layers)["layer"] == 2  # 0.805 is within 0.01 of 0.81, and cheaper
    assert anchor_layers.choose([_layer(5, 0.6), _layer(9, 0.9)])["layer"] == 9


def test_the_layer_block_is_replaced_or_placed_before_the_earlier_study() -> None:
    block = f"{anchor_layers.START}\nnew\n{anchor_layers.END}"
    doc = "# T\n\nbody\n\n## Earlier measurement: x\n\nold study\n"
    placed = anchor_layers.splice(doc, block)
    assert placed.index("new") < placed.index("## Earlier measurement") and "old study" in placed
    again = anchor_layers.splice(placed, f"{anchor_layers.START}\nnewer\n{anchor_layers.END}")
    assert "newer" in again and "\nnew\n" not in again and again.count(anchor_layers.START) == 1


def test_the_shipped_anchor_layer_is_the_measured_choice() -> None:
    from app.core.config import Settings

    measured = json.loads((ROOT / "docs" / "anchor_layers.json").read_text())
    assert Settings.model_fields["anchor_layer"].default == measured["chosen"]["layer"]
    assert measured["model"] == Settings.model_fields["anchor_model"].default
    doc = (ROOT / "docs" / "reference_sets.md").read_text()
    assert f"Chosen: layer **{measured['chosen']['layer']}**" in doc
