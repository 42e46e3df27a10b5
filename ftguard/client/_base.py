"""The request loop shared by the sync and async clients: auth, retries with backoff that honour
Retry-After, one Idempotency-Key per POST call (the same key on each of its retries), error mapping, and
the pagination iterators."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import httpx

from ftguard.client import _errors as errors

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
FileInput = str | os.PathLike[str] | bytes | IO[bytes]


@dataclass(frozen=True)
class RetryPolicy:
    """How calls are retried: on 429 and 5xx answers, on connection errors and timeouts, and on a 409
    `idempotency_key_in_use` (the first attempt of this very call is still running on the server)."""

    max_retries: int = 3
    backoff_s: float = 0.5  # first wait; doubles each retry, with jitter
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0  # a longer Retry-After is not waited for: the error is raised

    def wait(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None to give up."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            after = errors.retry_after(response)
            if after is not None:
                return after if after <= self.max_retry_after_s else None
        base = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return base * (0.5 + random.random() / 2)


def retryable(response: httpx.Response) -> bool:
    if response.status_code == 429 or response.status_code >= 500:
        return True
    if response.status_code == 409:
        try:
            return response.json()["error"]["code"] == "idempotency_key_in_use"
        except (ValueError, KeyError, TypeError):
            return False
    return False


class Upload:
    """A file to send as multipart, re-readable for each attempt."""

    def __init__(self, file: FileInput, filename: str | None = None) -> None:
        self.file = file
        if isinstance(file, str | os.PathLike):
            self.name = filename or Path(file).name
        else:
            self.name = filename or Path(str(getattr(file, "name", "") or "upload.jsonl")).name
        self._start = file.tell() if hasattr(file, "tell") and not isinstance(file, bytes) else 0

    def open(self) -> tuple[str, Any]:
        if isinstance(self.file, bytes):
            return self.name, self.file
        if isinstance(self.file, str | os.PathLike):
            return self.name, Path(self.file).read_bytes()
        if hasattr(self.file, "seek"):
            self.file.seek(self._start)
        return self.name, self.file.read()


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, Any] | None = None
    upload: Upload | None = None
    idempotency_key: str | None = None
    timeout: float | httpx.Timeout | None = None

    def request(self, http: httpx.Client | httpx.AsyncClient, key: str | None) -> httpx.Request:
        headers = {"Idempotency-Key": key} if key else {}
        files = {"file": self.upload.open()} if self.upload else None
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        extra: dict[str, Any] = {}
        if self.timeout is not None:
            extra["timeout"] = self.timeout
        return http.build_request(
            self.method,
            self.path,
            params=params or None,
            json=self.json,
            data=self.data,
            files=files,
            headers=headers,
            **extra,
        )


def idempotency_key(call: Call) -> str | None:
    if call.method != "POST":
        return None
    return call.idempotency_key or f"ftguard-py-{uuid.uuid4()}"


def headers(api_key: str | None) -> dict[str, str]:
    h = {"User-Agent": "ftguard-python", "Accept": "application/json"}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def settings(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    url = base_url or os.environ.get("FTGUARD_URL") or DEFAULT_URL
    return url.rstrip("/"), api_key if api_key is not None else os.environ.get("FTGUARD_KEY")


def transport_error(exc: httpx.TransportError, request: httpx.Request | None) -> errors.APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return errors.APITimeoutError(f"ftguard did not answer in time: {exc!r}", request=request)
    return errors.APIConnectionError(f"cannot reach ftguard: {exc!r}", request=request)


# ------------------------------------------------------------------------------------------- pagination
# Two conventions: cursor lists ({object: list, data, has_more} with `after` = the last id seen) and the
# scores' offset pages ({data, has_more, total, offset}).


@dataclass
class PageState:
    params: dict[str, Any]
    cursor: str = "after"  # "after" (cursor: last id) or "offset"
    done: bool = False

    def advance(self, body: dict[str, Any]) -> None:
        data = body.get("data") or []
        if not body.get("has_more") or not data:
            self.done = True
        elif self.cursor == "offset":
            self.params["offset"] = int(self.params.get("offset") or 0) + len(data)
        else:
            self.params["after"] = data[-1]["id"]


class SyncPager(Generic[T]):
    """Iterates every item of a list, fetching the next page when needed (`limit` items a page)."""

    def __init__(
        self, fetch: Callable[[dict[str, Any]], dict[str, Any]], cast: Callable[[Any], T], state: PageState
    ) -> None:
        self._fetch, self._cast, self._state = fetch, cast, state

    def pages(self) -> Iterator[list[T]]:
        while not self._state.done:
            body = self._fetch(dict(self._state.params))
            self._state.advance(body)
            yield [self._cast(item) for item in body.get("data") or []]

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page

    def to_list(self) -> list[T]:
        return list(self)


class AsyncPager(Generic[T]):
    def __init__(
        self,
        fetch: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
        cast: Callable[[Any], T],
        state: PageState,
    ) -> None:
        self._fetch, self._cast, self._state = fetch, cast, state

    async def pages(self) -> AsyncIterator[list[T]]:
        while not self._state.done:
            body = await self._fetch(dict(self._state.params))
            self._state.advance(body)
            yield [self._cast(item) for item in body.get("data") or []]

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page:
                yield item

    async def to_list(self) -> list[T]:
        return [item async for item in self]
