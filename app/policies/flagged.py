"""Flagged rows: the customer examples whose own row score is above a policy's row threshold, with their
line, score, parts and nearest alignment records, in the customer's own records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import InvalidRequest, NotFound
from app.core.storage import BlobStore
from app.datasets import service as datasets
from app.models import Dataset, Report, Screening
from app.policies import decide
from app.policies import service as policies
from app.screenings import scores


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
        near_idx, near_sim = z.take("c_topk_idx", np.sort(page)), z.take("c_topk_sim", np.sort(page))
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
                "record": value,
            }
        )
    return rows, int(idx.size), threshold


def filtered_lines(
    *, session: Session, store: BlobStore, settings: Settings, scr: Screening, report: Report
) -> Iterator[bytes]:
    """The customer's records minus the flagged rows, in upload order, as JSON lines of the original
    records. Only JSON-lines uploads (plain, gzip or zstd: served decompressed) for now."""
    ds = session.get(Dataset, scr.dataset_id)
    if ds is None:
        raise NotFound("the customer dataset of this screening was deleted")
    if (ds.container or "").split(".")[0] != "jsonl":
        raise InvalidRequest(
            f"filtered downloads exist for JSON-lines uploads only; this one is {ds.container}",
            code="unsupported_container",
        )
    f = policies.facts_of(store=store, report=report, max_read_bytes=settings.max_scores_read_bytes)
    drop = {int(i) for i in decide.flagged(f, row_threshold(session, scr))}

    def lines() -> Iterator[bytes]:
        records = datasets.open_records(store=store, ds=ds, max_line_bytes=settings.max_line_bytes)
        for i, (rec, _) in enumerate(records):
            if i not in drop:
                yield json.dumps(rec.value, ensure_ascii=False).encode() + b"\n"

    return lines()
