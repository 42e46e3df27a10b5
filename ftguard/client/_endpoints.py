"""How a resource's methods, written once, serve both clients. A method builds a plan (`_plans`) or a
`Page`; the `endpoint` and `paged` descriptors run it on the client that owns the resource, so `Client`
answers with the result and `AsyncClient` with an awaitable (and a pager for `async for`). Type checkers see
both: a `Datasets[Sync]`'s `retrieve` returns a `Dataset`, a `Datasets[Async]`'s an `Awaitable[Dataset]`."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from ftguard.client import _plans as plans
from ftguard.client._base import Call, PageState
from ftguard.client._plans import Plan, Session

if TYPE_CHECKING:
    from ftguard.client._base import AsyncPager, SyncPager

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M")


class Sync:
    """Marks a resource whose calls block and return their results."""


class Async:
    """Marks a resource whose calls return awaitables."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """A list endpoint: its path, how to read an item, its query, and its cursor ("after": the last id
    seen; "offset": the scores' offset pages)."""

    path: str
    cast: Callable[[Any], T]
    params: dict[str, Any]
    cursor: str = "after"

    def state(self) -> PageState:
        return PageState(dict(self.params), self.cursor)

    def fetch(self, params: dict[str, Any], session: Session) -> Plan[dict[str, Any]]:
        return plans.read_json(Call("GET", self.path, params=params), session, dict)


class Driver(Session, Protocol):
    """What runs the plans: `Client` or `AsyncClient`."""

    def run(self, plan: Plan[Any]) -> Any: ...
    def pages(self, page: Page[Any]) -> Any: ...


class Resource(Generic[M]):
    def __init__(self, client: Driver) -> None:
        self._c = client

    def _json(self, call: Call, cast: Callable[[Any], T]) -> Plan[T]:
        return plans.read_json(call, self._c, cast)

    def _bytes(self, call: Call) -> Plan[bytes]:
        return plans.read_bytes(call, self._c)

    def _nothing(self, call: Call) -> Plan[None]:
        return plans.read_nothing(call, self._c)


class endpoint(Generic[P, T]):
    """A method that builds a plan, run by the resource's client when called."""

    def __init__(self, build: Callable[Concatenate[Any, P], Plan[T]]) -> None:
        self.plan = build
        functools.update_wrapper(cast(Any, self), build)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> endpoint[P, T]: ...
    @overload
    def __get__(self, obj: Resource[Sync], owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: Resource[Async], owner: type[Any]) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, obj: Resource[Any] | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        build, run = self.plan, obj._c.run

        @functools.wraps(build)
        def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            return run(build(obj, *args, **kwargs))

        return call


class paged(Generic[P, T]):
    """A method that describes a list; called, it gives the client's pager over every item."""

    def __init__(self, build: Callable[Concatenate[Any, P], Page[T]]) -> None:
        self._build = build
        functools.update_wrapper(cast(Any, self), build)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> paged[P, T]: ...
    @overload
    def __get__(self, obj: Resource[Sync], owner: type[Any]) -> Callable[P, SyncPager[T]]: ...
    @overload
    def __get__(self, obj: Resource[Async], owner: type[Any]) -> Callable[P, AsyncPager[T]]: ...
    def __get__(self, obj: Resource[Any] | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        build, pages = self._build, obj._c.pages

        @functools.wraps(build)
        def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            return pages(build(obj, *args, **kwargs))

        return call
