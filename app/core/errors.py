"""ftguard's errors. Services raise these; one handler maps them to the error envelope.

    FtguardError                  500 internal_error
    ├── NotFound                  404 not_found
    ├── InvalidRequest            400 invalid_request
    │   └── InvalidDataset        422 invalid_dataset   (carries located DatasetIssue list)
    ├── Conflict                  409 conflict
    ├── PayloadTooLarge           413 file_too_large
    └── ServiceUnavailable        503 service_unavailable  (Redis, database, model load)

Envelope: {"error": {"message", "type", "param", "code"}} (OpenAI style).
"""

from __future__ import annotations

from typing import Any


class FtguardError(Exception):
    status_code = 500
    type = "internal_error"
    code = "internal_error"

    def __init__(
        self, message: str, *, code: str | None = None, param: str | None = None, details: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details
        if code is not None:
            self.code = code

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


class NotFound(FtguardError):
    status_code = 404
    type = "not_found_error"
    code = "not_found"


class InvalidRequest(FtguardError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidDataset(InvalidRequest):
    status_code = 422
    code = "invalid_dataset"


class Conflict(FtguardError):
    status_code = 409
    type = "conflict_error"
    code = "conflict"


class PayloadTooLarge(FtguardError):
    status_code = 413
    type = "invalid_request_error"
    code = "file_too_large"


class ServiceUnavailable(FtguardError):
    status_code = 503
    type = "service_unavailable_error"
    code = "service_unavailable"
