"""Which dataset purpose each role of a request needs, checked once for every create route.

A dataset id in a request plays a role: the customer's data being screened or fine-tuned on, the
provider's alignment set, an anchor set, the evaluation prompts. Each role takes one purpose only. Without
this check a key lacking `alignment:read` could name the provider's alignment (or anchor) set as the
*customer* side of a screening and read its texts back from the report's customer examples, which are
shown to every key. So every id is checked here, with one error code, `wrong_purpose`.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.core.errors import InvalidRequest
from app.datasets import service as datasets
from app.models import Dataset

# role -> the one purpose a dataset in that role must have
ROLE_PURPOSES: dict[str, str] = {
    "customer": "fine-tune",
    "alignment": "alignment",
    "harmful_anchors": "harmful-anchors",
    "safe_anchors": "safe-anchors",
    "eval_prompts": "eval-prompts",
}


def for_role(*, session: Session, tenant_id: str, dataset_id: str, role: str, param: str) -> Dataset:
    """The tenant's dataset `dataset_id`, checked to have the purpose `role` needs (else `wrong_purpose`)."""
    purpose = ROLE_PURPOSES[role]
    ds = datasets.get(session=session, tenant_id=tenant_id, dataset_id=dataset_id)
    if ds.purpose != purpose:
        raise InvalidRequest(
            f"dataset {ds.id} has purpose {ds.purpose!r}, not {purpose!r} (the {role.replace('_', ' ')} "
            "side needs it)",
            param=param,
            code="wrong_purpose",
        )
    return ds
