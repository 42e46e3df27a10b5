"""The Idempotency-Key dependency of every POST route: claim the key, or replay the first result."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app import idempotency
from app.api.deps import PrincipalDep, StateDep

CHUNK = 1 << 20


class Replayed(Exception):
    """Answer with the stored first result (handled in app.api.errors)."""

    def __init__(self, replay: idempotency.Replay) -> None:
        self.replay = replay


def _file_digest(upload: UploadFile) -> str:
    h = hashlib.sha256()
    upload.file.seek(0)
    while chunk := upload.file.read(CHUNK):
        h.update(chunk)
    upload.file.seek(0)
    return h.hexdigest()


async def fingerprint(request: Request) -> str:
    """What makes two requests "the same": method, path, query and the body's content. Multipart bodies are
    compared by their fields and file contents, not their bytes: clients pick a new boundary per request."""
    h = hashlib.sha256(f"{request.method} {request.url.path}?{request.url.query}\n".encode())
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()  # already parsed by FastAPI: this is the cached form
        for name, value in sorted(form.multi_items(), key=lambda kv: kv[0]):
            if isinstance(value, UploadFile):
                digest = await run_in_threadpool(_file_digest, value)
                h.update(f"{name}\0file\0{value.filename}\0{digest}\n".encode())
            else:
                h.update(f"{name}\0{value}\n".encode())
    else:
        body = await request.body()
        with contextlib.suppress(ValueError):  # not JSON: compare the bytes
            body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
        h.update(body)
    return h.hexdigest()


async def idempotent(
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    key: Annotated[
        str | None,
        Header(
            alias=idempotency.HEADER,
            description="Retry-safe key (e.g. a UUID), 1-255 printable ASCII characters without spaces: "
            "a retry with the same key and body gets the first result and creates nothing new. Kept for "
            "`idempotency_ttl_s`. An empty or malformed key is refused (400 `invalid_idempotency_key`), "
            "never taken as no key.",
        ),
    ] = None,
) -> None:
    if key is None:
        return
    # Checked here, not by a header pattern: an empty header (what `$(uuidgen)` gives where uuidgen is
    # missing) must be a 400, never read as "no key" (a retry would then create a duplicate).
    idempotency.check_key(key)
    # The caller's privileges are part of "the same request": a replay must never show a key what it may
    # not see itself (a scoped key's dataset names, an admin's results).
    who = f"{principal.role}|{','.join(sorted(principal.scopes))}"
    fp = hashlib.sha256(f"{await fingerprint(request)}|{who}".encode()).hexdigest()
    result = await run_in_threadpool(
        idempotency.claim,
        db=state.services.db,
        tenant_id=principal.tenant_id,
        key=key,
        fingerprint=fp,
        ttl_s=state.settings.idempotency_ttl_s,
    )
    if isinstance(result, idempotency.Replay):
        raise Replayed(result)
    request.state.idempotency_claim = result


Idempotent = Depends(idempotent)
