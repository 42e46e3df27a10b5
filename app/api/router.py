"""The one router that mounts every `/v1` route: each domain's routes module, in the order of the OpenAPI
document. A new resource is its routes module plus one line here. Each module keeps its full `/v1/...`
prefix: FastAPI keeps an included router's routes as they were declared, so a prefix added here would
leave the matched route's template (logs, metrics labels) without it."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import admin, datasets, experiments, models, policies, rankings, screenings, webhooks

api_router = APIRouter()
for sub in (
    datasets.router,
    screenings.router,
    policies.router,
    webhooks.router,
    rankings.router,
    models.router,
    admin.router,
    experiments.router,
    experiments.comparisons,
    experiments.calibrations,
):
    api_router.include_router(sub)
