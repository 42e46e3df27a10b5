"""The synchronous client: `Client(base_url, api_key)`. Its resources are `_resources`'; this module is only
how it does I/O: blocking httpx calls and `time.sleep`."""

from __future__ import annotations

import time
from typing import Any, TypeVar

import httpx

from ftguard.client import _plans as plans
from ftguard.client._base import SyncPager
from ftguard.client._endpoints import Page, Sync
from ftguard.client._plans import Plan, Sleep, Step
from ftguard.client._root import Root

T = TypeVar("T")


class Client(Root[Sync]):
    """ftguard's REST API, blocking. Every POST carries an Idempotency-Key (yours, or a fresh one per
    call), so the retries on 429, 5xx and timeouts never create twice."""

    _http: httpx.Client

    def _open(self, timeout: float | httpx.Timeout, transport: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, follow_redirects=False
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def run(self, plan: Plan[T]) -> T:
        """Carry out `plan`'s steps until it returns."""
        done, value = plans.advance(plan, None)
        while not done:
            done, value = plans.advance(plan, self._step(value))
        result: T = value
        return result

    def _step(self, step: Step) -> Any:
        if isinstance(step, Sleep):
            return self._sleep(step.seconds)
        try:
            return self._http.send(step.request)
        except httpx.TransportError as exc:
            return exc

    def pages(self, page: Page[T]) -> SyncPager[T]:
        return SyncPager(lambda p: self.run(page.fetch(p, self)), page.cast, page.state())
