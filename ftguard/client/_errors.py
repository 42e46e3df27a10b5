"""Exceptions that mirror the API's error envelope `{"error": {message, type, param, code}}`.

FtguardError
├── APIConnectionError            the server could not be reached (after the retries)
│   └── APITimeoutError           it did not answer in time (after the retries)
├── WaitTimeout                   create_and_wait / wait gave up before the object finished
├── JobFailed                     the screening or experiment ended failed or cancelled
└── APIStatusError                any error answer; `.status_code`, `.type`, `.code`, `.param`, `.details`
    ├── BadRequestError           400 (invalid_request, invalid_idempotency_key, ...)
    ├── AuthenticationError       401 invalid_api_key
    ├── PermissionDeniedError     403 permission_denied
    ├── NotFoundError             404 not_found
    ├── ConflictError             409 conflict, idempotency_key_in_use, experiment_active
    ├── PayloadTooLargeError      413 file_too_large, scores_too_large
    ├── UnprocessableEntityError  422 validation_error, invalid_dataset, unknown_model, ...
    ├── RateLimitError            429 rate_limited, too_many_active_screenings (`.retry_after`)
    ├── InternalServerError       500 internal_error
    └── ServiceUnavailableError   503 service_unavailable
"""

from __future__ import annotations

from typing import Any

import httpx


class FtguardError(Exception):
    """Every error the client raises."""


class APIConnectionError(FtguardError):
    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    pass


class WaitTimeout(FtguardError):
    def __init__(self, message: str, obj: Any) -> None:
        super().__init__(message)
        self.object = obj


class JobFailed(FtguardError):
    """A screening or experiment that ended `failed` or `cancelled`; `.object` is it, `.error` its error."""

    def __init__(self, obj: Any) -> None:
        err = getattr(obj, "error", None) or {}
        super().__init__(f"{obj.object} {obj.id} {obj.status}: {err.get('message', 'no error message')}")
        self.object = obj
        self.error = err


BY_STATUS: dict[int, type[APIStatusError]] = {}


class APIStatusError(FtguardError):
    """An error answer. A subclass names its status (`class X(APIStatusError, status=404)`), and
    `from_response` raises it for that status."""

    status = 0

    def __init_subclass__(cls, *, status: int = 0, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if status:
            cls.status = status
            BY_STATUS[status] = cls

    def __init__(self, message: str, *, response: httpx.Response, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.response = response
        self.status_code = response.status_code
        self.type: str | None = body.get("type")
        self.code: str | None = body.get("code")
        self.param: str | None = body.get("param")
        self.details: Any = body.get("details")
        self.request_id: str | None = response.headers.get("x-request-id")

    def __str__(self) -> str:
        return f"{self.status_code} {self.code}: {self.message}"


class BadRequestError(APIStatusError, status=400): ...


class AuthenticationError(APIStatusError, status=401): ...


class PermissionDeniedError(APIStatusError, status=403): ...


class NotFoundError(APIStatusError, status=404): ...


class ConflictError(APIStatusError, status=409): ...


class PayloadTooLargeError(APIStatusError, status=413): ...


class UnprocessableEntityError(APIStatusError, status=422): ...


class RateLimitError(APIStatusError, status=429):
    @property
    def retry_after(self) -> float | None:
        return retry_after(self.response)


class InternalServerError(APIStatusError, status=500): ...


class ServiceUnavailableError(APIStatusError, status=503): ...


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, when.timestamp() - time.time())


def from_response(response: httpx.Response) -> APIStatusError:
    """The exception for an error answer, from its envelope (or the bare status if it has none)."""
    body: dict[str, Any] = {}
    try:
        payload = response.json()
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            body = payload["error"]
    except ValueError:
        pass
    message = str(body.get("message") or response.reason_phrase or "error")
    status = response.status_code
    cls = BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    return cls(message, response=response, body=body)
