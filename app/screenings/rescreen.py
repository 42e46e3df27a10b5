"""Screen a variant of a finished screening (`app.screenings.variants`) with one request.

The variant is stored as a new fine-tune dataset of the tenant, validated like an upload (its bytes
shared with an identical upload; an identical earlier variant reused), and screened against the same
alignment set with the baseline's parameters and policy. The new screening's `baseline` (kept in its
params) names the screening it came from with that one's risk, so the report shows before and after.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from app.access import require_alignment_read
from app.core.errors import InvalidRequest
from app.core.services import Ctx, Services
from app.core.storage import staged_file
from app.datasets import service as datasets
from app.datasets.containers import writers
from app.models import Dataset, Screening
from app.screenings import service as screenings
from app.screenings.variants import Variant, augmented, subset


def store_variant(*, services: Services, tenant_id: str, v: Variant) -> Dataset:
    """The variant as a fine-tune dataset of the tenant: validated like an upload (`datasets.create`),
    or the tenant's ready fine-tune dataset with the same bytes when there is one."""
    store = services.store
    stem = v.source_filename.split(".")[0] or "dataset"
    with staged_file(store, suffix=".variant") as (path, fh):
        try:
            writers.write_file(v.container, v.records(), v.shape, fh)
        except (ValueError, TypeError) as exc:  # an alignment record that does not fit after all
            raise InvalidRequest(
                f"the {v.name} set cannot be written as {v.container}: {str(exc)[:200]}",
                code="variant_unwritable",
            ) from exc
        fh.close()
        sha = hashlib.sha256()
        with path.open("rb") as src:
            while chunk := src.read(1 << 20):
                sha.update(chunk)
        with services.db.session() as s:
            same = s.scalar(
                select(Dataset)
                .where(
                    Dataset.tenant_id == tenant_id,
                    Dataset.sha256 == sha.hexdigest(),
                    Dataset.purpose == "fine-tune",
                    Dataset.status == "ready",
                )
                .limit(1)
            )
        if same is None:
            with path.open("rb") as src:
                same = datasets.create(
                    services=services,
                    tenant_id=tenant_id,
                    src=src,
                    filename=v.filename(stem),
                    purpose="fine-tune",
                    fmt=v.fmt,
                    container=v.container,
                )
    if v.added:  # it holds alignment records: their texts need the scope wherever they show
        with services.db.session() as s:
            row = s.get(Dataset, same.id)
            assert row is not None
            row.stats = {**(row.stats or {}), "derived": {"variant": v.name, "alignment_records": v.added}}
            s.commit()
            return row
    return same


def rescreen(
    ctx: Ctx,
    services: Services,
    *,
    screening_id: str,
    variant: str,
    alignment_access: bool,
    share: float = 0.1,
    selection: str = "random",
    seed: int = 0,
    filtered: bool = False,
) -> Screening:
    """Store the variant of a finished screening and screen it against the same alignment set, with the
    same parameters and policy; the new screening's `baseline` names the one it came from, with its
    risk, so before and after read side by side."""
    session, settings, tenant_id, store = ctx.session, ctx.settings, ctx.tenant_id, services.store
    scr = screenings.get(session=session, tenant_id=tenant_id, screening_id=screening_id)
    report = screenings.get_report(session=session, tenant_id=tenant_id, screening_id=screening_id)
    if variant == "augmented":
        require_alignment_read(alignment_access, "an augmented dataset holds alignment records")
        v = augmented(
            session=session,
            store=store,
            settings=settings,
            scr=scr,
            report=report,
            share=share,
            selection=selection,
            seed=seed,
            filtered=filtered,
        )
    elif variant == "filtered":
        v = subset(session=session, store=store, settings=settings, scr=scr, report=report, name="filtered")
    else:
        raise InvalidRequest(
            "variant must be 'filtered' or 'augmented'", param="variant", code="invalid_variant"
        )
    if v.kept + v.added == 0:
        raise InvalidRequest(
            f"every row of screening {scr.id} is flagged: the filtered set is empty",
            param="variant",
            code="empty_variant",
        )
    ds = store_variant(services=services, tenant_id=tenant_id, v=v)
    detail = v.summary()
    if variant == "augmented":
        detail |= {"share": share, "selection": selection, "seed": seed, "filtered": filtered}
    baseline = {
        "screening_id": scr.id,
        "dataset_id": scr.dataset_id,
        "risk_score": scr.risk_score,
        "tier": scr.tier,
        "decision": scr.decision,
        **detail,
    }
    params = {k: val for k, val in scr.params.items() if k != "baseline"} | {"baseline": baseline}
    return screenings.create(
        ctx,
        dataset_id=ds.id,
        alignment_dataset_id=scr.alignment_dataset_id,
        params=params,
        policy=scr.policy,
    )
