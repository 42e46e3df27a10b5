"""Policies: named, versioned rules that decide approve, review or reject when a screening finishes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.api.deps import SQL_INT_MAX, SessionDep, TenantDep
from app.api.errors import AUTH_RESPONSES, WRITE_RESPONSES
from app.api.responses import resource_errors, write
from app.policies import service
from app.policies.schemas import NAME_PATTERN, PolicyBody, PolicyCreate, PolicyPublic
from app.schemas import Page

router = APIRouter(prefix="/v1/policies", tags=["policies"], responses=AUTH_RESPONSES)
ERRORS = resource_errors("No such policy (or version) for this tenant.")
NameParam = Annotated[str, Path(pattern=NAME_PATTERN)]


@router.post("", **write(PolicyPublic, ERRORS, created=True))
def create_policy(body: PolicyCreate, session: SessionDep, tenant: TenantDep) -> PolicyPublic:
    """Version 1 of a new policy (409 when the name exists: PUT adds a version)."""
    return PolicyPublic.of(service.create(session=session, tenant_id=tenant, name=body.name, policy=body))


@router.get("", response_model=Page[PolicyPublic], responses=ERRORS)
def list_policies(session: SessionDep, tenant: TenantDep) -> Page[PolicyPublic]:
    """Every policy at its latest version; the built-in `default` (version 0) until the tenant writes one."""
    rows = service.list_(session=session, tenant_id=tenant)
    return Page[PolicyPublic].whole([PolicyPublic.of(r) for r in rows])


@router.get("/{name}", response_model=PolicyPublic, responses=ERRORS)
def get_policy(
    name: NameParam,
    session: SessionDep,
    tenant: TenantDep,
    version: Annotated[int | None, Query(ge=0, le=SQL_INT_MAX)] = None,
) -> PolicyPublic:
    return PolicyPublic.of(service.get(session=session, tenant_id=tenant, name=name, version=version))


@router.get("/{name}/versions", response_model=Page[PolicyPublic], responses=ERRORS)
def list_versions(name: NameParam, session: SessionDep, tenant: TenantDep) -> Page[PolicyPublic]:
    rows = service.versions(session=session, tenant_id=tenant, name=name)
    return Page[PolicyPublic].whole([PolicyPublic.of(r) for r in rows])


@router.put("/{name}", response_model=PolicyPublic, responses={**ERRORS, **WRITE_RESPONSES})
def put_policy(name: NameParam, body: PolicyBody, session: SessionDep, tenant: TenantDep) -> PolicyPublic:
    """A new version of the policy (version 1 when it is new). Screenings already judged keep theirs."""
    return PolicyPublic.of(service.new_version(session=session, tenant_id=tenant, name=name, policy=body))


@router.delete("/{name}", status_code=204, responses=ERRORS)
def delete_policy(name: NameParam, session: SessionDep, tenant: TenantDep) -> Response:
    """Retire the policy; its versions stay readable with `?version=`."""
    service.delete(session=session, tenant_id=tenant, name=name)
    return Response(status_code=204)
