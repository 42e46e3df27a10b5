"""What `Client` and `AsyncClient` share: their settings, their HTTP client's headers, the calls on the
client itself and the resources it mounts. Each client adds only how it does I/O: `_open` (its httpx
client), `_sleep`, `run` (a plan) and `pages` (a list)."""

from __future__ import annotations

from typing import Any

import httpx

from ftguard.client._base import DEFAULT_TIMEOUT, Call, RetryPolicy, headers, settings
from ftguard.client._endpoints import M, Page, Resource, endpoint
from ftguard.client._plans import Plan
from ftguard.client._resources import (
    Admin,
    Calibrations,
    Comparisons,
    Datasets,
    Experiments,
    Models,
    Policies,
    Rankings,
    Screenings,
    WebhookEndpoints,
)


class Service(Resource[M]):
    """The calls on the client itself."""

    @endpoint
    def health(self) -> Plan[dict[str, Any]]:
        """GET /healthz: the process is up."""
        return self._json(Call("GET", "/healthz"), dict)

    @endpoint
    def ready(self) -> Plan[dict[str, Any]]:
        """GET /readyz: the database and the queue answer (a 503 raises ServiceUnavailableError)."""
        return self._json(Call("GET", "/readyz"), dict)


class Root(Service[M]):
    """`base_url` defaults to `$FTGUARD_URL` (else http://127.0.0.1:8000) and `api_key` to `$FTGUARD_KEY`.
    `transport` and `http_client` are httpx's, sync for `Client` and async for `AsyncClient`."""

    _http: Any
    datasets: Datasets[M]
    screenings: Screenings[M]
    experiments: Experiments[M]
    comparisons: Comparisons[M]
    rankings: Rankings[M]
    calibration: Calibrations[M]
    models: Models[M]
    admin: Admin[M]
    policies: Policies[M]
    webhook_endpoints: WebhookEndpoints[M]

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        http_client: httpx.Client | httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url, self.api_key = settings(base_url, api_key)
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self._http = http_client or self._open(timeout, transport)
        self._http.headers.update(headers(self.api_key))
        super().__init__(self)  # the client's own calls run on itself
        self.datasets = Datasets(self)
        self.screenings = Screenings(self)
        self.experiments = Experiments(self)
        self.comparisons = Comparisons(self)
        self.rankings = Rankings(self)
        self.calibration = Calibrations(self)
        self.models = Models(self)
        self.admin = Admin(self)
        self.policies = Policies(self)
        self.webhook_endpoints = WebhookEndpoints(self)

    def _open(self, timeout: float | httpx.Timeout, transport: Any) -> Any:
        raise NotImplementedError

    def run(self, plan: Plan[Any]) -> Any:
        raise NotImplementedError

    def pages(self, page: Page[Any]) -> Any:
        raise NotImplementedError
