"""Every error leaves as the envelope {"error": {message, type, param, code}}, 404/405/422 included."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.idempotency import Replayed
from app.core.errors import FtguardError
from app.schemas import ErrorEnvelope

log = logging.getLogger("ftguard.api")
HTTP_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "file_too_large",
    429: "rate_limited",
}


# Documented on every /v1 route (router-level `responses`).
AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorEnvelope, "description": "Missing, unknown or revoked API key."},
    429: {
        "model": ErrorEnvelope,
        "description": "Over the tenant's request rate (or its active screenings); see Retry-After.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
    },
}
WRITE_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorEnvelope, "description": "The request body could not be parsed."},
    409: {"model": ErrorEnvelope, "description": "Conflict, or the Idempotency-Key is in use."},
    413: {"model": ErrorEnvelope, "description": "Request body over the limit."},
}


def envelope(
    status: int, message: str, type_: str, code: str, param: str | None = None, details: object = None
) -> JSONResponse:
    body: dict[str, object] = {"message": message, "type": type_, "param": param, "code": code}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


def _plain(first: dict[str, Any], request: Request, body: object) -> tuple[str, str | None]:
    """A validation error in plain words, and the field it is about (None for the body as a whole).

    A malformed JSON body names the line, column and character where it broke (not the character offset
    as a "field"); a body that is not JSON because no content type was sent says to send one."""
    loc = list(first.get("loc", ()))
    where = loc[0] if loc else "body"
    rest = [str(p) for p in loc[1:]] if where in ("body", "query", "path", "form", "header") else loc
    msg = str(first.get("msg", "invalid"))
    if first.get("type") == "json_invalid":
        pos = int(rest[0]) if rest and str(rest[0]).isdigit() else None
        reason = str((first.get("ctx") or {}).get("error", msg))
        if pos is not None and isinstance(body, (str, bytes)):
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            line = text.count("\n", 0, pos) + 1
            col = pos - (text.rfind("\n", 0, pos) + 1) + 1
            return f"the request body is not valid JSON: {reason} at line {line}, column {col}", None
        return f"the request body is not valid JSON: {reason}", None
    ctype = request.headers.get("content-type", "")
    if where == "body" and not rest and first.get("type") in ("dict_type", "model_attributes_type"):
        if "json" not in ctype:
            return (
                "the request body must be a JSON object sent with the header 'Content-Type: application/json'"
                + (f" (got {ctype!r})" if ctype else " (no content type was sent)"),
                None,
            )
        return "the request body must be a JSON object", None
    field = ".".join(str(p) for p in rest)
    if field:
        return f"invalid request: field '{field}' ({where}): {msg}", field
    return f"invalid request: {where}: {msg}", None


def install(app: FastAPI) -> None:
    @app.exception_handler(FtguardError)
    async def ftguard_error(_: Request, exc: FtguardError) -> JSONResponse:
        return JSONResponse(exc.envelope(), status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(Replayed)
    async def replayed(_: Request, exc: Replayed) -> Response:
        return JSONResponse(
            exc.replay.body, status_code=exc.replay.status, headers={"Idempotent-Replayed": "true"}
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
            for e in errs[:20]
        ]
        message, param = _plain(first, request, getattr(exc, "body", None))
        return envelope(422, message, "invalid_request_error", "validation_error", param, details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or HTTP_CODES.get(exc.status_code, "http_error")
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        resp = envelope(exc.status_code, str(exc.detail), type_, code)
        if exc.headers:
            resp.headers.update(exc.headers)
        return resp

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return envelope(500, "internal server error", "internal_error", "internal_error")
