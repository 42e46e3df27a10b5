"""The FastAPI application. Heavy objects (database, blob store, queue) are built once in `lifespan`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import errors
from app.api.deps import AppState
from app.api.errors import envelope
from app.api.middleware import RequestContext
from app.api.routes import datasets, experiments, health, metrics, rankings, screenings
from app.core.config import Settings, get_settings
from app.core.metrics import ApiMetrics
from app.core.queue import EmbeddedRedis, JobQueue, connect
from app.core.services import build_services
from app.dashboard import routes as dashboard

log = logging.getLogger("ftguard.api")
MULTIPART_OVERHEAD = 1 << 20


class BodySizeLimit:
    """Refuse a request whose declared body is over the limit before anything is read or spooled."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers", [])).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                resp = envelope(
                    413,
                    f"request body larger than {self.max_bytes} bytes",
                    "invalid_request_error",
                    "file_too_large",
                )
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, *, redis_url: str | None = None) -> FastAPI:
    settings = settings or get_settings()
    api_metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        embedded = None
        url = redis_url or settings.redis_url
        if url is None:
            embedded = EmbeddedRedis(settings.data_dir)
            url = embedded.url
        queue = JobQueue(connect(url), settings)
        api_metrics.bind(queue, services.db)
        app.state.ftguard = AppState(
            settings=settings,
            services=services,
            queue=queue,
            embedded_redis=embedded,
            metrics=api_metrics,
        )
        yield
        api_metrics.unbind()
        services.close()
        if embedded is not None:
            embedded.close()

    app = FastAPI(
        title="ftguard",
        version="0.1.0",
        summary="Screen LLM fine-tuning datasets for safety risk before fine-tuning.",
        description=(
            "Upload a customer's fine-tuning dataset and the provider's safety-alignment data; ftguard "
            "measures their similarity in a model's representation space (Hsiung et al. 2025: high "
            "similarity erodes guardrails after fine-tuning) and returns a risk report. Every error is "
            '`{"error": {"message", "type", "param", "code"}}`.'
        ),
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(datasets.router)
    app.include_router(screenings.router)
    app.include_router(rankings.router)
    app.include_router(dashboard.router)
    app.include_router(dashboard.root)
    app.include_router(experiments.router)
    app.include_router(experiments.comparisons)
    app.include_router(experiments.calibrations)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    # Added last, so outermost: refusals by the layers inside it get a request id and are counted too.
    app.add_middleware(RequestContext, metrics=api_metrics)
    return app
