"""What a call does, written once for both clients: a plan is a generator that yields the I/O it needs
(`Send` a request, `Sleep` a while) and returns the result. `Client` runs plans with blocking I/O and
`AsyncClient` with `await`; the retries, the error mapping and the polling of `wait` live here alone."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from ftguard.client import _errors as errors
from ftguard.client._base import Call, RetryPolicy, idempotency_key, retryable, transport_error
from ftguard.client._progress import ProgressView

T = TypeVar("T")


class Job(Protocol):
    """What `wait` reads of a screening or an experiment."""

    @property
    def id(self) -> str: ...
    @property
    def object(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def finished(self) -> bool: ...


J = TypeVar("J", bound=Job)


@dataclass(frozen=True)
class Send:
    """Send this request. The reply is the response, or the transport error when none came back."""

    request: httpx.Request


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Plan = Generator[Step, Any, T]


class Session(Protocol):
    """What a plan needs of its client: the retry policy, and the HTTP client that builds requests."""

    retry: RetryPolicy

    @property
    def _http(self) -> httpx.Client | httpx.AsyncClient: ...


def advance(plan: Plan[T], reply: Any) -> tuple[bool, Any]:
    """Give `plan` the reply to its last step: (False, its next step), or (True, its result)."""
    try:
        return False, plan.send(reply)
    except StopIteration as done:
        return True, done.value


def fetch(call: Call, session: Session) -> Plan[httpx.Response]:
    """Send `call`, retrying as the policy says; raise the envelope's exception on an error answer."""
    key = idempotency_key(call)
    retry = session.retry
    attempt = 0
    while True:
        req = call.request(session._http, key)
        resp: httpx.Response | httpx.TransportError = yield Send(req)
        if isinstance(resp, httpx.TransportError):
            wait = retry.wait(attempt, None)
            if wait is None:
                raise transport_error(resp, req) from resp
        elif not resp.is_error:
            return resp
        else:
            wait = retry.wait(attempt, resp) if retryable(resp) else None
            if wait is None:
                raise errors.from_response(resp)
        yield Sleep(wait)
        attempt += 1


def read_json(call: Call, session: Session, cast: Callable[[Any], T]) -> Plan[T]:
    """The answer's JSON body (None for a 204), passed through `cast`."""
    resp = yield from fetch(call, session)
    return cast(None if resp.status_code == 204 else resp.json())


def read_bytes(call: Call, session: Session) -> Plan[bytes]:
    resp = yield from fetch(call, session)
    return resp.content


def read_nothing(call: Call, session: Session) -> Plan[None]:
    yield from fetch(call, session)


@dataclass(frozen=True)
class Polling:
    """How `wait` polls: from `poll_interval` seconds, backing off by 1.5x to `max_poll_interval`."""

    timeout: float | None
    poll_interval: float
    max_poll_interval: float
    progress: bool
    raise_on_failure: bool


def wait(first: Plan[J], get: Callable[[str], Plan[J]], polling: Polling) -> Plan[J]:
    """Run `first` (a create or a retrieve), then `get(id)` until the job is finished. A failed or
    cancelled one raises JobFailed (unless `raise_on_failure` is off); running past `timeout` raises
    WaitTimeout."""
    obj = yield from first
    view = ProgressView(polling.progress, obj.id)
    deadline = None if polling.timeout is None else time.monotonic() + polling.timeout
    interval = polling.poll_interval
    try:
        while True:
            view.update(obj)
            if obj.finished:
                break
            if deadline is not None and time.monotonic() + interval > deadline:
                raise errors.WaitTimeout(
                    f"{obj.object} {obj.id} still {obj.status} after {polling.timeout}s", obj
                )
            yield Sleep(interval)
            interval = min(polling.max_poll_interval, interval * 1.5)
            obj = yield from get(obj.id)
    finally:
        view.close()
    if polling.raise_on_failure and obj.status != "succeeded":
        raise errors.JobFailed(obj)
    return obj
