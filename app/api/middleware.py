"""ASGI middleware, outermost first: body size limit, authentication and rate limit, idempotency capture.

Authentication runs here, before FastAPI reads the body, so an unauthenticated or rate-limited client is
turned away before a byte of its upload is spooled; the route dependency only reads the principal back.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import idempotency
from app.api.errors import envelope
from app.core.errors import FtguardError, ServiceUnavailable, TooManyRequests, Unauthorized
from app.tenants import service as tenants

log = logging.getLogger("ftguard.api")
UPLOAD_ROUTES = {("POST", "/v1/datasets")}
MULTIPART_OVERHEAD = 1 << 20
PROTECTED_PREFIX = "/v1/"


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


class Authenticate:
    """`Authorization: Bearer <key>` on every /v1/ route, then the tenant's rate limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        raw = _header(scope, b"authorization") or b""
        scheme, _, token = raw.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            err = Unauthorized("missing API key: send `Authorization: Bearer <key>`", code="missing_api_key")
            await _send_error(err, scope, receive, send)
            return
        state = scope["app"].state.ftguard

        def check() -> tenants.Principal | FtguardError:
            try:
                with state.services.db.session() as session:
                    principal = tenants.authenticate(session=session, token=token.strip())
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
        if isinstance(result, FtguardError):
            await _send_error(result, scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = result
        await self.app(scope, receive, send)


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
