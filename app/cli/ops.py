"""`ftguard policy ...` and `ftguard webhooks ...`: a tenant's policies and the webhook dispatcher, straight
on the database (FTGUARD_DATABASE_URL or the SQLite default), like `ftguard admin`."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from app.core.config import get_settings
from app.core.errors import FtguardError

policy_app = typer.Typer(help="A tenant's decision policies (README: Policies).", no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhook deliveries (README: Webhooks).", no_args_is_help=True)
console = Console(stderr=True)
out = Console()
TenantOpt = Annotated[str, typer.Option(help="The tenant.")]


def _services() -> Any:
    from app.core.services import build_services

    return build_services(get_settings())


def _fail(message: str) -> None:
    console.print(f"[red]{message}[/red]")
    raise typer.Exit(2)


@policy_app.command("list")
def policy_list(tenant: TenantOpt = "default") -> None:
    """The tenant's policies at their latest versions (and the built-in default unless overridden)."""
    from app.policies import service

    services = _services()
    try:
        with services.db.session() as session:
            table = Table("name", "version", "rules", "row threshold", "otherwise")
            for p in service.list_(session=session, tenant_id=tenant):
                rules = "; ".join(
                    f"{r['metric']}{'/' + r['part'] if r.get('part') else ''} >= {r['threshold']:g} -> "
                    f"{r['decision']}"
                    for r in p.body["rules"]
                )
                table.add_row(
                    p.name,
                    str(p.version),
                    rules,
                    f"{p.body.get('row_threshold', 75):g}",
                    p.body.get("otherwise", "approve"),
                )
            out.print(table)
    finally:
        services.close()


@policy_app.command("set")
def policy_set(
    name: Annotated[str, typer.Argument(help="Policy name (a new version when it exists).")],
    file: Annotated[Path, typer.Argument(help="JSON: {rules, row_threshold?, otherwise?, description?}.")],
    tenant: TenantOpt = "default",
) -> None:
    """Write a new version of a policy from a JSON file."""
    from app.policies import service
    from app.policies.schemas import PolicyCreate

    try:
        body = PolicyCreate.model_validate({**json.loads(file.read_text()), "name": name})
    except (OSError, json.JSONDecodeError) as exc:
        _fail(f"cannot read {file}: {exc}")
        return
    except ValidationError as exc:
        _fail(f"invalid policy: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
        return
    services = _services()
    try:
        with services.db.session() as session:
            from app.models import Tenant
            from app.tenants.service import create_tenant

            if session.get(Tenant, tenant) is None:
                create_tenant(session=session, tenant_id=tenant)
            row = service.new_version(session=session, tenant_id=tenant, name=name, policy=body)
            console.print(f"policy {row.name} version {row.version} saved")
    finally:
        services.close()


@policy_app.command("delete")
def policy_delete(name: str, tenant: TenantOpt = "default") -> None:
    """Retire a policy (its versions stay for the screenings judged under them)."""
    from app.policies import service

    services = _services()
    try:
        with services.db.session() as session:
            service.delete(session=session, tenant_id=tenant, name=name)
            console.print(f"policy {name} deleted")
    except FtguardError as exc:
        _fail(exc.message)
    finally:
        services.close()


@policy_app.command("decide")
def policy_decide(
    screening_id: str,
    policy: Annotated[str | None, typer.Option(help="Policy name; default: the screening's.")] = None,
    version: Annotated[int | None, typer.Option(help="Policy version; default: the latest.")] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Judge a finished screening again under a policy, from its stored report (no recompute)."""
    from app.policies import service

    services = _services()
    try:
        with services.db.session() as session:
            scr = service.redecide(
                session=session,
                store=services.store,
                tenant_id=tenant,
                screening_id=screening_id,
                name=policy,
                version=version,
                max_read_bytes=services.settings.max_scores_read_bytes,
            )
            out.print_json(json.dumps({"decision": scr.decision, **(scr.decision_rule or {})}))
    except FtguardError as exc:
        _fail(exc.message)
    finally:
        services.close()


@webhooks_app.command("dispatch")
def webhooks_dispatch(
    loop: Annotated[bool, typer.Option(help="Keep sending every webhook_poll_s until stopped.")] = False,
) -> None:
    """Send due webhook deliveries (workers do this on their own; this is for API-only deployments)."""
    from app.webhooks import dispatch

    services = _services()
    try:
        if loop:
            dispatch.run_forever(db=services.db, settings=services.settings, stop=threading.Event())
        else:
            n = dispatch.dispatch_due(db=services.db, settings=services.settings)
            console.print(f"{n} delivery attempt(s) made")
    finally:
        services.close()
