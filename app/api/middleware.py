"""ASGI middleware, outermost first: request context (request id, access log, metrics), body size limit,
authentication and rate limit, idempotency capture.

Authentication runs here, before FastAPI reads the body, so an unauthenticated or rate-limited client is
turned away before a byte of its upload is spooled; the route dependency only reads the principal back.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import quote

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import idempotency
from app.api.errors import envelope
from app.core import logs
from app.core.errors import FtguardError, ServiceUnavailable, TooManyRequests, Unauthorized
from app.core.metrics import ApiMetrics
from app.tenants import service as tenants

log = logging.getLogger("ftguard.api")
access = logging.getLogger("ftguard.access")
UPLOAD_ROUTES = {("POST", "/v1/datasets")}
MULTIPART_OVERHEAD = 1 << 20
# The dashboard's pages take the key from a cookie (a link cannot carry a header), set by its sign-in form.
# Only its GET pages do: a cookie is sent by the browser on its own, so accepting it on a write (or on the
# JSON API) would invite cross-site request forgery.
KEY_COOKIE = "ftguard_key"
DASHBOARD = "/dashboard"
SIGN_IN = "/dashboard/sign-in"
OPEN_DASHBOARD_PATHS = (SIGN_IN, "/dashboard/sign-out", "/dashboard/static/")
# A caller's id is kept when it is short and plain, so it can be logged and echoed safely.
VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return bytes(v)
    return None


async def _send_error(exc: FtguardError, scope: Scope, receive: Receive, send: Send) -> None:
    resp = envelope(exc.status_code, exc.message, exc.type, exc.code, exc.param)
    resp.headers.update(exc.headers())
    await resp(scope, receive, send)


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` when a body without (or with a lying) Content-Length passes the limit; FastAPI
    re-raises HTTP exceptions met while reading the body, so it reaches the envelope handler."""

    def __init__(self, limit: int, code: str) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.code = code


class BodySizeLimit:
    """Refuse a body over the limit: at once when the declared length says so, else while it streams.

    Uploads may be as large as `max_upload_bytes` (plus multipart framing); every other route takes JSON
    of at most `max_json_body_bytes`.
    """

    def __init__(self, app: ASGIApp, max_upload_bytes: int, max_json_bytes: int) -> None:
        self.app = app
        self.max_upload = max_upload_bytes + MULTIPART_OVERHEAD
        self.max_json = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = (scope["method"], scope["path"].rstrip("/")) in UPLOAD_ROUTES
        limit, code = (self.max_upload, "file_too_large") if upload else (self.max_json, "request_too_large")
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            resp = envelope(413, f"request body larger than {limit} bytes", "invalid_request_error", code)
            await resp(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit, code)
            return message

        await self.app(scope, limited, send)


def _cookie(scope: Scope, name: str) -> str | None:
    raw = (_header(scope, b"cookie") or b"").decode("latin-1")
    for part in raw.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name and v:
            return v
    return None


def _protected(scope: Scope) -> bool:
    path = scope["path"]
    if path.startswith("/v1/"):
        return True
    in_dashboard = path == DASHBOARD or path.startswith(DASHBOARD + "/")
    return in_dashboard and not path.startswith(OPEN_DASHBOARD_PATHS)


class Authenticate:
    """`Authorization: Bearer <key>` on every /v1 route and dashboard page (or, on dashboard GETs, the key
    from the sign-in cookie), then the tenant's rate limit. A dashboard page without a valid key redirects
    to the sign-in form; the JSON API answers 401."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _protected(scope):
            await self.app(scope, receive, send)
            return
        page = not scope["path"].startswith("/v1/")
        raw = _header(scope, b"authorization") or b""
        scheme, _, token = raw.decode("latin-1").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if not token and page and scope["method"] in ("GET", "HEAD"):
            token = _cookie(scope, KEY_COOKIE) or ""
        if not token:
            if page:
                await _to_sign_in(scope, receive, send)
                return
            err = Unauthorized("missing API key: send `Authorization: Bearer <key>`", code="missing_api_key")
            await _send_error(err, scope, receive, send)
            return
        state = scope["app"].state.ftguard

        def check() -> tenants.Principal | FtguardError:
            try:
                with state.services.db.session() as session:
                    principal = tenants.authenticate(session=session, token=token)
            except SQLAlchemyError:
                log.exception("authentication failed: database error")
                return ServiceUnavailable("the database is unavailable; retry shortly")
            if principal is None:
                return Unauthorized("invalid or revoked API key")
            wait = state.limiter.check(principal.tenant_id)
            if wait is not None:
                return TooManyRequests(
                    f"rate limit of {state.settings.rate_limit_per_s:g} requests/s exceeded; "
                    f"retry in {wait} s",
                    retry_after=wait,
                )
            return principal

        result = await anyio.to_thread.run_sync(check)
        if isinstance(result, Unauthorized) and page:
            await _to_sign_in(scope, receive, send)
            return
        if isinstance(result, FtguardError):
            await _send_error(result, scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = result
        await self.app(scope, receive, send)


async def _to_sign_in(scope: Scope, receive: Receive, send: Send) -> None:
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    resp = RedirectResponse(
        f"{scope.get('root_path', '')}{SIGN_IN}?next={quote(target, safe='')}", status_code=303
    )
    await resp(scope, receive, send)


class IdempotencyCapture:
    """Stores the response of a POST whose Idempotency-Key was claimed (by the route dependency), before
    the last byte reaches the client, so a retry sent the moment the answer arrives finds it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or _header(scope, idempotency.HEADER.lower().encode()) is None
        ):
            await self.app(scope, receive, send)
            return
        req_state: dict[str, Any] = scope.setdefault("state", {})
        status = 0
        chunks: list[bytes] = []
        size = 0
        done = False

        async def finish(ok: bool) -> None:
            nonlocal done
            claim = req_state.get("idempotency_claim")
            if done or claim is None:
                return
            done = True
            db = scope["app"].state.ftguard.services.db
            body = b"".join(chunks)
            if ok and 200 <= status < 300 and size <= idempotency.MAX_STORED_BODY:
                for field in req_state.get("idempotency_redact", ()):  # secrets shown once, never stored
                    parsed = json.loads(body)
                    parsed[field] = None
                    body = json.dumps(parsed).encode()
                await anyio.to_thread.run_sync(
                    lambda: idempotency.complete(db=db, claim=claim, status=status, body=body)
                )
            else:
                await anyio.to_thread.run_sync(lambda: idempotency.release(db=db, claim=claim))

        async def capture(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                size += len(body)
                if size <= idempotency.MAX_STORED_BODY:
                    chunks.append(body)
                if not message.get("more_body", False):
                    await finish(True)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            with anyio.CancelScope(shield=True):
                await finish(False)


def route_template(scope: Scope) -> str:
    """The matched route's template (`/v1/screenings/{screening_id}`), never the raw path with its ids."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        rid = given if VALID_ID.match(given) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = route_template(scope)
            self.metrics.observe(scope["method"], route, status, seconds)
            access.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 1),
                },
            )
            logs.request_id.reset(token)
