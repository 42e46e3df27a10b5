"""The FastAPI application. Heavy objects (database, blob store, queue) are built once in `lifespan`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import reconcile
from app.api import errors
from app.api.deps import AppState
from app.api.middleware import Authenticate, BodySizeLimit, IdempotencyCapture, RequestContext
from app.api.router import api_router
from app.api.routes import health, metrics
from app.api.upload_slots import UploadSlots
from app.core.config import Settings, get_settings
from app.core.metrics import ApiMetrics
from app.core.queue import EmbeddedRedis, JobQueue, connect
from app.core.ratelimit import RateLimiter
from app.core.services import build_services
from app.dashboard import experiment_pages, signin
from app.dashboard import routes as dashboard

log = logging.getLogger("ftguard.api")


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
        connection = connect(url)
        queue = JobQueue(connection, settings)
        api_metrics.bind(queue, services.db)
        app.state.ftguard = AppState(
            settings=settings,
            services=services,
            queue=queue,
            limiter=RateLimiter(
                connection,
                prefix=settings.queue_prefix,
                rate=settings.rate_limit_per_s,
                burst=settings.rate_limit_burst,
            ),
            embedded_redis=embedded,
            metrics=api_metrics,
        )
        # Whatever a killed predecessor left: staged uploads, orphaned blobs, jobs Redis lost.
        try:
            outcome = reconcile.reconcile(services=services, queue=queue, storage=True)
            log.info("start-up reconciliation", extra=outcome.as_dict())
        except Exception:  # never keep the API from starting; workers reconcile again every minute
            log.exception("start-up reconciliation failed")
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
            "similarity erodes guardrails after fine-tuning) and returns a risk report. Every /v1 route "
            "needs `Authorization: Bearer <API key>`; every POST accepts an `Idempotency-Key`. Every error "
            'is `{"error": {"message", "type", "param", "code"}}`.'
        ),
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(api_router)  # every /v1 route (app/api/router.py)
    app.include_router(signin.router)
    app.include_router(dashboard.router)
    app.include_router(experiment_pages.router)
    app.include_router(dashboard.root)
    # Added innermost first. A request meets: its request id and metrics (outermost, so refusals by the
    # layers inside are counted too), the size limit, authentication and rate limit, idempotency capture.
    app.add_middleware(UploadSlots)  # inside authentication: it needs the tenant
    app.add_middleware(IdempotencyCapture)
    app.add_middleware(Authenticate)
    app.add_middleware(
        BodySizeLimit, max_upload_bytes=settings.max_upload_bytes, max_json_bytes=settings.max_json_body_bytes
    )
    app.add_middleware(RequestContext, metrics=api_metrics)
    return app
