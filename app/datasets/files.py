"""Reading dataset files, for the API and the workers alike: a stored dataset's records streamed from the
blob store (`open_records`), a local file validated and read whole (`read_file`: the CLI, bundled data),
and the validation limits a provider's settings set (`limits`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from app.core.config import Settings
from app.core.errors import InvalidDataset
from app.core.storage import BlobStore, dataset_key
from app.datasets.formats import Example, RawRecord
from app.datasets.validate import Limits, ValidationReport, iter_examples, validate_stream
from app.models import Dataset


def limits(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.max_upload_bytes,
        max_examples=settings.max_examples,
        max_line_bytes=settings.max_line_bytes,
        max_errors=settings.max_reported_errors,
        max_row_group_bytes=settings.max_row_group_bytes,
    )


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


def open_records(
    *, store: BlobStore, ds: Dataset, max_line_bytes: int
) -> Iterator[tuple[RawRecord, Example]]:
    """Stream a ready dataset's records and examples from the blob store."""
    assert ds.sha256 and ds.container and ds.format
    with store.open(dataset_key(ds.sha256)) as fh:
        yield from iter_examples(
            fh,
            container=ds.container,
            fmt=ds.format,
            max_line_bytes=max_line_bytes,
        )
