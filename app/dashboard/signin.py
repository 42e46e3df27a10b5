"""Dashboard sign-in: a browser cannot put an API key in an Authorization header on a link, so the sign-in
form checks the key and keeps it in a cookie that the Authenticate middleware accepts on dashboard GET
pages only (HttpOnly: no script can read it; SameSite=Strict and Path=/dashboard: no other site and no
/v1 route ever receives it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import StateDep
from app.api.middleware import KEY_COOKIE, SIGN_IN
from app.core import proxy
from app.dashboard.routes import dashboard_base, page
from app.tenants import service as tenants

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def _safe_next(value: str) -> str:
    """Only a dashboard path: never a redirect to another site."""
    return value if value.startswith("/dashboard") and not value.startswith("//") else "/dashboard"


def _form(request: Request, *, next_: str, message: str = "", status_code: int = 200) -> HTMLResponse:
    return page(
        request,
        "sign_in.html",
        status_code=status_code,
        title="Sign in",
        signing_in=True,  # nobody is signed in yet: no "Sign out" in the header
        message=message,
        next=_safe_next(next_),
    )


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(
    request: Request, next: Annotated[str, Query(max_length=2000)] = "/dashboard"
) -> HTMLResponse:
    return _form(request, next_=next)


@router.post("/sign-in", response_model=None)
async def sign_in(
    request: Request,
    state: StateDep,
    key: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=2000)] = "/dashboard",
) -> Response:
    def check() -> bool:
        with state.services.db.session() as session:
            return tenants.authenticate(session=session, token=key.strip()) is not None

    if not await run_in_threadpool(check):
        return _form(request, next_=next, message="That key is not valid (or was revoked).", status_code=401)
    resp = RedirectResponse(f"{request.scope.get('root_path', '')}{_safe_next(next)}", status_code=303)
    resp.set_cookie(
        KEY_COOKIE,
        key.strip(),
        path=dashboard_base(request),
        httponly=True,
        samesite="strict",
        secure=proxy.cookie_secure(request, state.settings),
    )
    return resp


@router.post("/sign-out", response_model=None)
def sign_out(request: Request, state: StateDep) -> Response:
    resp = RedirectResponse(f"{request.scope.get('root_path', '')}{SIGN_IN}", status_code=303)
    resp.delete_cookie(
        KEY_COOKIE,
        path=dashboard_base(request),
        httponly=True,
        samesite="strict",
        secure=proxy.cookie_secure(request, state.settings),
    )
    return resp
