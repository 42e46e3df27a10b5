"""Parquet, streamed by row group with pyarrow: the footer first, then one row group at a time in small
batches, so memory is bounded by a row group (capped by `max_row_group_bytes`), never by the file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from app.datasets.records import RawRecord, RecordError

PARQUET_MAGIC = b"PAR1"
BATCH_ROWS = 256


def _drop_nulls(value: Any) -> Any:
    """Parquet has one schema for every row: a struct field a record lacks reads back as null. Null and
    absent mean the same here, so nulls are dropped (a message without `weight` reads as it was written)."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def read_parquet(
    stream: BinaryIO, *, max_line_bytes: int, max_row_group_bytes: int
) -> Iterator[RawRecord | RecordError]:
    """Rows as records; `line` and `record` are both the 1-based row number. `stream` must be seekable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    del max_line_bytes  # a row is bounded by its row group, which is capped
    try:
        pf = pq.ParquetFile(stream, buffer_size=1 << 20, pre_buffer=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        yield RecordError("invalid_parquet", f"not a readable Parquet file: {str(exc)[:200]}", fatal=True)
        return
    meta = pf.metadata
    row = 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        if rg.total_byte_size > max_row_group_bytes:
            yield RecordError(
                "row_group_too_large",
                f"row group {g} holds {rg.total_byte_size} bytes uncompressed, more than the "
                f"{max_row_group_bytes} allowed; write the file with smaller row groups",
                line=row + 1,
                record=row + 1,
                fatal=True,
            )
            return
        try:
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[g], use_threads=False):
                for value in batch.to_pylist():
                    row += 1
                    yield RawRecord(row, row, _drop_nulls(value))
        except (pa.ArrowException, OSError, ValueError) as exc:
            yield RecordError(
                "invalid_parquet",
                f"row group {g} cannot be read: {str(exc)[:200]}",
                line=row + 1,
                record=row + 1,
                fatal=True,
            )
            return
