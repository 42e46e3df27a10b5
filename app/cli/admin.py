"""`ftguard admin`: tenants and API keys, straight on the database (FTGUARD_DATABASE_URL or the SQLite
default), run by the operator on a machine that can reach it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from app.cli.local import console
from app.core.config import get_settings
from app.core.errors import FtguardError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

admin_app = typer.Typer(
    help="Tenants and API keys, straight on the database (FTGUARD_DATABASE_URL or the SQLite default)."
)


def open_services() -> Any:
    from app.core.services import build_services

    return build_services(get_settings())


@contextmanager
def _session() -> Iterator[Session]:
    """A database session for one command; a refused change (FtguardError) is one red line and exit 2."""
    services = open_services()
    try:
        with services.db.session() as session:
            yield session
    except FtguardError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    finally:
        services.close()


def hint_first_key() -> None:
    from sqlalchemy import func, select

    from app.models import ApiKey

    services = open_services()
    with services.db.session() as session:
        keys = session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None)))
    services.close()
    if not keys:
        console.print(
            "[yellow]No API key yet. Create one (against this same data dir) with:\n"
            "  ftguard admin create-key --tenant default --admin[/yellow]"
        )


@admin_app.command("create-tenant")
def admin_create_tenant(
    tenant_id: Annotated[str, typer.Argument(help="Slug: a-z, 0-9, '-' and '_'.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
) -> None:
    """Create a tenant."""
    from app.tenants import service

    with _session() as session:
        t = service.create_tenant(session=session, tenant_id=tenant_id, name=name)
        console.print(f"tenant {t.id} created")


@admin_app.command("create-key")
def admin_create_key(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for.")],
    admin: Annotated[bool, typer.Option("--admin", help="An admin key (tenants and keys of all).")] = False,
    name: Annotated[str, typer.Option(help="A label for people.")] = "",
    scopes: Annotated[
        str | None,
        typer.Option(help="Comma-separated scopes (default: all; '' for none, i.e. redacted reports)."),
    ] = None,
) -> None:
    """Create an API key and print it once, alone on stdout (only its SHA-256 is kept)."""
    from app.tenants import service

    with _session() as session:
        key, secret = service.create_key(
            session=session,
            tenant_id=tenant,
            role="admin" if admin else "member",
            scopes=None if scopes is None else [x.strip() for x in scopes.split(",") if x.strip()],
            name=name,
        )
        console.print(
            f"key {key.id} ({key.prefix}..., {key.role}, tenant {key.tenant_id}, scopes {key.scopes}); "
            "it is shown once, store it now:"
        )
        typer.echo(secret)


@admin_app.command("list-keys")
def admin_list_keys(tenant: Annotated[str | None, typer.Option(help="Only this tenant's.")] = None) -> None:
    """List keys (id, prefix, tenant, role, scopes, revoked); never the secrets."""
    from app.tenants import service

    services = open_services()
    t = Table(title="API keys")
    for col in ("id", "prefix", "tenant", "role", "scopes", "name", "revoked"):
        t.add_column(col)
    with services.db.session() as session:
        after = None
        while True:
            rows, more = service.list_keys(session=session, tenant_id=tenant, after=after, limit=100)
            for k in rows:
                t.add_row(
                    k.id,
                    k.prefix,
                    k.tenant_id,
                    k.role,
                    ",".join(k.scopes),
                    k.name,
                    "yes" if k.revoked_at else "",
                )
            if not more:
                break
            after = rows[-1].id
    services.close()
    Console().print(t)


@admin_app.command("revoke-key")
def admin_revoke_key(key_id: Annotated[str, typer.Argument(help="Key id (key_...) or its prefix.")]) -> None:
    """Revoke a key: its next request gets a 401."""
    from app.tenants import service

    with _session() as session:
        key = service.revoke_key(session=session, key_id=key_id)
        console.print(f"key {key.id} ({key.prefix}...) revoked")
