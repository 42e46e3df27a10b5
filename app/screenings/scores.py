"""A screening's per-example arrays on disk, read a page at a time.

Written by the worker as an *uncompressed* `.npz` (a zip of `.npy` members, each stored as is), with the
sort orders the scores route offers precomputed (`order_<array>`). A page then reads only its rows: a
slice of an order array and the rows it names, each by a seek into the member (no decompression, no
whole-array load). So memory per request is the page, whatever the screening's size.

Files written before this format (`savez_compressed`) still read: their members are streamed through a
decompressor, one chunk at a time, keeping only the rows a page needs. Each request may decompress at
most `max_scores_read_bytes` (413 `scores_too_large` past it), and `migrate` (run by `ftguard reconcile`
and at API start-up) rewrites them in the new format, in place, one chunk at a time.
"""

from __future__ import annotations

import logging
import struct
import zipfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
from sqlalchemy import select

from app.core.db import Database
from app.core.errors import InvalidRequest, PayloadTooLarge
from app.core.storage import BlobStore, staged_file
from app.models import Report

log = logging.getLogger("ftguard.scores")


class Arrays(StrEnum):
    """The names of a screening's per-example arrays: the worker writes them
    (`workers/screenings/screening.py`), this module pages them, the policies and the variants read them.
    c_*: one row per customer example; a_*: one per alignment example."""

    C_MAX = "c_max"  # float32: max cosine to the alignment set
    C_TOPK_MEAN = "c_topk_mean"  # float32: mean of the top-k cosines
    C_TOPK_IDX = "c_topk_idx"  # int64 (n, k): the nearest alignment rows
    C_TOPK_SIM = "c_topk_sim"  # float32 (n, k): their cosines
    C_CONTRIBUTION = "c_contribution"  # float32: the row's share of the risk score
    C_ANCHOR_MARGIN = "c_anchor_margin"  # float32: the headline anchor form's margin (with anchors)
    A_MAX = "a_max"  # float32: max cosine to the customer set
    A_ARGMAX = "a_argmax"  # int64: the nearest customer row


def subset_array(name: str) -> str:
    """The alignment rows of a subset (high_sim, low_sim, random), in subset order (int64)."""
    return f"subset_{name}"


def form_array(what: str, form: str) -> str:
    """An anchor form's per-row array: margin, zh (its rescaled margin), harmful_idx or harmful_sim (the
    nearest harmful anchor and its cosine)."""
    return f"c_anchor_{what}_{form}"


# Arrays a sort reads: (side, sort) -> the array whose stable ascending order is stored.
SORTED = {
    ("customer", "max_sim"): Arrays.C_MAX,
    ("customer", "topk_mean"): Arrays.C_TOPK_MEAN,
    ("customer", "anchor_margin"): Arrays.C_ANCHOR_MARGIN,
    ("alignment", "max_sim"): Arrays.A_MAX,
}
CHUNK = 4 << 20  # bytes decompressed (or read) at a time
_LOCAL_HEADER = struct.Struct("<4s5HLLLHH")


def _order_name(array: str) -> str:
    return f"order_{array}"


def save(store: BlobStore, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays (and the sort orders) uncompressed, straight to a staged file, then into place."""
    out = dict(arrays)
    for array in SORTED.values():
        if array in arrays:
            out[_order_name(array)] = np.argsort(arrays[array], kind="stable").astype(np.int64)
    with staged_file(store, suffix=".npz") as (path, fh):
        np.savez(fh, allow_pickle=False, **out)
        fh.close()
        store.put_file(key, path)


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise PayloadTooLarge(
                f"these scores are stored in the old compressed format and this request would decompress "
                f"more than {self.limit} bytes (max_scores_read_bytes); `ftguard reconcile` converts them "
                "(the API does at start-up)",
                code="scores_too_large",
            )


class _Member:
    """One `.npy` member: its shape and dtype, and where its data starts (stored members)."""

    def __init__(self, zf: zipfile.ZipFile, fh: BinaryIO, info: zipfile.ZipInfo) -> None:
        self.zf, self.fh, self.info = zf, fh, info
        self.stored = info.compress_type == zipfile.ZIP_STORED
        with zf.open(info) as m:
            self.shape, self.fortran, self.dtype = _read_header(m)
            header = m.tell()
        self.data_at = self._data_start() + header if self.stored else -1
        self.row_items = int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1
        self.row_bytes = self.row_items * self.dtype.itemsize

    def _data_start(self) -> int:
        self.fh.seek(self.info.header_offset)
        fields = _LOCAL_HEADER.unpack(self.fh.read(_LOCAL_HEADER.size))
        return self.info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]

    @property
    def rows(self) -> int:
        return int(self.shape[0]) if self.shape else 1

    def _shaped(self, flat: np.ndarray, n: int) -> np.ndarray:
        return flat.reshape((n, *self.shape[1:]))

    def take(self, rows: np.ndarray, budget: _Budget) -> np.ndarray:
        """The given rows, in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return self._shaped(np.empty(0, dtype=self.dtype), 0)
        if self.stored:
            out = np.empty((len(rows), self.row_items), dtype=self.dtype)
            for i, r in enumerate(rows):
                self.fh.seek(self.data_at + int(r) * self.row_bytes)
                out[i] = np.frombuffer(self.fh.read(self.row_bytes), dtype=self.dtype)
            return self._shaped(out.reshape(-1), len(rows))
        out = np.empty((len(rows), self.row_items), dtype=self.dtype)
        for start, block in self._stream(budget):
            sel = (rows >= start) & (rows < start + len(block))
            out[sel] = block[rows[sel] - start]
            if start + len(block) > int(rows.max(initial=-1)):
                break  # past the last row wanted
        return self._shaped(out.reshape(-1), len(rows))

    def slice(self, start: int, stop: int, budget: _Budget) -> np.ndarray:
        """Rows start..stop of the member."""
        start, stop = max(0, start), min(self.rows, stop)
        if stop <= start:
            return self._shaped(np.empty(0, dtype=self.dtype), 0)
        if self.stored:
            self.fh.seek(self.data_at + start * self.row_bytes)
            flat = np.frombuffer(self.fh.read((stop - start) * self.row_bytes), dtype=self.dtype)
            return self._shaped(flat.copy(), stop - start)
        return self.take(np.arange(start, stop), budget)

    def whole(self, budget: _Budget) -> np.ndarray:
        """The whole member, in memory: only for small arrays (a subset, one value per row)."""
        budget.spend(self.rows * self.row_bytes)
        return self.slice(0, self.rows, _Budget(1 << 62))

    def _stream(self, budget: _Budget) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) chunk by chunk through the decompressor of a compressed member."""
        per = max(1, CHUNK // max(1, self.row_bytes))
        with self.zf.open(self.info) as m:
            _read_header(m)
            row = 0
            while row < self.rows:
                n = min(per, self.rows - row)
                raw = m.read(n * self.row_bytes)
                budget.spend(len(raw))
                yield row, np.frombuffer(raw, dtype=self.dtype).reshape(n, self.row_items)
                row += n


def _read_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    if fortran and len(shape) > 1:
        raise ValueError("Fortran-ordered score arrays are not supported")
    return tuple(shape), bool(fortran), np.dtype(dtype)


class Scores:
    """The arrays of one scores file, opened for paging (use as a context manager)."""

    def __init__(self, store: BlobStore, key: str, *, max_read_bytes: int) -> None:
        self.fh = store.open(key)
        self.zf = zipfile.ZipFile(self.fh)
        self.members = {
            info.filename.removesuffix(".npy"): info
            for info in self.zf.infolist()
            if info.filename.endswith(".npy")
        }
        self.budget = _Budget(max_read_bytes)
        self._open: dict[str, _Member] = {}

    def __enter__(self) -> Scores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.zf.close()
        self.fh.close()

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def member(self, name: str) -> _Member:
        if name not in self._open:
            self._open[name] = _Member(self.zf, self.fh, self.members[name])
        return self._open[name]

    def rows(self, name: str) -> int:
        return self.member(name).rows

    def take(self, name: str, rows: np.ndarray) -> np.ndarray:
        return self.member(name).take(rows, self.budget)

    def whole(self, name: str) -> np.ndarray:
        return self.member(name).whole(self.budget)

    def page_order(self, array: str | None, n: int, *, desc: bool, offset: int, limit: int) -> np.ndarray:
        """The row numbers of one page, sorted by `array` (stable; None: by record), asc or desc."""
        if desc:  # the reverse of the ascending order: rows n-offset-limit .. n-offset, reversed
            lo, hi = n - offset - limit, n - offset
        else:
            lo, hi = offset, offset + limit
        lo, hi = max(0, lo), max(0, min(n, hi))
        if array is None:
            idx = np.arange(lo, hi, dtype=np.int64)
        elif _order_name(array) in self.members:
            idx = self.member(_order_name(array)).slice(lo, hi, self.budget)
        else:  # an old file: sort in memory (one value per row, within the budget)
            idx = np.argsort(self.whole(array), kind="stable")[lo:hi]
        return idx[::-1] if desc else idx


def is_legacy(store: BlobStore, key: str) -> bool:
    with store.open(key) as fh, zipfile.ZipFile(fh) as zf:
        return any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist())


def migrate(store: BlobStore, key: str) -> bool:
    """Rewrite an old compressed scores file in the paged format, in place; False when it already is. Each
    member is streamed through (memory: one chunk and the one-value-per-row arrays that get an order)."""
    if not is_legacy(store, key):
        return False
    with store.open(key) as fh, zipfile.ZipFile(fh) as zin, staged_file(store, suffix=".npz") as (path, out):
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zout:
            for info in zin.infolist():
                with zin.open(info) as src, zout.open(info.filename, "w", force_zip64=True) as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
            names = {i.filename.removesuffix(".npy") for i in zin.infolist()}
            for array in SORTED.values():
                if array in names and _order_name(array) not in names:
                    with zin.open(f"{array}.npy") as src:
                        values = np.lib.format.read_array(src, allow_pickle=False)
                    with zout.open(f"{_order_name(array)}.npy", "w", force_zip64=True) as dst:
                        np.lib.format.write_array(
                            dst, np.argsort(values, kind="stable").astype(np.int64), allow_pickle=False
                        )
        out.close()
        store.put_file(key, Path(path))
    return True


def migrate_all(*, db: Database, store: BlobStore) -> int:
    """Convert every report's old compressed scores file (see `migrate`); returns how many were."""
    done, after = 0, ""
    while True:
        with db.session() as session:
            rows = list(
                session.execute(
                    select(Report.screening_id, Report.scores_key)
                    .where(Report.screening_id > after)
                    .order_by(Report.screening_id)
                    .limit(500)
                )
            )
        for screening_id, key in rows:
            try:
                done += migrate(store, key)
            except (OSError, zipfile.BadZipFile, ValueError):
                log.warning("could not convert the scores of %s", screening_id, exc_info=True)
        if len(rows) < 500:
            return done
        after = rows[-1][0]


SCORE_SORTS = {
    "customer": ("max_sim", "topk_mean", "anchor_margin", "record"),
    "alignment": ("max_sim", "record"),
}


def scores_page(
    *,
    store: BlobStore,
    report: Report,
    side: str,
    sort: str,
    order: str,
    offset: int,
    limit: int,
    max_read_bytes: int = 256 << 20,
) -> tuple[list[dict[str, Any]], int]:
    """Per-example scores, sorted and paged: reads only the page's rows (app.screenings.scores)."""
    if side not in SCORE_SORTS:
        raise InvalidRequest("side must be 'customer' or 'alignment'", param="side")
    if sort not in SCORE_SORTS[side]:
        raise InvalidRequest(f"sort must be one of {list(SCORE_SORTS[side])}", param="sort")
    with Scores(store, report.scores_key, max_read_bytes=max_read_bytes) as z:
        if side == "customer" and sort == "anchor_margin" and Arrays.C_ANCHOR_MARGIN not in z:
            raise InvalidRequest("this screening ran without anchors", param="sort")
        n = z.rows(Arrays.C_MAX if side == "customer" else Arrays.A_MAX)
        array = None if sort == "record" else SORTED[(side, sort)]
        page = z.page_order(array, n, desc=order == "desc", offset=offset, limit=limit)
        if side == "alignment":
            a_max, a_arg = z.take(Arrays.A_MAX, page), z.take(Arrays.A_ARGMAX, page)
            rows = [
                {"record": int(i) + 1, "max_sim": float(m), "nearest_customer_record": int(j) + 1}
                for i, m, j in zip(page, a_max, a_arg, strict=True)
            ]
            return rows, n
        c_max, c_mean = z.take(Arrays.C_MAX, page), z.take(Arrays.C_TOPK_MEAN, page)
        margin = z.take(Arrays.C_ANCHOR_MARGIN, page) if Arrays.C_ANCHOR_MARGIN in z else None
        idx, sim = z.take(Arrays.C_TOPK_IDX, page), z.take(Arrays.C_TOPK_SIM, page)
    items: list[dict[str, Any]] = [
        {
            "record": int(i) + 1,
            "max_sim": float(c_max[p]),
            "topk_mean": float(c_mean[p]),
            "anchor_margin": float(margin[p]) if margin is not None else None,
            "nearest": [{"record": int(j) + 1, "sim": float(v)} for j, v in zip(idx[p], sim[p], strict=True)],
        }
        for p, i in enumerate(page)
    ]
    return items, n
