"""Flagged rows: the customer examples whose own row score is above a policy's row threshold, with their
line, score, parts, nearest alignment records and nearest harmful anchor, in the customer's own records.
(The datasets built from them, filtered, flagged and augmented, are in `app.screenings.variants`.)"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import NotFound
from app.core.storage import BlobStore
from app.datasets import files as datasets
from app.demo import ANCHOR_FORMS
from app.models import Dataset, Report, Screening
from app.policies import decide
from app.policies import service as policies
from app.screenings import scores
from app.screenings.scores import Arrays, form_array


def row_threshold(session: Session, scr: Screening) -> float:
    """The row threshold of the policy (and version) the screening was judged under."""
    pol = policies.get(
        session=session,
        tenant_id=scr.tenant_id,
        name=(scr.decision_rule or {}).get("policy") or scr.policy or decide.DEFAULT_NAME,
        version=scr.policy_version,
    )
    return float(pol.body.get("row_threshold", decide.DEFAULT_POLICY["row_threshold"]))


def flagged_rows(
    *, session: Session, store: BlobStore, settings: Settings, scr: Screening, report: Report, limit: int
) -> tuple[list[dict[str, Any]], int, float]:
    """Up to `limit` flagged rows, highest row score first; their total; the row threshold used (the
    policy the screening was judged under)."""
    threshold = row_threshold(session, scr)
    f = policies.facts_of(store=store, report=report, max_read_bytes=settings.max_scores_read_bytes)
    idx = decide.flagged(f, threshold)
    page = idx[:limit]
    with scores.Scores(store, report.scores_key, max_read_bytes=settings.max_scores_read_bytes) as z:
        near_idx, near_sim = (
            z.take(Arrays.C_TOPK_IDX, np.sort(page)),
            z.take(Arrays.C_TOPK_SIM, np.sort(page)),
        )
        anchor = _nearest_anchors(z, np.sort(page), scr)
    nearest = {int(i): (near_idx[p], near_sim[p]) for p, i in enumerate(np.sort(page))}
    ds = session.get(Dataset, scr.dataset_id)
    if ds is None:
        raise NotFound("the customer dataset of this screening was deleted")
    wanted = {int(i) for i in page}
    records: dict[int, tuple[int, Any]] = {}
    for i, (rec, _) in enumerate(
        datasets.open_records(store=store, ds=ds, max_line_bytes=settings.max_line_bytes)
    ):
        if i in wanted:
            records[i] = (rec.line, rec.value)
    rows = []
    for i in page:
        i = int(i)
        line, value = records.get(i, (None, None))
        ni, ns = nearest[i]
        rows.append(
            {
                "record_number": i + 1,
                "line": line,
                "row_score": round(float(f.row_scores[i]), 4),
                "parts": {k: round(float(v[i]), 4) for k, v in f.row_parts.items()},
                "nearest_alignment": [
                    {"record": int(j) + 1, "sim": float(s)} for j, s in zip(ni, ns, strict=True)
                ],
                "nearest_harmful_anchor": anchor.get(i),
                "record": value,
            }
        )
    return rows, int(idx.size), threshold


# The form whose margin is the row score's anchor part (`c_anchor_margin`): workers/screenings/risk.py's
# headline_form.
ANCHOR_FORM = "compliance"


def _nearest_anchors(z: scores.Scores, rows: np.ndarray, scr: Screening) -> dict[int, dict[str, Any]]:
    """Each row's nearest harmful anchor in the form the row score reads: its record number in the
    anchor set (the tenant's harmful-anchors dataset, or the bundled file), cosine and margin. Empty for
    a screening without anchors, or one stored before the worker kept the anchor's index."""
    idx_name, sim_name = form_array("harmful_idx", ANCHOR_FORM), form_array("harmful_sim", ANCHOR_FORM)
    if idx_name not in z or sim_name not in z or Arrays.C_ANCHOR_MARGIN not in z:
        return {}
    idx, sim, margin = z.take(idx_name, rows), z.take(sim_name, rows), z.take(Arrays.C_ANCHOR_MARGIN, rows)
    own = (scr.params or {}).get("harmful_anchors_dataset_id")
    where = {"dataset_id": own} if own else {"bundled": ANCHOR_FORMS[ANCHOR_FORM]["harmful"][0].name}
    return {
        int(r): {
            "form": ANCHOR_FORM,
            "anchors": where,
            "record": int(idx[p]) + 1,
            "sim": round(float(sim[p]), 4),
            "margin": round(float(margin[p]), 4),
        }
        for p, r in enumerate(rows)
    }
