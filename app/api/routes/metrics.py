from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import StateDep
from app.api.responses import error
from app.core.errors import Unauthorized

# The scrape token is the operator's, not an API key (the Authenticate middleware leaves /metrics alone).
scrape = HTTPBearer(auto_error=False, scheme_name="metrics-token", description="FTGUARD_METRICS_TOKEN.")

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}},
        401: error("FTGUARD_METRICS_TOKEN is set and was not sent."),
    },
)
def metrics(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(scrape)] = None
) -> Response:
    """Prometheus metrics: requests and latency by route, queue depths, job durations by kind and stage,
    vectors computed and read from the cache. Operator-level: no tenant's data, no ids in labels. With
    FTGUARD_METRICS_TOKEN set, a scrape needs `Authorization: Bearer <that token>`."""
    token = state.settings.metrics_token
    if token is not None:
        sent = credentials.credentials if credentials else ""
        if not hmac.compare_digest(sent.encode(), token.get_secret_value().encode()):
            raise Unauthorized("GET /metrics needs the metrics bearer token", code="invalid_metrics_token")
    body = state.metrics.exposition() if state.metrics else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
