"""Datasets: streamed upload with validation, listing, preview, deletion, and reading examples back."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import quotas
from app.access import holds_alignment
from app.core.config import Settings
from app.core.db import owned, page
from app.core.errors import Conflict, Forbidden, InvalidDataset, InvalidRequest, PayloadTooLarge
from app.core.services import Services
from app.core.storage import BlobStore, scores_key, staged_file
from app.core.vocab import ACTIVE, PURPOSES
from app.datasets import blobs
from app.datasets.files import limits, open_records
from app.datasets.formats import PROMPTS
from app.datasets.validate import ValidationReport, validate_stream
from app.models import Dataset, Event, Experiment, Ranking, Report, Screening, new_id


def clean_filename(name: str | None) -> str:
    """Keep the base name only (no path tricks), in a safe alphabet, at most 200 characters."""
    base = PureWindowsPath(PurePosixPath(name or "").name).name
    base = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" .")
    return base[:200] or "upload"


def resolve_format(purpose: str, fmt: str | None) -> str | None:
    """The format to read a dataset of `purpose` with (None: detect it); InvalidRequest for a bad pair."""
    if purpose == "eval-prompts":
        if fmt not in (None, "auto", PROMPTS):
            raise InvalidRequest(
                "eval-prompts datasets are prompt-only records; leave format unset or use 'prompts'",
                param="format",
                code="invalid_format",
            )
        return PROMPTS
    if fmt == PROMPTS:
        raise InvalidRequest(
            "the 'prompts' format (no assistant turn) is only for purpose eval-prompts",
            param="format",
            code="invalid_format",
        )
    return fmt


def validation_result(report: ValidationReport, filename: str) -> dict[str, Any]:
    """A validation as the API's `dataset.validation` object (the CLI's `validate --json` prints it too)."""
    return {
        "object": "dataset.validation",
        "valid": report.ok,
        "filename": filename,
        "container": report.container,
        "format": report.format,
        "bytes": report.bytes,
        "sha256": report.sha256,
        "examples": report.examples,
        "stats": report.stats,
        "error_count": report.error_count,
        "errors": report.errors,
    }


def check(
    *,
    settings: Settings,
    src: BinaryIO,
    filename: str | None,
    purpose: str = "fine-tune",
    fmt: str | None = None,
    container: str | None = None,
) -> dict[str, Any]:
    """Validate without storing anything: the `dataset.validation` object, valid or not."""
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"unknown purpose {purpose!r}; expected one of {list(PURPOSES)}",
            param="purpose",
            code="invalid_purpose",
        )
    name = clean_filename(filename)
    report = validate_stream(
        src, limits=limits(settings), fmt=resolve_format(purpose, fmt), container=container, filename=name
    )
    return validation_result(report, name)


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
    fmt = resolve_format(purpose, fmt)
    name = clean_filename(filename)
    store, settings = services.store, services.settings
    with services.db.session() as session:  # already full: refuse before reading the body
        quotas.check_storage(session, settings, tenant_id, 1)
    # (the API holds one of the tenant's upload slots around the whole request: app.api.upload_slots)
    with staged_file(store, suffix=".upload") as (path, sink):
        report = validate_stream(
            src, limits=limits(settings), fmt=fmt, container=container, filename=name, sink=sink
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
        ds = _dataset_row(report, tenant_id=tenant_id, name=name, purpose=purpose)
        with services.db.session() as session:
            quotas.lock_tenant(session, tenant_id)  # first: the quota check and the insert are one step
            quotas.check_storage(session, settings, tenant_id, report.bytes)
            blobs.place(session, store, report.sha256, path)  # under the blob's lock until the commit
            session.add(ds)
            session.commit()
    return ds


def _dataset_row(report: ValidationReport, *, tenant_id: str, name: str, purpose: str) -> Dataset:
    """The stored dataset: the validation report's fields (a valid one: no errors) under their own names."""
    fields = dataclasses.asdict(report)
    return Dataset(
        id=new_id("ds"), tenant_id=tenant_id, filename=name, purpose=purpose, status="ready", **fields
    )


def get(*, session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    """The tenant's dataset, or NotFound (another tenant's id is not found too)."""
    return owned(session, Dataset, dataset_id, tenant_id, what="dataset", param="dataset_id")


def list_(
    *, session: Session, tenant_id: str, purpose: str | None = None, after: str | None = None, limit: int = 20
) -> tuple[list[Dataset], bool]:
    """Newest first; `after` is the last id of the previous page."""
    q = select(Dataset).where(Dataset.tenant_id == tenant_id)
    if purpose:
        q = q.where(Dataset.purpose == purpose)
    return page(session, q, Dataset.id, after=after, limit=limit)


ANCHOR_PARAMS = ("harmful_anchors_dataset_id", "safe_anchors_dataset_id")


def _anchors_in_use(session: Session, tenant_id: str, dataset_id: str) -> bool:
    """Whether a queued or running screening reads this dataset as its anchors (ids kept in its params; the
    tenant's active screenings are few, `max_active_screenings`, so they are read, not queried by JSON)."""
    active = session.scalars(
        select(Screening).where(Screening.tenant_id == tenant_id, Screening.status.in_(ACTIVE))
    )
    return any(dataset_id in (s.params.get(k) for k in ANCHOR_PARAMS) for s in active)


def _in_use(by: str) -> Conflict:
    """The refusal to delete a dataset that a queued or running job reads."""
    return Conflict(
        f"the dataset is used by {by}; cancel it first", param="dataset_id", code="dataset_in_use"
    )


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
        raise _in_use(f"experiment {in_experiment}, still queued or running")
    if any(s.status in ACTIVE for s in uses) or _anchors_in_use(session, tenant_id, dataset_id):
        raise _in_use("a screening that is still queued or running")
    for s in uses:
        report = session.get(Report, s.id)
        if report is not None:
            store.delete(report.scores_key)
            session.delete(report)
        store.delete(scores_key(tenant_id, s.id))  # a cancelled run may have written one, with no report
        session.query(Event).filter(Event.object_id == s.id).delete()
        session.delete(s)
    session.query(Ranking).filter(Ranking.tenant_id == tenant_id, Ranking.dataset_id == dataset_id).delete()
    session.flush()  # screenings and rankings before the dataset they reference
    session.delete(ds)
    session.commit()
    if ds.sha256:  # after the commit, re-checked under the blob's lock (app.datasets.blobs)
        blobs.sweep(session, store, ds.sha256)


def preview(
    *, store: BlobStore, ds: Dataset, max_line_bytes: int, limit: int = 5, alignment_access: bool = True
) -> list[dict[str, Any]]:
    """The first records; the texts of alignment and anchor sets only for keys allowed to read them."""
    if holds_alignment(ds) and not alignment_access:
        what = "augmented" if ds.purpose == "fine-tune" else ds.purpose
        article = "an" if what[0] in "aeiou" else "a"
        raise Forbidden(
            f"{article} {what} dataset's texts need the 'alignment:read' scope, which this key lacks",
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
    row), once older than `min_age_s`; each is re-checked under its lock (`blobs.sweep`), so an upload
    committing a row for the same bytes right now keeps them."""
    store = services.store
    keys = [k for k in store.list("datasets") if "/" in k]
    removed = 0
    cutoff = time.time() - min_age_s
    for i in range(0, len(keys), 500):
        chunk = {k.rsplit("/", 1)[-1]: k for k in keys[i : i + 500]}
        with services.db.session() as session:
            used = set(session.scalars(select(Dataset.sha256).where(Dataset.sha256.in_(list(chunk)))))
        for sha, key in chunk.items():
            if sha in used:
                continue
            written = store.modified(key)  # None: removed meanwhile
            if written is None or written > cutoff:
                continue
            with services.db.session() as session:  # re-checked under the blob's lock
                removed += blobs.sweep(session, store, sha)
    return removed
