"""Datasets derived from a finished screening, and screening them again.

* `filtered`: the customer's records minus the flagged rows (row score above the policy's row threshold,
  `app.policies.flagged`), in upload order;
* `flagged`: the flagged rows alone, in upload order;
* `augmented`: the customer's records (optionally filtered) with a share of safety examples from the
  screening's alignment set spread evenly through them (SafeInstr-style, Bianchi et al. 2024);
  `selection=nearest` takes the alignment records most similar to the customer data (the stored `a_max`,
  each alignment record's highest cosine to any customer example), `random` a seeded sample.

Each is streamed in the customer's own records and container (`app.datasets.containers.writers`): the
stream reads the dataset blobs once, record by record, so memory is one batch whatever the size. An
augmented set keeps the customer's form when the alignment records fit it (the same format, or
`openai-chat` messages for an `openai-chat` customer, and the container's columns); otherwise the whole
mix is JSON lines of `openai-chat` messages (`form: chat`).

`app.screenings.rescreen` stores one as a dataset and screens it again.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.access import holds_alignment, require_alignment_read
from app.core.config import Settings
from app.core.errors import InvalidRequest, NotFound
from app.core.storage import BlobStore, dataset_key
from app.core.vocab import SELECTIONS
from app.datasets.containers import read_records, split, writers
from app.datasets.records import Example, RawRecord, RecordError
from app.datasets.validate import iter_examples
from app.models import Dataset, Report, Screening
from app.policies import decide, flagged
from app.policies import service as policies
from app.screenings import scores

VARIANTS = ("filtered", "flagged", "augmented")
CHAT_FORMAT = "openai-chat"


@dataclass(frozen=True)
class Blob:
    """What streaming a dataset needs, copied out of its row: the stream runs after the request's
    database session has closed."""

    id: str
    key: str
    container: str
    fmt: str
    filename: str

    @classmethod
    def of(cls, ds: Dataset) -> Blob:
        assert ds.sha256 and ds.container and ds.format
        return cls(ds.id, dataset_key(ds.sha256), ds.container, ds.format, ds.filename)


@dataclass
class Variant:
    """A derived dataset ready to stream (`chunks`) or store (`rescreen`)."""

    name: str
    container: str
    fmt: str  # the format its records are in (the customer's, or openai-chat for form "chat")
    form: str  # "original": the customer's own records and container; "chat": JSONL chat messages
    shape: writers.Shape
    records: Callable[[], Iterator[Any]]  # a fresh pass over the records at each call
    kept: int  # customer records in it
    removed: int  # flagged customer records left out
    added: int  # alignment records mixed in
    source_filename: str

    def chunks(self) -> Iterator[bytes]:
        return writers.stream(self.container, self.records(), self.shape)

    @property
    def media_type(self) -> str:
        return writers.media_type(self.container)

    def filename(self, stem: str) -> str:
        return f"{stem}-{self.name}.{self.container}"

    def summary(self) -> dict[str, Any]:
        return {
            "variant": self.name,
            "form": self.form,
            "kept": self.kept,
            "removed": self.removed,
            "added": self.added,
        }


def _raw(store: BlobStore, blob: Blob, max_line_bytes: int) -> Generator[RawRecord, None, None]:
    with store.open(blob.key) as fh:
        for item in read_records(
            fh, blob.container, max_line_bytes=max_line_bytes, max_row_group_bytes=1 << 62
        ):
            if isinstance(item, RecordError):  # a stored dataset was valid: its blob changed under us
                raise item
            yield item


def _examples(store: BlobStore, blob: Blob, max_line_bytes: int) -> Iterator[tuple[RawRecord, Example]]:
    with store.open(blob.key) as fh:
        yield from iter_examples(fh, container=blob.container, fmt=blob.fmt, max_line_bytes=max_line_bytes)


def shape_of(store: BlobStore, blob: Blob, max_line_bytes: int) -> writers.Shape:
    """The CSV header (the first record's fields, as read) or the Parquet schema of a stored dataset."""
    inner, _ = split(blob.container)
    if inner == "csv":
        first = _raw(store, blob, max_line_bytes)
        try:
            rec = next(first, None)
        finally:
            first.close()
        return writers.Shape(columns=tuple(rec.value) if rec is not None else None)
    if inner == "parquet":
        import pyarrow.parquet as pq

        with store.open(blob.key) as fh:
            return writers.Shape(schema=pq.read_schema(fh))
    return writers.Shape()


def as_chat(ex: Example) -> dict[str, Any]:
    """An example as an `openai-chat` record: its messages' roles and texts (tool calls rendered into the
    text, as screened), context turns as `weight: 0`."""
    skip = set(ex.context_turns)
    msgs = []
    for i, m in enumerate(ex.messages):
        out = {"role": m["role"], "content": m["content"]}
        if m["role"] == "assistant" and i in skip:
            out["weight"] = 0
        msgs.append(out)
    return {"messages": msgs}


def _customer(session: Session, scr: Screening) -> Dataset:
    ds = session.get(Dataset, scr.dataset_id)
    if ds is None:
        raise NotFound("the customer dataset of this screening was deleted")
    return ds


def flagged_mask(
    *, session: Session, store: BlobStore, settings: Settings, scr: Screening, report: Report
) -> np.ndarray:
    """One bool per customer example: flagged under the policy the screening was judged under."""
    f = policies.facts_of(store=store, report=report, max_read_bytes=settings.max_scores_read_bytes)
    mask = np.zeros(f.row_scores.size, dtype=bool)
    mask[decide.flagged(f, flagged.row_threshold(session, scr))] = True
    return mask


def subset(
    *, session: Session, store: BlobStore, settings: Settings, scr: Screening, report: Report, name: str
) -> Variant:
    """`filtered` (the unflagged records) or `flagged` (the flagged ones), in the customer's form."""
    if name not in ("filtered", "flagged"):
        raise ValueError(name)
    blob = Blob.of(_customer(session, scr))
    mask = flagged_mask(session=session, store=store, settings=settings, scr=scr, report=report)
    want = name == "flagged"
    mlb = settings.max_line_bytes

    def records() -> Iterator[Any]:
        for rec in _raw(store, blob, mlb):
            i = rec.record - 1
            if bool(i < mask.size and mask[i]) == want:
                yield rec.value

    n_flagged = int(mask.sum())
    return Variant(
        name=name,
        container=blob.container,
        fmt=blob.fmt,
        form="original",
        shape=shape_of(store, blob, mlb),
        records=records,
        kept=n_flagged if want else mask.size - n_flagged,
        removed=0 if want else n_flagged,
        added=0,
        source_filename=blob.filename,
    )


def choose(
    store: BlobStore, settings: Settings, report: Report, *, n_align: int, n: int, selection: str, seed: int
) -> np.ndarray:
    """The alignment records (0-based, ascending) to mix in: the `n` with the highest stored `a_max`
    (ties by record order), or `n` drawn without replacement with `seed`."""
    if selection == "nearest":
        with scores.Scores(store, report.scores_key, max_read_bytes=settings.max_scores_read_bytes) as z:
            a_max = np.asarray(z.whole(scores.Arrays.A_MAX), dtype=np.float64)
        order = np.argsort(-a_max, kind="stable")[:n]
    elif selection == "random":
        order = np.random.default_rng(seed).choice(n_align, size=n, replace=False)
    else:
        raise InvalidRequest(f"selection must be one of {list(SELECTIONS)}", param="selection")
    return np.sort(order.astype(np.int64))


def fits(container: str, shape: writers.Shape, value: Any) -> bool:
    """Whether a record can be written in the customer's container next to its records: an object whose
    fields are CSV columns (text only) or Parquet schema fields of matching types."""
    if not isinstance(value, dict):
        return False
    inner, _ = split(container)
    if inner == "csv":
        return (
            shape.columns is not None
            and set(value) <= set(shape.columns)
            and all(v is None or isinstance(v, str) for v in value.values())
        )
    if inner == "parquet":
        import pyarrow as pa

        if not set(value) <= set(shape.schema.names):
            return False
        try:
            pa.Table.from_pylist([value], schema=shape.schema)
        except (pa.ArrowException, TypeError, ValueError):
            return False
    return True


def _interleave(customer: Iterator[Any], safety: Iterator[Any], n_c: int, n_add: int) -> Iterator[Any]:
    """Safety records spread evenly through the customer's: the j-th (0-based) goes after
    floor((j+1) n_c / (n_add+1)) customer records, so a fine-tune that does not shuffle still meets them
    all along."""
    j = 0
    for k, value in enumerate(customer):
        while j < n_add and (j + 1) * n_c // (n_add + 1) <= k:
            yield next(safety)
            j += 1
        yield value
    yield from safety


def augmented(
    *,
    session: Session,
    store: BlobStore,
    settings: Settings,
    scr: Screening,
    report: Report,
    share: float,
    selection: str,
    seed: int,
    filtered: bool,
) -> Variant:
    """The customer's records (minus the flagged ones with `filtered`) and round(share x their count)
    alignment records (at least one, at most the alignment set)."""
    if not 0 < share <= 1:
        raise InvalidRequest("share must be above 0 and at most 1", param="share", code="invalid_share")
    cust = Blob.of(_customer(session, scr))
    align_ds = session.get(Dataset, scr.alignment_dataset_id)
    if align_ds is None:
        raise NotFound("the alignment dataset of this screening was deleted")
    align = Blob.of(align_ds)
    mask = flagged_mask(session=session, store=store, settings=settings, scr=scr, report=report)
    drop = mask if filtered else np.zeros_like(mask)
    n_c = int(drop.size - drop.sum())
    n_add = int(min(align_ds.examples, max(1, round(share * n_c))))
    chosen = choose(
        store, settings, report, n_align=align_ds.examples, n=n_add, selection=selection, seed=seed
    )
    wanted = set(chosen.tolist())
    mlb = settings.max_line_bytes
    shape = shape_of(store, cust, mlb)

    def safety_examples() -> Generator[tuple[RawRecord, Example], None, None]:
        for rec, ex in _examples(store, align, mlb):
            if rec.record - 1 in wanted:
                yield rec, ex

    first = safety_examples()
    try:
        head = next(first, None)
    finally:
        first.close()
    if head is None:
        raise NotFound("the alignment dataset of this screening holds fewer records than it did")
    rec0, ex0 = head
    if align.fmt == cust.fmt and fits(cust.container, shape, rec0.value):
        form, container, fmt = "original", cust.container, cust.fmt
        to_safety: Callable[[RawRecord, Example], Any] = lambda rec, ex: rec.value  # noqa: E731
    elif cust.fmt == CHAT_FORMAT and fits(cust.container, shape, as_chat(ex0)):
        form, container, fmt = "original", cust.container, cust.fmt
        to_safety = lambda rec, ex: as_chat(ex)  # noqa: E731
    else:
        form, container, fmt, shape = "chat", "jsonl", CHAT_FORMAT, writers.Shape()
        to_safety = lambda rec, ex: as_chat(ex)  # noqa: E731

    def customer_records() -> Iterator[Any]:
        if form == "chat":
            for rec, ex in _examples(store, cust, mlb):
                if not (rec.record - 1 < drop.size and drop[rec.record - 1]):
                    yield as_chat(ex)
            return
        for rec in _raw(store, cust, mlb):
            if not (rec.record - 1 < drop.size and drop[rec.record - 1]):
                yield rec.value

    def records() -> Iterator[Any]:
        safety = (to_safety(rec, ex) for rec, ex in safety_examples())
        yield from _interleave(customer_records(), safety, n_c, n_add)

    return Variant(
        name="augmented",
        container=container,
        fmt=fmt,
        form=form,
        shape=shape,
        records=records,
        kept=n_c,
        removed=int(drop.sum()),
        added=n_add,
        source_filename=cust.filename,
    )


def guard(session: Session, scr: Screening, alignment_access: bool) -> None:
    """Forbidden without the scope when the screening's customer data holds alignment records (an
    augmented set re-screened): its records, report and rows show those texts."""
    ds = session.get(Dataset, scr.dataset_id)
    if ds is not None and holds_alignment(ds):
        require_alignment_read(alignment_access, "this screening's customer data holds alignment records")
