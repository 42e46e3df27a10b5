"""`ftguard screen --scores FILE`: one JSON line per customer example, so a local user sees which rows
carry the risk (the `--json` report holds only the ten top examples).

Each line: `record` (the customer's original record), `line` (where it starts in the file), `max_sim` (its
cosine to the nearest alignment example), `anchor_margin` (the compliance form's margin: closer to the
harmful than to the safe anchors when positive; null without anchors), `row_score` (0-100) and `flagged`
(the row score above the default policy's `row_threshold`, app/policies/decide.py, the same rule the API's
flagged rows follow), `nearest_alignment` (the top-k alignment examples: record number, cosine, messages)
and `nearest_anchor` (the nearest harmful anchor of that form; null without anchors).

The customer file is read again, record by record, and each line is written as it is read: nothing but
the screening's per-example arrays is held for the whole set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.core.errors import FtguardError
from app.datasets.validate import iter_examples
from app.policies import decide
from app.screenings.scores import Arrays, form_array

if TYPE_CHECKING:
    from workers.screenings.anchors import Anchors
    from workers.screenings.screening import Side


def write_scores(
    path: Path,
    *,
    source: Path,
    customer: Side,
    alignment: Side,
    anchors: Anchors | None,
    body: dict[str, Any],
    arrays: dict[str, np.ndarray],
    max_line_bytes: int,
    policy: dict[str, Any] | None = None,
) -> int:
    """Write the rows; returns how many. `policy` (default: the built-in one) gives the row threshold."""
    from workers.screenings import risk

    facts = decide.facts(body, arrays)
    threshold = float((policy or decide.DEFAULT_POLICY)["row_threshold"])
    flagged = {int(i) for i in decide.flagged(facts, threshold)}
    top_idx, top_sim = arrays[Arrays.C_TOPK_IDX], arrays[Arrays.C_TOPK_SIM]
    margin = arrays.get(Arrays.C_ANCHOR_MARGIN)
    form = near_idx = near_sim = None
    if anchors is not None and margin is not None:
        form = anchors.form(risk.headline_form({f.name: f for f in anchors.forms}))
        near_idx = arrays.get(form_array("harmful_idx", form.name))
        near_sim = arrays.get(form_array("harmful_sim", form.name))
    n = 0
    with source.open("rb") as fh, path.open("w", encoding="utf-8") as dst:
        records = iter_examples(
            fh,
            container=str(customer.meta["container"]),
            fmt=str(customer.meta["format"]),
            max_line_bytes=max_line_bytes,
        )
        for i, (rec, _) in enumerate(records):
            nearest_anchor = None
            if form is not None and near_idx is not None and near_sim is not None:
                j = int(near_idx[i])
                nearest_anchor = {
                    "form": form.name,
                    "record_number": j + 1,
                    "sim": float(near_sim[i]),
                    "messages": form.harmful.examples[j].messages,
                }
            row = {
                "record": rec.value,
                "line": rec.line,
                "max_sim": float(top_sim[i, 0]),
                "anchor_margin": None if margin is None else float(margin[i]),
                "row_score": round(float(facts.row_scores[i]), 4),
                "flagged": i in flagged,
                "nearest_alignment": [
                    {"record_number": int(j) + 1, "sim": float(s), "messages": alignment.examples[j].messages}
                    for j, s in zip(top_idx[i], top_sim[i], strict=True)
                ],
                "nearest_anchor": nearest_anchor,
            }
            dst.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            n += 1
    if n != len(customer.examples):
        raise FtguardError(
            f"{source} changed while it was screened ({n} records now, {len(customer.examples)} screened)",
            code="file_changed",
        )
    return n
