"""Every endpoint of the API, written once for `Client` and `AsyncClient` (see `_endpoints`): a method
builds a plan (`_plans`) or a `Page`, and the client that owns the resource runs it."""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar, Generic, Literal, TypedDict, TypeVar, Unpack

from ftguard.client import _plans as plans
from ftguard.client import _types as t
from ftguard.client._base import Call, FileInput, Upload
from ftguard.client._endpoints import M, Page, Resource, endpoint, paged
from ftguard.client._plans import Plan, Polling

O = TypeVar("O")  # noqa: E741 - the object type of a collection
J = TypeVar("J", bound=plans.Job)
Sort = Literal["max_sim", "topk_mean", "anchor_margin", "record"]


class WaitOptions(TypedDict, total=False):
    """How `wait` polls; see `Jobs.wait`."""

    progress: bool
    timeout: float | None
    poll_interval: float
    max_poll_interval: float
    raise_on_failure: bool


class UploadOptions(TypedDict, total=False):
    """How a dataset file is read; see `Datasets.create`."""

    purpose: str
    format: str
    container: str
    filename: str | None


class Collection(Resource[M], Generic[M, O]):
    """A resource at `_path` whose objects read as `_model` (an APIObject class)."""

    _path: ClassVar[str]
    _model: ClassVar[Any]

    def _object(self, method: str, suffix: str = "", **call: Any) -> Plan[O]:
        """A call on `_path + suffix` whose answer is one of the collection's objects."""
        return self._json(Call(method, self._path + suffix, **call), self._model.model_validate)

    def _page(self, params: dict[str, Any], suffix: str = "") -> Page[O]:
        return Page(self._path + suffix, self._model.model_validate, params)

    def _remove(self, object_id: str) -> Plan[None]:
        return self._nothing(Call("DELETE", f"{self._path}/{object_id}"))

    @endpoint
    def retrieve(self, object_id: str, /) -> Plan[O]:
        return self._object("GET", f"/{object_id}")


class Jobs(Collection[M, J]):
    """A collection of jobs: cancel one, read its events, wait for it."""

    _poll: ClassVar[tuple[float, float]]  # wait's default poll_interval and max_poll_interval

    @endpoint
    def cancel(self, job_id: str, /) -> Plan[J]:
        return self._object("POST", f"/{job_id}/cancel")

    @paged
    def events(self, job_id: str, /, *, limit: int = 100) -> Page[t.Event]:
        return Page(f"{self._path}/{job_id}/events", t.Event.model_validate, {"limit": limit})

    @endpoint
    def wait(self, job_id: str, /, **options: Unpack[WaitOptions]) -> Plan[J]:
        """Poll the job (backing off from `poll_interval` to `max_poll_interval`; the defaults are the
        resource's) until it finishes. `progress=True` shows a bar. A failed or cancelled one raises
        JobFailed (unless `raise_on_failure=False`); `timeout` seconds without finishing raises
        WaitTimeout."""
        return self._waiting(Jobs.retrieve.plan(self, job_id), options)

    def _waiting(self, first: Plan[J], options: WaitOptions) -> Plan[J]:
        """`first` (a create or a retrieve), then polls of the job until it finishes."""
        least, most = self._poll
        polling = Polling(
            timeout=options.get("timeout"),
            poll_interval=options.get("poll_interval") or least,
            max_poll_interval=options.get("max_poll_interval") or most,
            progress=options.get("progress", False),
            raise_on_failure=options.get("raise_on_failure", True),
        )
        return plans.wait(first, partial(Jobs.retrieve.plan, self), polling)


class Datasets(Collection[M, t.Dataset]):
    _path, _model = "/v1/datasets", t.Dataset

    def _upload(self, path: str, file: FileInput, options: UploadOptions, key: str | None) -> Call:
        data = {
            "purpose": options.get("purpose", "fine-tune"),
            "format": options.get("format", "auto"),
            "container": options.get("container", "auto"),
        }
        upload = Upload(file, options.get("filename"))
        return Call("POST", path, data=data, upload=upload, idempotency_key=key)

    @endpoint
    def create(
        self, file: FileInput, *, idempotency_key: str | None = None, **options: Unpack[UploadOptions]
    ) -> Plan[t.Dataset]:
        """Upload a dataset: `purpose` (fine-tune by default; alignment, harmful-anchors, ...), `format` and
        `container` (auto-detected by default), `filename` (the file's own name by default)."""
        call = self._upload(self._path, file, options, idempotency_key)
        return self._json(call, t.Dataset.model_validate)

    @endpoint
    def validate(self, file: FileInput, **options: Unpack[UploadOptions]) -> Plan[t.DatasetValidation]:
        """Check a file as `create` would, storing nothing."""
        call = self._upload("/v1/datasets/validate", file, options, None)
        return self._json(call, t.DatasetValidation.model_validate)

    @paged
    def list(self, *, purpose: str | None = None, limit: int = 20) -> Page[t.Dataset]:
        return self._page({"purpose": purpose, "limit": limit})

    @endpoint
    def preview(self, dataset_id: str, *, limit: int = 5) -> Plan[t.DatasetPreview]:
        call = Call("GET", f"/v1/datasets/{dataset_id}/preview", params={"limit": limit})
        return self._json(call, t.DatasetPreview.model_validate)

    @endpoint
    def delete(self, dataset_id: str) -> Plan[None]:
        return self._remove(dataset_id)


class Screenings(Jobs[M, t.Screening]):
    _path, _model, _poll = "/v1/screenings", t.Screening, (0.5, 5.0)

    @endpoint
    def create(
        self, *, dataset_id: str, alignment_dataset_id: str, idempotency_key: str | None = None, **params: Any
    ) -> Plan[t.Screening]:
        """`params`: the other fields of POST /v1/screenings (top_k, subset_size, backend, model, ...)."""
        body = {"dataset_id": dataset_id, "alignment_dataset_id": alignment_dataset_id, **params}
        return self._object("POST", json=body, idempotency_key=idempotency_key)

    @endpoint
    def create_and_wait(
        self, *, dataset_id: str, alignment_dataset_id: str, idempotency_key: str | None = None, **params: Any
    ) -> Plan[t.Screening]:
        """Create a screening and `wait` for it: `params` are `wait`'s options (progress, timeout,
        poll_interval from 0.5 s, max_poll_interval to 5 s, raise_on_failure), the rest the screening's."""
        options: Any = {k: params.pop(k) for k in WaitOptions.__annotations__ if k in params}
        create = Screenings.create.plan(
            self,
            dataset_id=dataset_id,
            alignment_dataset_id=alignment_dataset_id,
            idempotency_key=idempotency_key,
            **params,
        )
        return self._waiting(create, options)

    @paged
    def list(
        self,
        *,
        status: str | None = None,
        tier: str | None = None,
        dataset_id: str | None = None,
        limit: int = 20,
    ) -> Page[t.Screening]:
        return self._page({"status": status, "tier": tier, "dataset_id": dataset_id, "limit": limit})

    @endpoint
    def report(self, screening_id: str, *, redact: bool = False) -> Plan[t.Report]:
        call = Call("GET", f"/v1/screenings/{screening_id}/report", params={"redact": redact or None})
        return self._json(call, t.Report.model_validate)

    @endpoint
    def audit(self, screening_id: str) -> Plan[t.Audit]:
        return self._json(Call("GET", f"/v1/screenings/{screening_id}/audit"), t.Audit.model_validate)

    @paged
    def scores(
        self,
        screening_id: str,
        *,
        side: Literal["customer", "alignment"] = "customer",
        sort: Sort = "max_sim",
        order: Literal["asc", "desc"] = "desc",
        limit: int = 100,
    ) -> Page[t.Score]:
        params = {"side": side, "sort": sort, "order": order, "limit": limit, "offset": 0}
        path = f"/v1/screenings/{screening_id}/scores"
        return Page(path, t.Score.model_validate, params, cursor="offset")

    @endpoint
    def subset(self, screening_id: str, name: Literal["high_sim", "low_sim", "random"]) -> Plan[bytes]:
        """The subset's alignment records as JSONL bytes (needs `alignment:read`)."""
        return self._bytes(Call("GET", f"/v1/screenings/{screening_id}/subsets/{name}"))

    @endpoint
    def decide(
        self, screening_id: str, *, policy: str | None = None, version: int | None = None
    ) -> Plan[t.Screening]:
        """Judge a finished screening again under a policy (its name and version; default: the one it was
        judged under, at its latest version). Nothing is recomputed."""
        body = {k: v for k, v in {"policy": policy, "version": version}.items() if v is not None}
        return self._object("POST", f"/{screening_id}/decision", json=body or None)

    @endpoint
    def flagged(self, screening_id: str, *, limit: int = 100) -> Plan[t.Flagged]:
        """The flagged rows, highest row score first (their records need `alignment:read` only for the
        nearest alignment texts, which this route does not return)."""
        call = Call("GET", f"/v1/screenings/{screening_id}/flagged", params={"limit": limit})
        return self._json(call, t.Flagged.model_validate)

    @endpoint
    def download(
        self, screening_id: str, variant: Literal["filtered", "flagged", "augmented"], **params: Any
    ) -> Plan[bytes]:
        """A safer dataset in the customer's own records and container: `filtered` (minus the flagged rows),
        `flagged` (those rows alone) or `augmented` (mixed with safety examples; `share`, `selection`,
        `seed`, `filtered`; needs `alignment:read`)."""
        path = f"/v1/screenings/{screening_id}/datasets/{variant}"
        return self._bytes(Call("GET", path, params=params or None))

    @endpoint
    def rescreen(
        self,
        screening_id: str,
        *,
        variant: Literal["filtered", "augmented"],
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Plan[t.Screening]:
        """Store the variant as a new dataset and screen it like the original; the answer carries
        `baseline` (the original's id and risk), so before and after read side by side."""
        body = {"variant": variant, **params}
        return self._object("POST", f"/{screening_id}/rescreen", json=body, idempotency_key=idempotency_key)


class Experiments(Jobs[M, t.Experiment]):
    _path, _model, _poll = "/v1/experiments", t.Experiment, (1.0, 10.0)

    @endpoint
    def create(self, *, idempotency_key: str | None = None, **spec: Any) -> Plan[t.Experiment]:
        """`spec`: the body of POST /v1/experiments (base_model, alignment, fine_tune, judges, ...)."""
        return self._object("POST", json=spec, idempotency_key=idempotency_key)

    @paged
    def list(
        self, *, status: str | None = None, comparison_id: str | None = None, limit: int = 20
    ) -> Page[t.Experiment]:
        return self._page({"status": status, "comparison_id": comparison_id, "limit": limit})

    @endpoint
    def resume(self, experiment_id: str) -> Plan[t.Experiment]:
        return self._object("POST", f"/{experiment_id}/resume")

    @endpoint
    def delete(self, experiment_id: str) -> Plan[None]:
        return self._remove(experiment_id)

    @endpoint
    def artefact(self, experiment_id: str, name: str) -> Plan[bytes]:
        return self._bytes(Call("GET", f"/v1/experiments/{experiment_id}/artefacts/{name}"))


class Comparisons(Collection[M, t.Comparison]):
    _path, _model = "/v1/comparisons", t.Comparison

    @endpoint
    def create(self, *, idempotency_key: str | None = None, **spec: Any) -> Plan[t.Comparison]:
        return self._object("POST", json=spec, idempotency_key=idempotency_key)

    @paged
    def list(self, *, limit: int = 20) -> Page[t.Comparison]:
        return self._page({"limit": limit})

    @endpoint
    def cancel(self, comparison_id: str) -> Plan[t.Comparison]:
        return self._object("POST", f"/{comparison_id}/cancel")


class Rankings(Collection[M, t.Ranking]):
    _path, _model = "/v1/rankings", t.Ranking

    @endpoint
    def create(
        self,
        *,
        dataset_id: str,
        candidates: list[dict[str, Any]],
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Plan[t.Ranking]:
        body = {"dataset_id": dataset_id, "candidates": candidates, **params}
        return self._object("POST", json=body, idempotency_key=idempotency_key)

    @paged
    def list(self, *, limit: int = 20) -> Page[t.Ranking]:
        return self._page({"limit": limit})


def _data(cast: Any) -> Any:
    """Reads a `{"data": [...]}` answer into a list of `cast` items."""
    return lambda body: [cast(item) for item in body["data"]]


class Calibrations(Resource[M]):
    @endpoint
    def refit(self, *, scope: str | None = None) -> Plan[list[t.Calibration]]:
        call = Call("POST", "/v1/calibration/refit", json={"scope": scope})
        return self._json(call, _data(t.Calibration.model_validate))

    @endpoint
    def list(self) -> Plan[list[t.Calibration]]:
        return self._json(Call("GET", "/v1/calibration"), _data(t.Calibration.model_validate))


class Models(Resource[M]):
    @endpoint
    def list(self) -> Plan[list[t.Model]]:
        return self._json(Call("GET", "/v1/models"), _data(t.Model.model_validate))


class Admin(Resource[M]):
    """Tenants and keys (admin keys only)."""

    @endpoint
    def create_tenant(self, tenant_id: str, *, name: str | None = None) -> Plan[t.Tenant]:
        call = Call("POST", "/v1/admin/tenants", json={"id": tenant_id, "name": name})
        return self._json(call, t.Tenant.model_validate)

    @paged
    def list_tenants(self, *, limit: int = 20) -> Page[t.Tenant]:
        return Page("/v1/admin/tenants", t.Tenant.model_validate, {"limit": limit})

    @endpoint
    def create_key(
        self, *, tenant_id: str, name: str = "", role: str = "member", scopes: list[str] | None = None
    ) -> Plan[t.ApiKey]:
        body = {"tenant_id": tenant_id, "name": name, "role": role, "scopes": scopes}
        return self._json(Call("POST", "/v1/admin/keys", json=body), t.ApiKey.model_validate)

    @paged
    def list_keys(self, *, tenant_id: str | None = None, limit: int = 20) -> Page[t.ApiKey]:
        return Page("/v1/admin/keys", t.ApiKey.model_validate, {"tenant_id": tenant_id, "limit": limit})

    @endpoint
    def revoke_key(self, key_id: str) -> Plan[t.ApiKey]:
        return self._json(Call("POST", f"/v1/admin/keys/{key_id}/revoke"), t.ApiKey.model_validate)


class Policies(Resource[M]):
    """Named, versioned policies (a policy's id is its name)."""

    def _policy(self, method: str, path: str, **call: Any) -> Plan[t.Policy]:
        return self._json(Call(method, path, **call), t.Policy.model_validate)

    @endpoint
    def create(self, name: str, *, idempotency_key: str | None = None, **body: Any) -> Plan[t.Policy]:
        """Version 1 of a new policy; `body`: rules, row_threshold, otherwise, description."""
        return self._policy(
            "POST", "/v1/policies", json={"name": name, **body}, idempotency_key=idempotency_key
        )

    @endpoint
    def update(self, name: str, **body: Any) -> Plan[t.Policy]:
        """PUT: a new version (screenings already judged keep theirs)."""
        return self._policy("PUT", f"/v1/policies/{name}", json=body)

    @paged
    def list(self) -> Page[t.Policy]:
        return Page("/v1/policies", t.Policy.model_validate, {})

    @endpoint
    def retrieve(self, name: str, *, version: int | None = None) -> Plan[t.Policy]:
        params = {"version": version} if version is not None else None
        return self._policy("GET", f"/v1/policies/{name}", params=params)

    @paged
    def versions(self, name: str) -> Page[t.Policy]:
        return Page(f"/v1/policies/{name}/versions", t.Policy.model_validate, {})

    @endpoint
    def delete(self, name: str) -> Plan[None]:
        return self._nothing(Call("DELETE", f"/v1/policies/{name}"))


class WebhookEndpoints(Collection[M, t.WebhookEndpoint]):
    _path, _model = "/v1/webhook_endpoints", t.WebhookEndpoint

    @endpoint
    def create(
        self, url: str, *, events: list[str], description: str = "", idempotency_key: str | None = None
    ) -> Plan[t.WebhookEndpoint]:
        """Register a receiver; the answer's `secret` (whsec_...) is shown this once."""
        body = {"url": url, "events": events, "description": description}
        return self._object("POST", json=body, idempotency_key=idempotency_key)

    @paged
    def list(self, *, limit: int = 20) -> Page[t.WebhookEndpoint]:
        return self._page({"limit": limit})

    @endpoint
    def update(self, endpoint_id: str, **body: Any) -> Plan[t.WebhookEndpoint]:
        return self._object("PATCH", f"/{endpoint_id}", json=body)

    @endpoint
    def delete(self, endpoint_id: str) -> Plan[None]:
        return self._remove(endpoint_id)

    @endpoint
    def rotate_secret(self, endpoint_id: str) -> Plan[t.WebhookEndpoint]:
        return self._object("POST", f"/{endpoint_id}/rotate_secret")

    @paged
    def deliveries(self, endpoint_id: str, *, limit: int = 20) -> Page[t.WebhookDelivery]:
        path = f"/v1/webhook_endpoints/{endpoint_id}/deliveries"
        return Page(path, t.WebhookDelivery.model_validate, {"limit": limit})

    @endpoint
    def replay(self, endpoint_id: str, delivery_id: str) -> Plan[t.WebhookDelivery]:
        call = Call("POST", f"/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/replay")
        return self._json(call, t.WebhookDelivery.model_validate)
