"""What a worker process holds for its whole life: services and the models it has loaded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from app.core import registry
from app.core.config import Settings, get_settings
from app.core.metrics import WorkerMetrics
from app.core.queue import JobQueue, connect
from app.core.services import Services, build_services
from workers.cache import VectorCache
from workers.representations import load_representer
from workers.representations.base import Representer, resolve_device

log = logging.getLogger("ftguard.worker")
SHARED_NAMESPACE = "_bundled"  # the vector cache of what ships with ftguard; not a valid tenant id
LOCAL_NAMESPACE = "_local"  # the operator's CLI screenings; not a valid tenant id either
MAX_MODELS = 2  # models kept loaded at once; the least recently used one is dropped past this
T = TypeVar("T")


class Runtime:
    def __init__(
        self,
        settings: Settings,
        services: Services | None = None,
        models: dict[tuple[Any, ...], Representer] | None = None,
    ) -> None:
        self.settings = settings
        if settings.torch_threads:
            import torch

            # On a shared or small CPU, fewer threads than cores avoids OpenMP spin-waits fighting.
            torch.set_num_threads(settings.torch_threads)
        self.services = services or build_services(settings, run_migrations=False)
        self._tenant_caches: dict[str, VectorCache] = {}
        self.device = resolve_device(settings.device)
        # `models` lets several runtimes in one process (tests, the CLI) share loaded models.
        self._models: dict[tuple[Any, ...], Representer] = {} if models is None else models
        self._lock = threading.Lock()
        self._objects: dict[tuple[Any, ...], Any] = {}
        self.queue: JobQueue | None = None  # set by the worker runner; jobs enqueue follow-up jobs on it
        # Set by the worker runner; None for the CLI's local screenings and get_runtime()'s fallback.
        self.metrics: WorkerMetrics | None = None

    def job_queue(self) -> JobQueue | None:
        if self.queue is None and self.settings.redis_url:
            self.queue = JobQueue(connect(self.settings.redis_url), self.settings)
        return self.queue

    def cached(self, key: tuple[Any, ...], factory: Callable[[], T]) -> T:
        """Build a heavy object (a judge model) once per process; the least recently used goes past two."""
        with self._lock:
            if key in self._objects:
                self._objects[key] = self._objects.pop(key)
                return self._objects[key]
        obj = factory()
        with self._lock:
            self._objects[key] = obj
            while len(self._objects) > MAX_MODELS:
                self._objects.pop(next(iter(self._objects)))
        return obj

    def shared_cache(self) -> VectorCache:
        """Vectors of what ships with ftguard (the bundled anchors), shared by every tenant. Its namespace
        cannot be a tenant id (those start with a letter or digit)."""
        return self.cache_for(SHARED_NAMESPACE)

    def local_cache(self) -> VectorCache:
        """The operator CLI's own cache (`ftguard screen`): never read by a tenant's job."""
        return self.cache_for(LOCAL_NAMESPACE)

    def cache_for(self, tenant_id: str) -> VectorCache:
        """The tenant's own vector cache (kept per process, so its shard index is built once)."""
        with self._lock:
            if tenant_id not in self._tenant_caches:
                self._tenant_caches[tenant_id] = VectorCache(self.services.store, namespace=tenant_id)
            return self._tenant_caches[tenant_id]

    def representer(self, params: dict[str, Any]) -> Representer:
        """Load a model once and keep it; jobs with the same model reuse its weights. A model is keyed by
        backend and name only: another layer, pooling or `max_length` is a view on the same weights, so
        no request can make a worker load a model twice or evict another tenant's."""
        s = self.settings
        backend = params.get("backend", s.default_backend)
        name = params.get("model", s.default_model)
        layer, pooling = params.get("layer", -1), params.get("pooling", "last")
        max_length = min(int(params.get("max_length", 512)), s.max_length_limit)
        key = (backend, name)
        with self._lock:
            if key in self._models:
                self._models[key] = self._models.pop(key)  # most recently used last
                rep = self._models[key]
            else:
                log.info("loading representation model", extra={"backend": backend, "model": name})
                rep = load_representer(
                    backend=backend,
                    model=registry.path(s, name),
                    name=name,
                    device=self.device,
                    batch_size=s.encode_batch_size,
                    layer=layer,
                    pooling=pooling,
                    max_length=max_length,
                    data_dir=s.data_dir,
                    max_batch_tokens=None if self.device == "cpu" else s.gpu_max_batch_tokens,
                    precision=s.causal_lm_precision,
                )
                self._models[key] = rep
                while len(self._models) > MAX_MODELS:
                    self._models.pop(next(iter(self._models)))
        view = getattr(rep, "view", None)
        if view is None:  # sentence-transformers: the model's own length and pooling
            return rep
        if (rep.layer, rep.pooling, rep.max_length) == (layer, pooling, max_length):  # type: ignore[attr-defined]
            return rep
        out: Representer = view(layer=layer, pooling=pooling, max_length=max_length)
        return out


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's runtime; the worker runner sets it at start-up, else it is built on first use."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime
