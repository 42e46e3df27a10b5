"""Fixtures of the S3 blob store tests: one real SeaweedFS server for the session (tests/storage/weed.py),
and every test's settings pointed at a fresh prefix of its bucket, so `client` and `run_worker` of the root
conftest run on the S3 store here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from tests.storage.weed import WeedServer, require_weed

PART = 5 << 20  # S3's smallest part: the multipart path runs on files of a few MiB


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    server = WeedServer(tmp_path_factory.mktemp("weed"), require_weed())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(settings: Settings, weed: WeedServer) -> Settings:
    """The root conftest's settings with blobs in s3://BUCKET/t<random>/ (a prefix of its own per test)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return settings.model_copy(update={**weed.settings_update(prefix), "blob_part_size_bytes": PART})


@pytest.fixture
def s3(weed: WeedServer) -> Any:
    """A plain boto3 client on the server, to look at the bucket from outside the store."""
    return weed.client()


@pytest.fixture
def store(settings: Settings) -> Any:
    from app.core.storage import open_store

    return open_store(settings)


def stage(store: Any, data: bytes) -> Path:
    path = Path(store.staging()) / f"t-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return path


@pytest.fixture
def client_factory(redis_url: str) -> Any:
    """`with client_factory(settings) as c:` the real app on other settings, as a member of "test"."""
    from contextlib import contextmanager

    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.conftest import bearer, make_key

    @contextmanager
    def go(s: Settings) -> Iterator[Any]:
        with TestClient(create_app(s, redis_url=redis_url)) as c:
            c.headers.update(bearer(make_key(c.app.state.ftguard.services.db, "test")))
            yield c

    return go
