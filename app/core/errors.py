"""ftguard's errors. Services raise these; one handler maps them to the error envelope.

    FtguardError                  500 internal_error
    ├── Unauthorized              401 invalid_api_key      (missing, unknown or revoked key)
    ├── Forbidden                 403 permission_denied    (admin route, or a scope the key lacks)
    ├── NotFound                  404 not_found            (another tenant's id too: no existence oracle)
    ├── InvalidRequest            400 invalid_request
    │   ├── InvalidDataset        422 invalid_dataset   (carries located DatasetIssue list)
    │   ├── IdempotencyKeyReused  422 idempotency_key_reused (same key, different request)
    │   └── UnknownModel          422 unknown_model     (a model name not in the provider's registry)
    ├── Conflict                  409 conflict
    ├── PayloadTooLarge           413 file_too_large
    ├── TooManyRequests           429 rate_limited         (carries retry_after: the Retry-After header)
    ├── ServiceUnavailable        503 service_unavailable  (Redis, database, model load)
    │   └── BlobStoreUnavailable  503 blob_store_unavailable (the S3 store did not answer)
    └── JudgeError                500 judge_failed         (an experiment's judge; the stage fails)

Control flow inside workers, never sent to a client (plain exceptions, not FtguardError):

    Cancelled    the job's run was cancelled: raised at its next progress report, caught by the job runner
    Lost         another run owns the stage now (this one was presumed dead): stop and write nothing

Envelope: {"error": {"message", "type", "param", "code"}} (OpenAI style).
"""

from __future__ import annotations

from typing import Any


class FtguardError(Exception):
    status_code = 500
    type = "internal_error"
    code = "internal_error"
    retryable = False  # in a job: would another attempt go differently? (a judge's service down: yes)

    def __init_subclass__(
        cls,
        *,
        status_code: int | None = None,
        type: str | None = None,
        code: str | None = None,
        **kwargs: Any,
    ) -> None:
        """A subclass names what differs from its base in its class line: status code, error type, code."""
        super().__init_subclass__(**kwargs)
        if status_code is not None:
            cls.status_code = status_code
        if type is not None:
            cls.type = type
        if code is not None:
            cls.code = code

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        details: Any = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}

    def headers(self) -> dict[str, str]:
        return {}


class Unauthorized(FtguardError, status_code=401, type="authentication_error", code="invalid_api_key"):
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="ftguard"'}


class Forbidden(FtguardError, status_code=403, type="permission_error", code="permission_denied"): ...


class NotFound(FtguardError, status_code=404, type="not_found_error", code="not_found"): ...


class InvalidRequest(FtguardError, status_code=400, type="invalid_request_error", code="invalid_request"): ...


class InvalidDataset(InvalidRequest, status_code=422, code="invalid_dataset"): ...


class IdempotencyKeyReused(InvalidRequest, status_code=422, code="idempotency_key_reused"): ...


class UnknownModel(InvalidRequest, status_code=422, code="unknown_model"): ...


class Conflict(FtguardError, status_code=409, type="conflict_error", code="conflict"): ...


class PayloadTooLarge(FtguardError, status_code=413, type="invalid_request_error", code="file_too_large"): ...


class TooManyRequests(FtguardError, status_code=429, type="rate_limit_error", code="rate_limited"):
    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServiceUnavailable(
    FtguardError, status_code=503, type="service_unavailable_error", code="service_unavailable"
): ...


class BlobStoreUnavailable(ServiceUnavailable, code="blob_store_unavailable"): ...


class JudgeError(FtguardError, code="judge_failed"): ...


class Cancelled(Exception):
    """The job's run was cancelled (a screening, an experiment stage, a block of a comparison): stop at the
    next progress report. One class for every kind of run, so a comparison cancelled inside an experiment
    stage ends that stage like any other cancel."""


class Lost(Exception):
    """Another run owns this stage now (this one was presumed dead): stop and write nothing."""
