"""Concurrent uploads per tenant: the API holds one of the tenant's `max_concurrent_uploads` slots around
the whole upload request, from before its body is read (FastAPI spools a multipart body before the route
runs) until the answer is sent, so a tenant cannot keep more uploads in flight than that on any replica."""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from app import quotas
from app.api.middleware import UPLOAD_ROUTES, _send_error
from app.core.errors import FtguardError


class UploadSlots:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("state", {}).get("principal")
        if (
            scope["type"] != "http"
            or principal is None
            or (scope["method"], scope["path"].rstrip("/")) not in UPLOAD_ROUTES
        ):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.ftguard
        db, settings = state.services.db, state.settings
        try:
            lease = await anyio.to_thread.run_sync(
                lambda: quotas.take_upload_slot(db, settings, principal.tenant_id)
            )
        except FtguardError as exc:
            await _send_error(exc, scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: quotas.give_upload_slot(db, lease))
