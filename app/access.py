"""What a key without the `alignment:read` scope may see, in one place.

The provider's own data (alignment and anchor sets) and anything built from it (an adapter trained on
alignment texts, the answers of a model aligned on them) are shown only to keys with the scope. Without it
a key still sees every number (scores, record numbers, risk, metrics), but not those texts, their file
names or their hashes (a hash lets whoever holds a candidate file confirm it is the provider's).
"""

from __future__ import annotations

import copy
from typing import Any

from app.core.errors import Forbidden
from app.core.vocab import PRIVATE_PURPOSES

ALIGNMENT_READ = "alignment:read"
# Purposes of the provider's own data: texts, names and hashes need the scope.
HIDDEN_FIELDS = ("filename", "sha256")


def holds_alignment(ds: Any) -> bool:
    """Whether a dataset's records include the provider's: a private purpose, or a variant that mixed
    alignment records in (an augmented set stored by `rescreen`: its stats say how many)."""
    if ds.purpose in PRIVATE_PURPOSES:
        return True
    return bool(((ds.stats or {}).get("derived") or {}).get("alignment_records"))


def require_alignment_read(allowed: bool, what: str) -> None:
    """Forbidden (`insufficient_scope`) unless the key may read alignment content."""
    if not allowed:
        raise Forbidden(f"{what}: this key lacks the {ALIGNMENT_READ!r} scope", code="insufficient_scope")


def dataset_fields(values: dict[str, Any], *, allowed: bool) -> dict[str, Any]:
    """A dataset object's fields, with the name and hash of a private set hidden from keys without it."""
    if allowed or values.get("purpose") not in PRIVATE_PURPOSES:
        return values
    return {**values, **dict.fromkeys(HIDDEN_FIELDS)}


def experiment_params(params: dict[str, Any], *, allowed: bool) -> dict[str, Any]:
    """An experiment's params, without the alignment set's file name and hash for keys without the scope."""
    if allowed:
        return params
    out = copy.deepcopy(params)
    align = (out.get("datasets") or {}).get("alignment")
    if isinstance(align, dict):
        for k in HIDDEN_FIELDS:
            align.pop(k, None)
    return out
