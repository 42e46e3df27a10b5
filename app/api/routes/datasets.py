from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile

from app import access
from app.api.deps import PagingDep, PrincipalDep, SessionDep, StateDep, TenantDep
from app.api.errors import AUTH_RESPONSES
from app.api.responses import error, resource_errors, write
from app.core.vocab import PurposeName
from app.datasets import service
from app.datasets.containers import CONTAINERS
from app.datasets.formats import ALL_FORMATS
from app.schemas import DatasetPreview, DatasetPublic, DatasetValidation, Page
from app.tenants.service import Principal

# The choices come from the registries of formats and containers (so the OpenAPI enum is the registry).
if TYPE_CHECKING:
    FormatChoice = str
    ContainerChoice = str
else:
    FormatChoice = Literal[("auto", *ALL_FORMATS)]
    ContainerChoice = Literal[("auto", *CONTAINERS)]
FILE_DOC = "JSONL, a JSON array, CSV or Parquet; JSONL, JSON and CSV may be gzip or zstd compressed."
FORMAT_DOC = (
    "Record format; auto detects it from the first record. eval-prompts datasets are always `prompts`: "
    "`prompt` (or `instruction`, `question`, `goal`), optional `category` and `kind` (harmful or benign)."
)
CONTAINER_DOC = "How records are stored; auto detects it from the first bytes."


@dataclass(frozen=True)
class Upload:
    """A posted dataset file with its form fields, as `service.create` and `service.check` read them."""

    file: UploadFile
    purpose: str
    format: str
    container: str

    def source(self) -> dict[str, Any]:
        return {
            "src": self.file.file,
            "filename": self.file.filename,
            "purpose": self.purpose,
            "fmt": self.format,
            "container": self.container,
        }


def upload_form(
    file: Annotated[UploadFile, File(description=FILE_DOC)],
    purpose: Annotated[PurposeName, Form()] = "fine-tune",
    format: Annotated[FormatChoice, Form(description=FORMAT_DOC)] = "auto",
    container: Annotated[ContainerChoice, Form(description=CONTAINER_DOC)] = "auto",
) -> Upload:
    return Upload(file=file, purpose=purpose, format=format, container=container)


UploadForm = Annotated[Upload, Depends(upload_form)]
router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=AUTH_RESPONSES)
ERRORS = resource_errors(
    "No such dataset for this tenant.", "Invalid request or dataset; errors carry line numbers."
)


@router.post(
    "",
    **write(
        DatasetPublic,
        ERRORS,
        created=True,
        more={
            400: error("Invalid request (e.g. the Idempotency-Key)."),
            413: error("Upload larger than the limit."),
        },
    ),
)
def upload_dataset(state: StateDep, principal: PrincipalDep, upload: UploadForm) -> DatasetPublic:
    """Upload a dataset. It is validated record by record while it streams to storage; a dataset with any
    error is rejected with the first errors (line, record, code, message) and the total, and nothing is
    kept."""
    ds = service.create(services=state.services, tenant_id=principal.tenant_id, **upload.source())
    return public(ds, principal)


def public(ds: object, principal: Principal) -> DatasetPublic:
    """The dataset object; a private set's name and hash only for keys with `alignment:read`."""
    fields = DatasetPublic.model_validate(ds).model_dump()
    allowed = principal.can(access.ALIGNMENT_READ)
    return DatasetPublic.model_validate(access.dataset_fields(fields, allowed=allowed))


@router.post(
    "/validate",
    **write(
        DatasetValidation,
        {},
        more={
            400: error("Invalid request (e.g. an unknown purpose)."),
            422: error("Invalid request parameters."),
        },
    ),
)
def validate_dataset(state: StateDep, tenant: TenantDep, upload: UploadForm) -> DatasetValidation:
    """Validate a file without storing it: the detected container and format, the stats and every located
    error (line, record, field, code). 200 whether it is valid or not; `valid` says which. The same object
    as `ftguard validate FILE --json`."""
    del tenant  # authenticated like every route; nothing is stored for the tenant
    result = service.check(settings=state.settings, **upload.source())
    return DatasetValidation.model_validate(result)


@router.get("", response_model=Page[DatasetPublic], responses=ERRORS)
def list_datasets(
    session: SessionDep,
    principal: PrincipalDep,
    paging: PagingDep,
    purpose: Annotated[str | None, Query(max_length=32)] = None,
) -> Page[DatasetPublic]:
    rows, more = service.list_(session=session, tenant_id=principal.tenant_id, purpose=purpose, **paging)
    return Page[DatasetPublic](data=[public(r, principal) for r in rows], has_more=more)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=ERRORS)
def get_dataset(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> DatasetPublic:
    return public(
        service.get(session=session, tenant_id=principal.tenant_id, dataset_id=dataset_id), principal
    )


@router.get(
    "/{dataset_id}/preview",
    response_model=DatasetPreview,
    responses={
        **ERRORS,
        403: error("An alignment or anchor set, and the key lacks the alignment:read scope."),
    },
)
def preview_dataset(
    dataset_id: str,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> DatasetPreview:
    """The first records. Alignment and anchor sets need the `alignment:read` scope."""
    ds = service.get(session=session, tenant_id=principal.tenant_id, dataset_id=dataset_id)
    rows = service.preview(
        store=state.services.store,
        ds=ds,
        max_line_bytes=state.settings.max_line_bytes,
        limit=limit,
        alignment_access=principal.can(access.ALIGNMENT_READ),
    )
    return DatasetPreview(dataset_id=ds.id, data=rows)


@router.delete(
    "/{dataset_id}",
    status_code=204,
    responses={
        **ERRORS,
        409: error("A queued or running screening uses it."),
    },
)
def delete_dataset(dataset_id: str, session: SessionDep, state: StateDep, tenant: TenantDep) -> Response:
    """Delete the dataset, the finished screenings that used it, and its stored bytes."""
    service.delete(session=session, store=state.services.store, tenant_id=tenant, dataset_id=dataset_id)
    return Response(status_code=204)
