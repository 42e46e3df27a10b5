"""Datasets: streamed upload with validation, listing, preview, deletion, and reading examples back."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Conflict, Forbidden, InvalidDataset, InvalidRequest, NotFound, PayloadTooLarge
from app.core.services import Services
from app.core.storage import BlobStore, dataset_key, staged_file
from app.datasets.formats import PROMPTS, Example, RawRecord
from app.datasets.validate import Limits, ValidationReport, iter_examples, validate_stream
from app.models import Dataset, Event, Experiment, Ranking, Report, Screening, new_id

PURPOSES = ("fine-tune", "alignment", "harmful-anchors", "safe-anchors", "eval-prompts")
# The provider's own data: its texts are shown only to keys with the alignment:read scope.
PRIVATE_PURPOSES = ("alignment", "harmful-anchors", "safe-anchors")
ACTIVE = ("queued", "running")


def limits(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.max_upload_bytes,
        max_examples=settings.max_examples,
        max_line_bytes=settings.max_line_bytes,
        max_errors=settings.max_reported_errors,
    )


def clean_filename(name: str | None) -> str:
    """Keep the base name only (no path tricks), in a safe alphabet, at most 200 characters."""
    base = PureWindowsPath(PurePosixPath(name or "").name).name
    base = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" .")
    return base[:200] or "upload"


def create(
    *,
    services: Services,
    tenant_id: str,
    src: BinaryIO,
    filename: str | None,
    purpose: str,
    fmt: str | None = None,
    container: str | None = None,
) -> Dataset:
    """Validate an upload while copying it to the blob store; store it only if every record is valid."""
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"unknown purpose {purpose!r}; expected one of {list(PURPOSES)}",
            param="purpose",
            code="invalid_purpose",
        )
    if purpose == "eval-prompts":
        if fmt not in (None, "auto", PROMPTS):
            raise InvalidRequest(
                "eval-prompts datasets are prompt-only records; leave format unset or use 'prompts'",
                param="format",
                code="invalid_format",
            )
        fmt = PROMPTS
    elif fmt == PROMPTS:
        raise InvalidRequest(
            "the 'prompts' format (no assistant turn) is only for purpose eval-prompts",
            param="format",
            code="invalid_format",
        )
    name = clean_filename(filename)
    store = services.store
    with staged_file(store, suffix=".upload") as (path, sink):
        report = validate_stream(
            src, limits=limits(services.settings), fmt=fmt, container=container, filename=name, sink=sink
        )
        sink.close()
        if not report.ok:
            details = {"errors": report.errors, "error_count": report.error_count}
            first = report.errors[0] if report.errors else {"code": "invalid_dataset", "message": "invalid"}
            where = f" (line {first['line']})" if first.get("line") else ""
            msg = f"{report.error_count} error(s) in the dataset; first{where}: {first['message']}"
            if first["code"] == "file_too_large":
                raise PayloadTooLarge(msg, param="file", details=details)
            raise InvalidDataset(msg, code=first["code"], param="file", details=details)
        # Always renamed into place, even over identical bytes: that refreshes the blob's mtime, which
        # keeps the orphan sweep (reconcile) off a blob that is about to get a row.
        store.put_file(dataset_key(report.sha256), path)
    ds = Dataset(
        id=new_id("ds"),
        tenant_id=tenant_id,
        filename=name,
        purpose=purpose,
        status="ready",
        container=report.container,
        format=report.format,
        sha256=report.sha256,
        bytes=report.bytes,
        examples=report.examples,
        stats=report.stats,
        errors=[],
        error_count=0,
    )
    with services.db.session() as session:
        session.add(ds)
        session.commit()
    return ds


def read_file(*, path: Path, settings: Settings) -> tuple[ValidationReport, list[Example]]:
    """Validate a local file and read its examples (CLI, bundled data); InvalidDataset when it has errors."""
    with path.open("rb") as fh:
        report = validate_stream(fh, limits=limits(settings), filename=path.name)
    if not report.ok:
        first = report.errors[0]
        raise InvalidDataset(
            f"{path.name}: {report.error_count} error(s); first (line {first['line']}): {first['message']}",
            code=first["code"],
            details={"errors": report.errors, "error_count": report.error_count},
        )
    assert report.container and report.format
    with path.open("rb") as fh:
        examples = [
            ex
            for _, ex in iter_examples(
                fh, container=report.container, fmt=report.format, max_line_bytes=settings.max_line_bytes
            )
        ]
    return report, examples


def get(*, session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    """The tenant's dataset, or NotFound (another tenant's id is not found too)."""
    ds = session.get(Dataset, dataset_id)
    if ds is None or ds.tenant_id != tenant_id:
        raise NotFound(f"no dataset {dataset_id!r}", param="dataset_id")
    return ds


def list_(
    *, session: Session, tenant_id: str, purpose: str | None = None, after: str | None = None, limit: int = 20
) -> tuple[list[Dataset], bool]:
    """Newest first; `after` is the last id of the previous page."""
    q = select(Dataset).where(Dataset.tenant_id == tenant_id)
    if purpose:
        q = q.where(Dataset.purpose == purpose)
    if after:
        q = q.where(Dataset.id < after)
    rows = list(session.scalars(q.order_by(Dataset.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def delete(*, session: Session, store: BlobStore, tenant_id: str, dataset_id: str) -> None:
    """Delete a dataset, the finished screenings that used it, and its bytes when no other row shares them."""
    ds = get(session=session, tenant_id=tenant_id, dataset_id=dataset_id)
    uses = list(
        session.scalars(
            select(Screening).where(
                Screening.tenant_id == tenant_id,
                (Screening.dataset_id == dataset_id) | (Screening.alignment_dataset_id == dataset_id),
            )
        )
    )
    in_experiment = session.scalar(
        select(Experiment.id)
        .where(
            Experiment.tenant_id == tenant_id,
            Experiment.status.in_(ACTIVE),
            (Experiment.dataset_id == dataset_id)
            | (Experiment.alignment_dataset_id == dataset_id)
            | (Experiment.eval_dataset_id == dataset_id),
        )
        .limit(1)
    )
    if in_experiment is not None:
        raise Conflict(
            f"the dataset is used by experiment {in_experiment}, still queued or running; cancel it first",
            param="dataset_id",
            code="dataset_in_use",
        )
    if any(s.status in ACTIVE for s in uses):
        raise Conflict(
            "the dataset is used by a screening that is still queued or running; cancel it first",
            param="dataset_id",
            code="dataset_in_use",
        )
    for s in uses:
        report = session.get(Report, s.id)
        if report is not None:
            store.delete(report.scores_key)
            session.delete(report)
        session.query(Event).filter(Event.object_id == s.id).delete()
        session.delete(s)
    session.query(Ranking).filter(Ranking.tenant_id == tenant_id, Ranking.dataset_id == dataset_id).delete()
    session.flush()  # screenings and rankings before the dataset they reference
    session.delete(ds)
    session.flush()
    if ds.sha256 and not session.scalar(select(Dataset.id).where(Dataset.sha256 == ds.sha256).limit(1)):
        store.delete(dataset_key(ds.sha256))
    session.commit()


def open_records(
    *, store: BlobStore, ds: Dataset, max_line_bytes: int
) -> Iterator[tuple[RawRecord, Example]]:
    """Stream a ready dataset's records and examples from the blob store."""
    assert ds.sha256 and ds.container and ds.format
    with store.open(dataset_key(ds.sha256)) as fh:
        yield from iter_examples(
            fh,
            container=ds.container,  # type: ignore[arg-type]
            fmt=ds.format,  # type: ignore[arg-type]
            max_line_bytes=max_line_bytes,
        )


def preview(
    *, store: BlobStore, ds: Dataset, max_line_bytes: int, limit: int = 5, alignment_access: bool = True
) -> list[dict[str, Any]]:
    """The first records; the texts of alignment and anchor sets only for keys allowed to read them."""
    if ds.purpose in PRIVATE_PURPOSES and not alignment_access:
        article = "an" if ds.purpose[0] in "aeiou" else "a"
        raise Forbidden(
            f"{article} {ds.purpose} dataset's texts need the 'alignment:read' scope, which this key lacks",
            code="insufficient_scope",
        )
    out = []
    for rec, ex in open_records(store=store, ds=ds, max_line_bytes=max_line_bytes):
        out.append({"record": rec.record, "line": rec.line, "messages": ex.messages})
        if len(out) >= limit:
            break
    return out


def remove_orphan_blobs(*, services: Services, min_age_s: float) -> int:
    """Delete dataset blobs no row refers to (a process died between storing the bytes and writing the
    row), once older than `min_age_s` so an upload finishing right now keeps its blob."""
    store = services.store
    keys = [k for k in store.list("datasets") if "/" in k]
    removed = 0
    cutoff = time.time() - min_age_s
    for i in range(0, len(keys), 500):
        chunk = {k.rsplit("/", 1)[-1]: k for k in keys[i : i + 500]}
        with services.db.session() as session:
            used = set(session.scalars(select(Dataset.sha256).where(Dataset.sha256.in_(list(chunk)))))
        for sha, key in chunk.items():
            path = store.local_path(key)
            if sha in used or path is None:
                continue
            try:
                if path.stat().st_mtime <= cutoff:
                    store.delete(key)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed
