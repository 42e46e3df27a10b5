"""Policies: create, version, read and delete a tenant's policies; judge a screening under one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import events
from app.core.db import owned
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.core.storage import BlobStore
from app.core.vocab import EventType
from app.models import Policy, Report, Screening, new_id, now
from app.policies import decide
from app.policies.schemas import PolicyBody
from app.screenings import scores


class Builtin:
    """The built-in default policy, shaped like a stored row (version 0, never stored)."""

    id = "pol_builtin_default"
    name = decide.DEFAULT_NAME
    version = 0
    created_at = 0
    description = "Built-in default policy (README: Policies)."
    body = decide.DEFAULT_POLICY
    deleted_at = None


PolicyLike = Policy | Builtin


def _latest(session: Session, tenant_id: str, name: str) -> Policy | None:
    return session.scalar(
        select(Policy)
        .where(Policy.tenant_id == tenant_id, Policy.name == name)
        .order_by(Policy.version.desc())
        .limit(1)
    )


def create(*, session: Session, tenant_id: str, name: str, policy: PolicyBody) -> Policy:
    """Version 1 of a new policy (Conflict when the name is taken; PUT makes a new version)."""
    current = _latest(session, tenant_id, name)
    if current is not None and current.deleted_at is None:
        raise Conflict(f"a policy named {name!r} exists; PUT /v1/policies/{name} makes a new version")
    return _add(session, tenant_id, name, policy, (current.version if current else 0) + 1)


def new_version(*, session: Session, tenant_id: str, name: str, policy: PolicyBody) -> Policy:
    """The next version of a policy; the first one when it does not exist yet (so `default` can be
    overridden with a PUT)."""
    current = _latest(session, tenant_id, name)
    return _add(session, tenant_id, name, policy, (current.version if current else 0) + 1)


def _add(session: Session, tenant_id: str, name: str, policy: PolicyBody, v: int) -> Policy:
    row = Policy(
        id=new_id("pol"),
        tenant_id=tenant_id,
        name=name,
        version=v,
        description=policy.description,
        body=policy.stored(),
    )
    session.add(row)
    session.commit()
    return row


def get(*, session: Session, tenant_id: str, name: str, version: int | None = None) -> PolicyLike:
    """A policy's latest (or given) version; `default` is the built-in one until the tenant writes one."""
    q = select(Policy).where(Policy.tenant_id == tenant_id, Policy.name == name)
    if version is not None:
        q = q.where(Policy.version == version)
    row = session.scalar(q.order_by(Policy.version.desc()).limit(1))
    if row is not None and (row.deleted_at is None or version is not None):
        return row
    if name == decide.DEFAULT_NAME and version in (None, 0):
        return Builtin()
    what = f"no policy {name!r}" + ("" if version is None else f" version {version}")
    raise NotFound(what, param="policy", code="policy_not_found")


def list_(*, session: Session, tenant_id: str) -> list[PolicyLike]:
    """Each live policy at its latest version, by name; the built-in default unless overridden."""
    latest = (
        select(Policy.name, func.max(Policy.version).label("v"))
        .where(Policy.tenant_id == tenant_id)
        .group_by(Policy.name)
        .subquery()
    )
    rows = list(
        session.scalars(
            select(Policy)
            .join(latest, (Policy.name == latest.c.name) & (Policy.version == latest.c.v))
            .where(Policy.tenant_id == tenant_id, Policy.deleted_at.is_(None))
            .order_by(Policy.name)
        )
    )
    out: list[PolicyLike] = list(rows)
    if all(r.name != decide.DEFAULT_NAME for r in rows):
        out.insert(0, Builtin())
    return out


def versions(*, session: Session, tenant_id: str, name: str) -> list[Policy]:
    rows = list(
        session.scalars(
            select(Policy).where(Policy.tenant_id == tenant_id, Policy.name == name).order_by(Policy.version)
        )
    )
    if not rows:
        raise NotFound(f"no policy {name!r}", param="policy", code="policy_not_found")
    return rows


def delete(*, session: Session, tenant_id: str, name: str) -> None:
    """Retire a policy: its versions stay (screenings judged under them keep pointing at them)."""
    rows = [r for r in versions(session=session, tenant_id=tenant_id, name=name) if r.deleted_at is None]
    if not rows:
        raise NotFound(f"no policy {name!r}", param="policy", code="policy_not_found")
    for r in rows:
        r.deleted_at = now()
    session.commit()


def check_name(*, session: Session, tenant_id: str, name: str | None) -> None:
    """InvalidRequest unless `name` (when given) is a live policy of the tenant."""
    if name is None:
        return
    try:
        get(session=session, tenant_id=tenant_id, name=name)
    except NotFound as exc:
        raise InvalidRequest(f"no policy {name!r}", param="policy", code="policy_not_found") from exc


class _Arrays:
    """The scores file read as a mapping of whole arrays (only those the decision needs are read)."""

    def __init__(self, z: scores.Scores) -> None:
        self.z = z

    def __contains__(self, name: str) -> bool:
        return name in self.z

    def __getitem__(self, name: str) -> Any:
        return self.z.whole(name)

    def get(self, name: str) -> Any:
        return self.z.whole(name) if name in self.z else None


def facts_of(*, store: BlobStore, report: Report, max_read_bytes: int) -> decide.Facts:
    """The decision's facts of a stored report: the body plus the scores file, no recompute."""
    with scores.Scores(store, report.scores_key, max_read_bytes=max_read_bytes) as z:
        return decide.facts(report.body, _Arrays(z))


def apply(session: Session, scr: Screening, policy: PolicyLike, f: decide.Facts) -> dict[str, Any]:
    """Set the screening's decision under `policy` and record `decision.made` (the caller commits, so the
    decision, its event and its webhook outbox rows are one transaction)."""
    out = decide.evaluate(policy.body, f)
    scr.decision, scr.policy_version = out["decision"], policy.version
    scr.decision_rule = {"policy": policy.name, "policy_version": policy.version, **out}
    rule = out["rule"]
    why = (
        "no rule fired"
        if rule is None
        else f"{rule['metric']}{'/' + rule['part'] if rule['part'] else ''} {rule['value']:g} >= "
        f"{rule['threshold']:g}"
    )
    events.record_on(
        session,
        scr,
        EventType.DECISION_MADE,
        f"{out['decision']} under policy {policy.name} v{policy.version}: {why}",
        data={"decision": out["decision"], "policy": policy.name, "policy_version": policy.version},
    )
    return out


def policy_for(session: Session, scr: Screening) -> PolicyLike:
    """The policy a screening is judged under at finish: the one it named, or the tenant's default. A
    named policy deleted since falls back to the default (the decision says which one it used)."""
    try:
        return get(session=session, tenant_id=scr.tenant_id, name=scr.policy or decide.DEFAULT_NAME)
    except NotFound:
        return get(session=session, tenant_id=scr.tenant_id, name=decide.DEFAULT_NAME)


def redecide(
    *,
    session: Session,
    store: BlobStore,
    tenant_id: str,
    screening_id: str,
    name: str | None,
    version: int | None,
    max_read_bytes: int,
) -> Screening:
    """Judge a finished screening again under a policy (default: the one it names, at its latest
    version), from its stored report: nothing is recomputed."""
    scr = owned(session, Screening, screening_id, tenant_id, what="screening", param="screening_id")
    report = session.get(Report, scr.id)
    if report is None:
        raise Conflict(f"screening {scr.id} has no report (status {scr.status})", code="report_not_ready")
    pol = get(
        session=session, tenant_id=tenant_id, name=name or scr.policy or decide.DEFAULT_NAME, version=version
    )
    f = facts_of(store=store, report=report, max_read_bytes=max_read_bytes)
    scr.policy = pol.name
    apply(session, scr, pol, f)
    session.commit()
    return scr
