"""The asynchronous client: `AsyncClient(base_url, api_key)`, the same resources as `Client` with `await`
(and `async for` over lists). This module is only how it does I/O: httpx's async calls and `asyncio.sleep`."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import httpx

from ftguard.client import _plans as plans
from ftguard.client._base import AsyncPager
from ftguard.client._endpoints import Async, Page
from ftguard.client._plans import Plan, Sleep, Step
from ftguard.client._root import Root

T = TypeVar("T")


class AsyncClient(Root[Async]):
    """The async twin of `Client`: same arguments, same retries and Idempotency-Keys."""

    _http: httpx.AsyncClient

    def _open(self, timeout: float | httpx.Timeout, transport: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, follow_redirects=False
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def run(self, plan: Plan[T]) -> T:
        """Carry out `plan`'s steps, awaiting each, until it returns."""
        done, value = plans.advance(plan, None)
        while not done:
            done, value = plans.advance(plan, await self._step(value))
        result: T = value
        return result

    async def _step(self, step: Step) -> Any:
        if isinstance(step, Sleep):
            return await self._sleep(step.seconds)
        try:
            return await self._http.send(step.request)
        except httpx.TransportError as exc:
            return exc

    def pages(self, page: Page[T]) -> AsyncPager[T]:
        return AsyncPager(lambda p: self.run(page.fetch(p, self)), page.cast, page.state())
