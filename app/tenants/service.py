"""Tenants and API keys: create, list, revoke, and turn a bearer token into a `Principal`.

A key is `ftg_` + 32 random bytes (base62-ish, from `secrets`). Only its SHA-256 is stored. A fast hash is
the right one here: a password hash (bcrypt, argon2) is slow on purpose to resist guessing a low-entropy
secret, but a 256-bit random key cannot be guessed, so there is nothing for slowness to buy, and a fast
hash lets every request be authenticated with one indexed lookup. The lookup is by hash, so no
secret-dependent comparison happens in Python. `prefix` (the first 12 characters) is kept in clear so an
operator can tell keys apart in a list; it reveals 8 random characters of 43, not enough to matter.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import page
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.models import ApiKey, Tenant, new_id, now

KEY_PREFIX = "ftg_"
DISPLAY_PREFIX_LEN = 12
ROLES = ("admin", "member")
# alignment:read: see the provider's alignment and anchor texts (previews, subsets, unredacted reports).
SCOPES = ("alignment:read",)
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant every query is filtered by, and what the key may do."""

    tenant_id: str
    key_id: str
    role: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


# --------------------------------------------------------------------------- tenants


def create_tenant(*, session: Session, tenant_id: str, name: str | None = None) -> Tenant:
    """A new tenant; its id is a slug (lower-case letters, digits, '-' and '_')."""
    if not TENANT_ID.match(tenant_id):
        raise InvalidRequest(
            "tenant id must be 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit",
            param="id",
            code="invalid_tenant_id",
        )
    if session.get(Tenant, tenant_id) is not None:
        raise Conflict(f"tenant {tenant_id!r} already exists", param="id", code="tenant_exists")
    tenant = Tenant(id=tenant_id, name=name or tenant_id)
    session.add(tenant)
    try:
        session.commit()
    except IntegrityError as exc:  # created by a concurrent request
        session.rollback()
        raise Conflict(f"tenant {tenant_id!r} already exists", param="id", code="tenant_exists") from exc
    return tenant


def get_tenant(*, session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}", param="tenant_id")
    return tenant


def list_tenants(*, session: Session, after: str | None = None, limit: int = 20) -> tuple[list[Tenant], bool]:
    q = select(Tenant)
    return page(session, q, Tenant.id, after=after, limit=limit, newest_first=False)


# --------------------------------------------------------------------------- keys


def create_key(
    *,
    session: Session,
    tenant_id: str,
    role: str = "member",
    scopes: list[str] | None = None,
    name: str = "",
) -> tuple[ApiKey, str]:
    """A new key for the tenant: the row, and the secret, which is returned here once and never again."""
    get_tenant(session=session, tenant_id=tenant_id)
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {list(ROLES)}", param="role", code="invalid_role")
    scopes = list(SCOPES) if scopes is None else sorted(set(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise InvalidRequest(
            f"unknown scope(s) {unknown}; known: {list(SCOPES)}", param="scopes", code="invalid_scope"
        )
    secret = generate_key()
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        prefix=secret[:DISPLAY_PREFIX_LEN],
        key_hash=hash_key(secret),
        role=role,
        scopes=scopes,
    )
    session.add(key)
    session.commit()
    return key, secret


def list_keys(
    *, session: Session, tenant_id: str | None = None, after: str | None = None, limit: int = 20
) -> tuple[list[ApiKey], bool]:
    """Newest first; every tenant's keys unless `tenant_id` is given."""
    q = select(ApiKey)
    if tenant_id:
        q = q.where(ApiKey.tenant_id == tenant_id)
    return page(session, q, ApiKey.id, after=after, limit=limit)


def revoke_key(*, session: Session, key_id: str) -> ApiKey:
    """Revoke a key (by id or display prefix); it stops working on the next request. Revoking twice is
    harmless."""
    key = session.get(ApiKey, key_id)
    if key is None:
        matches = list(session.scalars(select(ApiKey).where(ApiKey.prefix == key_id).limit(2)))
        key = matches[0] if len(matches) == 1 else None
    if key is None:
        raise NotFound(f"no API key {key_id!r}", param="key_id")
    if key.revoked_at is None:
        key.revoked_at = now()
        session.commit()
    return key


def authenticate(*, session: Session, token: str) -> Principal | None:
    """The principal a bearer token stands for, or None for an unknown or revoked key."""
    if not token.startswith(KEY_PREFIX) or len(token) > 200:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(token)))
    if key is None or key.revoked_at is not None:
        return None
    return Principal(tenant_id=key.tenant_id, key_id=key.id, role=key.role, scopes=frozenset(key.scopes))
