"""ftguard's Python client: `Client` (sync) and `AsyncClient` on httpx.

from ftguard.client import Client

with Client("http://127.0.0.1:8000", api_key="ftg_...") as ftg:
    customer = ftg.datasets.create("customer.jsonl", purpose="fine-tune")
    scr = ftg.screenings.create_and_wait(
        dataset_id=customer.id, alignment_dataset_id="ds_...", progress=True
    )
    print(scr.risk_score, scr.tier)
"""

from ftguard.client._async import AsyncClient
from ftguard.client._base import RetryPolicy
from ftguard.client._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FtguardError,
    InternalServerError,
    JobFailed,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    WaitTimeout,
)
from ftguard.client._sync import Client
from ftguard.client._types import (
    ApiKey,
    Audit,
    Calibration,
    Comparison,
    Dataset,
    DatasetPreview,
    DatasetValidation,
    Event,
    Experiment,
    Flagged,
    FlaggedRow,
    Model,
    Policy,
    Ranking,
    Report,
    Score,
    Screening,
    Stage,
    Tenant,
    WebhookDelivery,
    WebhookEndpoint,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ApiKey",
    "AsyncClient",
    "Audit",
    "AuthenticationError",
    "BadRequestError",
    "Calibration",
    "Client",
    "Comparison",
    "ConflictError",
    "Dataset",
    "DatasetPreview",
    "DatasetValidation",
    "Event",
    "Experiment",
    "Flagged",
    "FlaggedRow",
    "FtguardError",
    "InternalServerError",
    "JobFailed",
    "Model",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Policy",
    "Ranking",
    "RateLimitError",
    "Report",
    "RetryPolicy",
    "Score",
    "Screening",
    "ServiceUnavailableError",
    "Stage",
    "Tenant",
    "UnprocessableEntityError",
    "WaitTimeout",
    "WebhookDelivery",
    "WebhookEndpoint",
]
