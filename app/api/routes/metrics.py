from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(state: StateDep) -> Response:
    """Prometheus metrics: requests and latency by route, queue depths, job durations by kind and stage,
    vectors computed and read from the cache. Operator-level: no tenant's data, no ids in labels."""
    body = state.metrics.exposition() if state.metrics else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
