"""The synchronous client: `Client(base_url, api_key)` and its resources."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import httpx

from ftguard.client import _errors as errors
from ftguard.client import _types as t
from ftguard.client._base import (
    DEFAULT_TIMEOUT,
    Call,
    FileInput,
    PageState,
    RetryPolicy,
    SyncPager,
    Upload,
    headers,
    idempotency_key,
    retryable,
    settings,
    transport_error,
)
from ftguard.client._progress import ProgressView

Sort = Literal["max_sim", "topk_mean", "anchor_margin", "record"]


class Client:
    """ftguard's REST API. `base_url` defaults to `$FTGUARD_URL` (else http://127.0.0.1:8000) and `api_key`
    to `$FTGUARD_KEY`. Every POST carries an Idempotency-Key (yours, or a fresh one per call), so the
    retries on 429, 5xx and timeouts never create twice."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url, self.api_key = settings(base_url, api_key)
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self._http = http_client or httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, follow_redirects=False
        )
        self._http.headers.update(headers(self.api_key))
        self._sleep: Callable[[float], None] = time.sleep
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

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, call: Call) -> httpx.Response:
        """Send `call`, retrying as the policy says; raise the envelope's exception on an error answer."""
        key = idempotency_key(call)
        attempt = 0
        while True:
            req = call.request(self._http, key)
            try:
                resp = self._http.send(req)
            except httpx.TransportError as exc:
                wait = self.retry.wait(attempt, None)
                if wait is None:
                    raise transport_error(exc, req) from exc
            else:
                if not resp.is_error:
                    return resp
                resp.read()
                wait = self.retry.wait(attempt, resp) if retryable(resp) else None
                if wait is None:
                    raise errors.from_response(resp)
            self._sleep(wait)
            attempt += 1

    def json(self, call: Call) -> Any:
        resp = self.request(call)
        return None if resp.status_code == 204 else resp.json()

    def health(self) -> dict[str, Any]:
        """GET /healthz: the process is up."""
        result: dict[str, Any] = self.json(Call("GET", "/healthz"))
        return result

    def ready(self) -> dict[str, Any]:
        """GET /readyz: the database and the queue answer (a 503 raises ServiceUnavailableError)."""
        result: dict[str, Any] = self.json(Call("GET", "/readyz"))
        return result

    def pager(
        self, path: str, cast: Callable[[Any], Any], params: dict[str, Any], cursor: str = "after"
    ) -> Any:
        return SyncPager(lambda p: self.json(Call("GET", path, params=p)), cast, PageState(params, cursor))

    def wait(
        self,
        get: Callable[[], Any],
        *,
        timeout: float | None,
        poll_interval: float,
        max_poll_interval: float,
        progress: bool,
        raise_on_failure: bool,
    ) -> Any:
        obj = get()
        view = ProgressView(progress, obj.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval
        try:
            while True:
                view.update(obj)
                if obj.finished:
                    break
                if deadline is not None and time.monotonic() + interval > deadline:
                    raise errors.WaitTimeout(
                        f"{obj.object} {obj.id} still {obj.status} after {timeout}s", obj
                    )
                self._sleep(interval)
                interval = min(max_poll_interval, interval * 1.5)
                obj = get()
        finally:
            view.close()
        if raise_on_failure and obj.status != "succeeded":
            raise errors.JobFailed(obj)
        return obj


class _Resource:
    def __init__(self, client: Client) -> None:
        self._c = client


class Datasets(_Resource):
    def create(
        self,
        file: FileInput,
        *,
        purpose: str = "fine-tune",
        format: str = "auto",
        container: str = "auto",
        filename: str | None = None,
        idempotency_key: str | None = None,
    ) -> t.Dataset:
        data = {"purpose": purpose, "format": format, "container": container}
        call = Call(
            "POST", "/v1/datasets", data=data, upload=Upload(file, filename), idempotency_key=idempotency_key
        )
        return t.Dataset.model_validate(self._c.json(call))

    def validate(
        self,
        file: FileInput,
        *,
        purpose: str = "fine-tune",
        format: str = "auto",
        container: str = "auto",
        filename: str | None = None,
    ) -> t.DatasetValidation:
        data = {"purpose": purpose, "format": format, "container": container}
        call = Call("POST", "/v1/datasets/validate", data=data, upload=Upload(file, filename))
        return t.DatasetValidation.model_validate(self._c.json(call))

    def list(self, *, purpose: str | None = None, limit: int = 20) -> SyncPager[t.Dataset]:
        return self._c.pager("/v1/datasets", t.Dataset.model_validate, {"purpose": purpose, "limit": limit})

    def retrieve(self, dataset_id: str) -> t.Dataset:
        return t.Dataset.model_validate(self._c.json(Call("GET", f"/v1/datasets/{dataset_id}")))

    def preview(self, dataset_id: str, *, limit: int = 5) -> t.DatasetPreview:
        call = Call("GET", f"/v1/datasets/{dataset_id}/preview", params={"limit": limit})
        return t.DatasetPreview.model_validate(self._c.json(call))

    def delete(self, dataset_id: str) -> None:
        self._c.request(Call("DELETE", f"/v1/datasets/{dataset_id}"))


class Screenings(_Resource):
    def create(
        self, *, dataset_id: str, alignment_dataset_id: str, idempotency_key: str | None = None, **params: Any
    ) -> t.Screening:
        """`params`: the other fields of POST /v1/screenings (top_k, subset_size, backend, model, ...)."""
        body = {"dataset_id": dataset_id, "alignment_dataset_id": alignment_dataset_id, **params}
        call = Call("POST", "/v1/screenings", json=body, idempotency_key=idempotency_key)
        return t.Screening.model_validate(self._c.json(call))

    def create_and_wait(
        self,
        *,
        dataset_id: str,
        alignment_dataset_id: str,
        progress: bool = False,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
        raise_on_failure: bool = True,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> t.Screening:
        """Create a screening and poll it (backing off from `poll_interval` to `max_poll_interval`) until it
        finishes. `progress=True` shows a bar. A failed or cancelled one raises JobFailed (unless
        `raise_on_failure=False`); `timeout` seconds without finishing raises WaitTimeout."""
        scr = self.create(
            dataset_id=dataset_id,
            alignment_dataset_id=alignment_dataset_id,
            idempotency_key=idempotency_key,
            **params,
        )
        return self.wait(
            scr.id,
            progress=progress,
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            raise_on_failure=raise_on_failure,
        )

    def wait(
        self,
        screening_id: str,
        *,
        progress: bool = False,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
        raise_on_failure: bool = True,
    ) -> t.Screening:
        result: t.Screening = self._c.wait(
            lambda: self.retrieve(screening_id),
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            progress=progress,
            raise_on_failure=raise_on_failure,
        )
        return result

    def list(
        self,
        *,
        status: str | None = None,
        tier: str | None = None,
        dataset_id: str | None = None,
        limit: int = 20,
    ) -> SyncPager[t.Screening]:
        params = {"status": status, "tier": tier, "dataset_id": dataset_id, "limit": limit}
        return self._c.pager("/v1/screenings", t.Screening.model_validate, params)

    def retrieve(self, screening_id: str) -> t.Screening:
        return t.Screening.model_validate(self._c.json(Call("GET", f"/v1/screenings/{screening_id}")))

    def cancel(self, screening_id: str) -> t.Screening:
        return t.Screening.model_validate(self._c.json(Call("POST", f"/v1/screenings/{screening_id}/cancel")))

    def events(self, screening_id: str, *, limit: int = 100) -> SyncPager[t.Event]:
        return self._c.pager(
            f"/v1/screenings/{screening_id}/events", t.Event.model_validate, {"limit": limit}
        )

    def report(self, screening_id: str, *, redact: bool = False) -> t.Report:
        call = Call("GET", f"/v1/screenings/{screening_id}/report", params={"redact": redact or None})
        return t.Report.model_validate(self._c.json(call))

    def audit(self, screening_id: str) -> t.Audit:
        return t.Audit.model_validate(self._c.json(Call("GET", f"/v1/screenings/{screening_id}/audit")))

    def scores(
        self,
        screening_id: str,
        *,
        side: Literal["customer", "alignment"] = "customer",
        sort: Sort = "max_sim",
        order: Literal["asc", "desc"] = "desc",
        limit: int = 100,
    ) -> SyncPager[t.Score]:
        params = {"side": side, "sort": sort, "order": order, "limit": limit, "offset": 0}
        path = f"/v1/screenings/{screening_id}/scores"
        return self._c.pager(path, t.Score.model_validate, params, cursor="offset")

    def subset(self, screening_id: str, name: Literal["high_sim", "low_sim", "random"]) -> bytes:
        """The subset's alignment records as JSONL bytes (needs `alignment:read`)."""
        return self._c.request(Call("GET", f"/v1/screenings/{screening_id}/subsets/{name}")).content

    def decide(
        self, screening_id: str, *, policy: str | None = None, version: int | None = None
    ) -> t.Screening:
        """Judge a finished screening again under a policy (its name and version; default: the one it was
        judged under, at its latest version). Nothing is recomputed."""
        body = {k: v for k, v in {"policy": policy, "version": version}.items() if v is not None}
        call = Call("POST", f"/v1/screenings/{screening_id}/decision", json=body or None)
        return t.Screening.model_validate(self._c.json(call))

    def flagged(self, screening_id: str, *, limit: int = 100) -> t.Flagged:
        """The flagged rows, highest row score first (their records need `alignment:read` only for the
        nearest alignment texts, which this route does not return)."""
        call = Call("GET", f"/v1/screenings/{screening_id}/flagged", params={"limit": limit})
        return t.Flagged.model_validate(self._c.json(call))

    def download(
        self, screening_id: str, variant: Literal["filtered", "flagged", "augmented"], **params: Any
    ) -> bytes:
        """A safer dataset in the customer's own records and container: `filtered` (minus the flagged rows),
        `flagged` (those rows alone) or `augmented` (mixed with safety examples; `share`, `selection`,
        `seed`, `filtered`; needs `alignment:read`)."""
        path = f"/v1/screenings/{screening_id}/datasets/{variant}"
        return self._c.request(Call("GET", path, params=params or None)).content

    def rescreen(
        self,
        screening_id: str,
        *,
        variant: Literal["filtered", "augmented"],
        idempotency_key: str | None = None,
        **params: Any,
    ) -> t.Screening:
        """Store the variant as a new dataset and screen it like the original; the answer carries
        `baseline` (the original's id and risk), so before and after read side by side."""
        body = {"variant": variant, **params}
        path = f"/v1/screenings/{screening_id}/rescreen"
        return t.Screening.model_validate(
            self._c.json(Call("POST", path, json=body, idempotency_key=idempotency_key))
        )


class Experiments(_Resource):
    def create(self, *, idempotency_key: str | None = None, **spec: Any) -> t.Experiment:
        """`spec`: the body of POST /v1/experiments (base_model, alignment, fine_tune, judges, ...)."""
        call = Call("POST", "/v1/experiments", json=spec, idempotency_key=idempotency_key)
        return t.Experiment.model_validate(self._c.json(call))

    def wait(
        self,
        experiment_id: str,
        *,
        progress: bool = False,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        raise_on_failure: bool = True,
    ) -> t.Experiment:
        result: t.Experiment = self._c.wait(
            lambda: self.retrieve(experiment_id),
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            progress=progress,
            raise_on_failure=raise_on_failure,
        )
        return result

    def list(
        self, *, status: str | None = None, comparison_id: str | None = None, limit: int = 20
    ) -> SyncPager[t.Experiment]:
        params = {"status": status, "comparison_id": comparison_id, "limit": limit}
        return self._c.pager("/v1/experiments", t.Experiment.model_validate, params)

    def retrieve(self, experiment_id: str) -> t.Experiment:
        return t.Experiment.model_validate(self._c.json(Call("GET", f"/v1/experiments/{experiment_id}")))

    def cancel(self, experiment_id: str) -> t.Experiment:
        call = Call("POST", f"/v1/experiments/{experiment_id}/cancel")
        return t.Experiment.model_validate(self._c.json(call))

    def resume(self, experiment_id: str) -> t.Experiment:
        call = Call("POST", f"/v1/experiments/{experiment_id}/resume")
        return t.Experiment.model_validate(self._c.json(call))

    def delete(self, experiment_id: str) -> None:
        self._c.request(Call("DELETE", f"/v1/experiments/{experiment_id}"))

    def events(self, experiment_id: str, *, limit: int = 100) -> SyncPager[t.Event]:
        path = f"/v1/experiments/{experiment_id}/events"
        return self._c.pager(path, t.Event.model_validate, {"limit": limit})

    def artefact(self, experiment_id: str, name: str) -> bytes:
        return self._c.request(Call("GET", f"/v1/experiments/{experiment_id}/artefacts/{name}")).content


class Comparisons(_Resource):
    def create(self, *, idempotency_key: str | None = None, **spec: Any) -> t.Comparison:
        call = Call("POST", "/v1/comparisons", json=spec, idempotency_key=idempotency_key)
        return t.Comparison.model_validate(self._c.json(call))

    def list(self, *, limit: int = 20) -> SyncPager[t.Comparison]:
        return self._c.pager("/v1/comparisons", t.Comparison.model_validate, {"limit": limit})

    def retrieve(self, comparison_id: str) -> t.Comparison:
        return t.Comparison.model_validate(self._c.json(Call("GET", f"/v1/comparisons/{comparison_id}")))

    def cancel(self, comparison_id: str) -> t.Comparison:
        call = Call("POST", f"/v1/comparisons/{comparison_id}/cancel")
        return t.Comparison.model_validate(self._c.json(call))


class Rankings(_Resource):
    def create(
        self,
        *,
        dataset_id: str,
        candidates: list[dict[str, Any]],
        idempotency_key: str | None = None,
        **params: Any,
    ) -> t.Ranking:
        body = {"dataset_id": dataset_id, "candidates": candidates, **params}
        call = Call("POST", "/v1/rankings", json=body, idempotency_key=idempotency_key)
        return t.Ranking.model_validate(self._c.json(call))

    def list(self, *, limit: int = 20) -> SyncPager[t.Ranking]:
        return self._c.pager("/v1/rankings", t.Ranking.model_validate, {"limit": limit})

    def retrieve(self, ranking_id: str) -> t.Ranking:
        return t.Ranking.model_validate(self._c.json(Call("GET", f"/v1/rankings/{ranking_id}")))


class Calibrations(_Resource):
    def refit(self, *, scope: str | None = None) -> list[t.Calibration]:
        body = self._c.json(Call("POST", "/v1/calibration/refit", json={"scope": scope}))
        return [t.Calibration.model_validate(c) for c in body["data"]]

    def list(self) -> list[t.Calibration]:
        return [t.Calibration.model_validate(c) for c in self._c.json(Call("GET", "/v1/calibration"))["data"]]


class Models(_Resource):
    def list(self) -> list[t.Model]:
        return [t.Model.model_validate(m) for m in self._c.json(Call("GET", "/v1/models"))["data"]]


class Admin(_Resource):
    """Tenants and keys (admin keys only)."""

    def create_tenant(self, tenant_id: str, *, name: str | None = None) -> t.Tenant:
        call = Call("POST", "/v1/admin/tenants", json={"id": tenant_id, "name": name})
        return t.Tenant.model_validate(self._c.json(call))

    def list_tenants(self, *, limit: int = 20) -> SyncPager[t.Tenant]:
        return self._c.pager("/v1/admin/tenants", t.Tenant.model_validate, {"limit": limit})

    def create_key(
        self, *, tenant_id: str, name: str = "", role: str = "member", scopes: list[str] | None = None
    ) -> t.ApiKey:
        body = {"tenant_id": tenant_id, "name": name, "role": role, "scopes": scopes}
        return t.ApiKey.model_validate(self._c.json(Call("POST", "/v1/admin/keys", json=body)))

    def list_keys(self, *, tenant_id: str | None = None, limit: int = 20) -> SyncPager[t.ApiKey]:
        return self._c.pager(
            "/v1/admin/keys", t.ApiKey.model_validate, {"tenant_id": tenant_id, "limit": limit}
        )

    def revoke_key(self, key_id: str) -> t.ApiKey:
        return t.ApiKey.model_validate(self._c.json(Call("POST", f"/v1/admin/keys/{key_id}/revoke")))


class Policies(_Resource):
    def create(self, name: str, *, idempotency_key: str | None = None, **body: Any) -> t.Policy:
        """Version 1 of a new policy; `body`: rules, row_threshold, otherwise, description."""
        call = Call("POST", "/v1/policies", json={"name": name, **body}, idempotency_key=idempotency_key)
        return t.Policy.model_validate(self._c.json(call))

    def update(self, name: str, **body: Any) -> t.Policy:
        """PUT: a new version (screenings already judged keep theirs)."""
        return t.Policy.model_validate(self._c.json(Call("PUT", f"/v1/policies/{name}", json=body)))

    def list(self) -> SyncPager[t.Policy]:
        return self._c.pager("/v1/policies", t.Policy.model_validate, {})

    def retrieve(self, name: str, *, version: int | None = None) -> t.Policy:
        call = Call(
            "GET", f"/v1/policies/{name}", params={"version": version} if version is not None else None
        )
        return t.Policy.model_validate(self._c.json(call))

    def versions(self, name: str) -> SyncPager[t.Policy]:
        return self._c.pager(f"/v1/policies/{name}/versions", t.Policy.model_validate, {})

    def delete(self, name: str) -> None:
        self._c.request(Call("DELETE", f"/v1/policies/{name}"))


class WebhookEndpoints(_Resource):
    def create(
        self, url: str, *, events: list[str], description: str = "", idempotency_key: str | None = None
    ) -> t.WebhookEndpoint:
        """Register a receiver; the answer's `secret` (whsec_...) is shown this once."""
        body = {"url": url, "events": events, "description": description}
        call = Call("POST", "/v1/webhook_endpoints", json=body, idempotency_key=idempotency_key)
        return t.WebhookEndpoint.model_validate(self._c.json(call))

    def list(self, *, limit: int = 20) -> SyncPager[t.WebhookEndpoint]:
        return self._c.pager("/v1/webhook_endpoints", t.WebhookEndpoint.model_validate, {"limit": limit})

    def retrieve(self, endpoint_id: str) -> t.WebhookEndpoint:
        return t.WebhookEndpoint.model_validate(
            self._c.json(Call("GET", f"/v1/webhook_endpoints/{endpoint_id}"))
        )

    def update(self, endpoint_id: str, **body: Any) -> t.WebhookEndpoint:
        call = Call("PATCH", f"/v1/webhook_endpoints/{endpoint_id}", json=body)
        return t.WebhookEndpoint.model_validate(self._c.json(call))

    def delete(self, endpoint_id: str) -> None:
        self._c.request(Call("DELETE", f"/v1/webhook_endpoints/{endpoint_id}"))

    def rotate_secret(self, endpoint_id: str) -> t.WebhookEndpoint:
        call = Call("POST", f"/v1/webhook_endpoints/{endpoint_id}/rotate_secret")
        return t.WebhookEndpoint.model_validate(self._c.json(call))

    def deliveries(self, endpoint_id: str, *, limit: int = 20) -> SyncPager[t.WebhookDelivery]:
        path = f"/v1/webhook_endpoints/{endpoint_id}/deliveries"
        return self._c.pager(path, t.WebhookDelivery.model_validate, {"limit": limit})

    def replay(self, endpoint_id: str, delivery_id: str) -> t.WebhookDelivery:
        call = Call("POST", f"/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/replay")
        return t.WebhookDelivery.model_validate(self._c.json(call))
