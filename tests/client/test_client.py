"""ftguard.client against the real app (the `client` fixture's app, driven through httpx transports) and
a real RQ worker: waiting, pagination, retries on 429/5xx, and the idempotent retry of a timed-out POST."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from ftguard.client import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    Client,
    Flagged,
    FlaggedRow,
    JobFailed,
    NotFoundError,
    Policy,
    RateLimitError,
    RetryPolicy,
    Screening,
    UnprocessableEntityError,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.conftest import DEMO

SCREEN = "/v1/screenings"


class App(httpx.BaseTransport):
    """httpx transport into the running app of the `client` fixture (starlette's TestClient is built on
    its own copy of httpx, so its transport cannot serve this httpx directly)."""

    def __init__(self, tc: Any) -> None:
        self.tc = tc

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        r = self.tc.request(request.method, target, content=request.read(), headers=dict(request.headers))
        return httpx.Response(r.status_code, headers=list(r.headers.multi_items()), content=r.content)


class Recorder(httpx.BaseTransport):
    """Passes every request to the app and records (method, path, Idempotency-Key, status). `timeout_on`
    (a path) makes the first POST there reach the server and then time out on the client's side; `fail`
    answers that many requests 503 (with Retry-After: 0) before letting them through."""

    def __init__(self, inner: httpx.BaseTransport, *, timeout_on: str | None = None, fail: int = 0) -> None:
        self.inner, self.timeout_on, self.fail = inner, timeout_on, fail
        self.seen: list[tuple[str, str, str | None, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key")
        if self.fail:
            self.fail -= 1
            self.seen.append((request.method, request.url.path, key, 503))
            body = {
                "error": {"message": "busy", "type": "service_unavailable_error", "code": "x", "param": None}
            }
            return httpx.Response(503, json=body, headers={"Retry-After": "0"})
        resp = self.inner.handle_request(request)
        self.seen.append((request.method, request.url.path, key, resp.status_code))
        if request.method == "POST" and request.url.path == self.timeout_on:
            self.timeout_on = None
            resp.read()
            resp.close()
            raise httpx.ReadTimeout("the answer did not come in time", request=request)
        return resp


def make(client: Any, **kw: Any) -> tuple[Client, Recorder]:
    rec = Recorder(App(client), **{k: kw.pop(k) for k in ("timeout_on", "fail") if k in kw})
    key = client.headers["authorization"].removeprefix("Bearer ")
    ftg = Client("http://testserver", api_key=key, transport=rec, **kw)
    return ftg, rec


def datasets(ftg: Client) -> tuple[str, str]:
    cust = ftg.datasets.create(DEMO / "customer_harmful_looking.jsonl")
    align = ftg.datasets.create(DEMO / "alignment.jsonl", purpose="alignment")
    return cust.id, align.id


def test_create_and_wait_with_a_real_worker(client, run_worker) -> None:
    ftg, _ = make(client)
    cust, align = datasets(ftg)
    sleeps: list[float] = []

    def sleep(s: float) -> None:  # the worker runs while the client waits
        sleeps.append(s)
        if len(sleeps) == 2:
            run_worker()

    ftg._sleep = sleep
    scr = ftg.screenings.create_and_wait(
        dataset_id=cust, alignment_dataset_id=align, subset_size=10, top_k=3, progress=True, poll_interval=0.2
    )
    assert isinstance(scr, Screening) and scr.status == "succeeded" and scr.progress == 1.0
    assert scr.risk_score is not None and scr.tier in ("low", "medium", "high", "critical")
    assert sleeps == pytest.approx([0.2, 0.3])  # backs off between polls
    rep = ftg.screenings.report(scr.id)
    assert rep.report["risk"]["risk_score"] == scr.risk_score
    assert ftg.screenings.report(scr.id, redact=True).redacted is True
    types = [e.type for e in ftg.screenings.events(scr.id, limit=2)]
    assert types[0] == "screening.queued" and types[-1] == "screening.succeeded" and len(types) > 2
    assert ftg.screenings.audit(scr.id).screening_id == scr.id
    assert b"\n" in ftg.screenings.subset(scr.id, "high_sim")


def test_pagination_over_cursor_lists_and_offset_pages(client, run_worker) -> None:
    ftg, rec = make(client)
    ids = [
        ftg.datasets.create(b'{"prompt": "p%d", "completion": "c"}\n' % i, filename=f"d{i}.jsonl").id
        for i in range(5)
    ]
    pages = [[d.id for d in page] for page in ftg.datasets.list(limit=2).pages()]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(i for p in pages for i in p) == sorted(ids)
    gets = [path for m, path, _, _ in rec.seen if m == "GET"]
    assert len(gets) == 3

    cust, align = datasets(ftg)
    scr = ftg.screenings.create(dataset_id=cust, alignment_dataset_id=align, subset_size=10, top_k=3)
    run_worker()
    scores = list(ftg.screenings.scores(scr.id, limit=25))
    assert [s.record for s in scores] != [] and sorted(s.record for s in scores) == list(range(1, 63))
    sims = [s.max_sim for s in scores]  # type: ignore[attr-defined]
    assert sims == sorted(sims, reverse=True)
    assert [s.id for s in ftg.screenings.list(status="succeeded", limit=1)] == [scr.id]
    assert ftg.datasets.list(purpose="alignment").to_list()[0].id == align


def test_retry_after_429_honours_retry_after_and_reuses_the_key(client, settings, run_worker) -> None:
    settings.max_active_screenings = 1  # the app reads the same settings object per request
    ftg, rec = make(client)
    cust, align = datasets(ftg)
    first = ftg.screenings.create(dataset_id=cust, alignment_dataset_id=align, subset_size=10)
    waited: list[float] = []

    def sleep(s: float) -> None:  # waiting as told lets the first finish
        waited.append(s)
        run_worker()

    ftg._sleep = sleep
    second = ftg.screenings.create(dataset_id=cust, alignment_dataset_id=align, subset_size=10)
    assert waited == [10.0]  # the server's Retry-After for too_many_active_screenings
    posts = [(key, status) for m, path, key, status in rec.seen if m == "POST" and path == SCREEN]
    assert [s for _, s in posts] == [201, 429, 201]
    assert posts[1][0] == posts[2][0] and posts[0][0] != posts[1][0]  # one key per call, kept on retry
    assert second.id != first.id

    ftg._sleep = lambda s: None
    settings.max_active_screenings = 0
    no_retry = Client(ftg.base_url, api_key=ftg.api_key, transport=rec, max_retries=0)
    with pytest.raises(RateLimitError) as err:
        no_retry.screenings.create(dataset_id=cust, alignment_dataset_id=align)
    assert err.value.code == "too_many_active_screenings" and err.value.retry_after == 10.0


def test_idempotent_retry_of_a_timed_out_post_creates_one_screening(client) -> None:
    ftg, rec = make(client, timeout_on=SCREEN)
    ftg._sleep = lambda s: None
    cust, align = datasets(ftg)
    scr = ftg.screenings.create(dataset_id=cust, alignment_dataset_id=align, subset_size=10)
    posts = [(key, status) for m, path, key, status in rec.seen if m == "POST" and path == SCREEN]
    assert [s for _, s in posts] == [201, 201] and posts[0][0] == posts[1][0]  # both reached the server
    assert [s.id for s in ftg.screenings.list()] == [scr.id]  # ... and made one screening


def test_the_same_timeout_without_the_key_would_duplicate(client, monkeypatch) -> None:
    """The control of the test above: it can fail. Without the automatic key, the retry creates twice."""
    import ftguard.client._plans as plans

    monkeypatch.setattr(plans, "idempotency_key", lambda call: None)
    ftg, _ = make(client, timeout_on=SCREEN)
    ftg._sleep = lambda s: None
    cust, align = datasets(ftg)
    ftg.screenings.create(dataset_id=cust, alignment_dataset_id=align, subset_size=10)
    assert len(ftg.screenings.list().to_list()) == 2


def test_5xx_is_retried_with_backoff_then_raised(client) -> None:
    ftg, rec = make(client, fail=2)
    assert ftg.models.list()  # two 503s, then the answer
    assert [s for *_, s in rec.seen] == [503, 503, 200]
    assert ftg.health()["status"] == "ok"
    ftg2, _ = make(client, fail=5, max_retries=1)
    with pytest.raises(Exception) as err:
        ftg2.models.list()
    assert type(err.value).__name__ == "ServiceUnavailableError" and err.value.status_code == 503  # type: ignore[attr-defined]


def test_errors_mirror_the_envelope(client) -> None:
    ftg, _ = make(client)
    with pytest.raises(NotFoundError) as nf:
        ftg.screenings.retrieve("scr_nope")
    assert nf.value.code == "not_found" and nf.value.type == "not_found_error"
    with pytest.raises(UnprocessableEntityError) as bad:
        ftg.screenings.create(dataset_id="ds_x", alignment_dataset_id="ds_y", top_k=0)
    assert bad.value.code == "validation_error" and bad.value.param == "top_k"
    bad_key = Client("http://testserver", api_key="ftg_wrong", transport=App(client))
    with pytest.raises(AuthenticationError) as auth:
        bad_key.models.list()
    assert auth.value.code == "invalid_api_key"
    down = Client("http://127.0.0.1:9", api_key="x", retry=RetryPolicy(max_retries=1, backoff_s=0.01))
    with pytest.raises(APIConnectionError, match="cannot reach ftguard"):
        down.models.list()


def test_a_failed_screening_raises_job_failed(client, run_worker) -> None:
    ftg, _ = make(client)
    cust, align = datasets(ftg)
    scr = ftg.screenings.create(dataset_id=cust, alignment_dataset_id=align, subset_size=10)
    ftg.screenings.cancel(scr.id)
    with pytest.raises(JobFailed) as err:
        ftg.screenings.wait(scr.id)
    assert err.value.object.status == "cancelled"
    assert ftg.screenings.wait(scr.id, raise_on_failure=False).status == "cancelled"


def test_retry_policy_reads_retry_after_seconds_and_dates() -> None:
    pol = RetryPolicy(max_retries=2, max_retry_after_s=60)
    assert pol.wait(0, httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
    assert pol.wait(0, httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert pol.wait(0, httpx.Response(429, headers={"Retry-After": "3600"})) is None  # too long: raise
    assert pol.wait(2, httpx.Response(429, headers={"Retry-After": "1"})) is None  # out of retries
    assert 0.25 <= (pol.wait(1, None) or 0) <= 0.5 * 2


def test_async_client_through_the_asgi_app(client) -> None:
    key = client.headers["authorization"].removeprefix("Bearer ")

    async def go() -> tuple[list[str], str, str]:
        transport = httpx.ASGITransport(app=client.app)
        async with AsyncClient("http://testserver", api_key=key, transport=transport) as ftg:
            made = [
                (await ftg.datasets.create(b'{"prompt": "p", "completion": "c%d"}\n' % i)).id
                for i in range(3)
            ]
            listed = [d.id async for d in ftg.datasets.list(limit=2)]
            align = await ftg.datasets.create(DEMO / "alignment.jsonl", purpose="alignment")
            scr = await ftg.screenings.create(
                dataset_id=made[0], alignment_dataset_id=align.id, subset_size=5
            )
            got = await ftg.screenings.retrieve(scr.id)
            try:
                await ftg.datasets.retrieve("ds_missing")
            except NotFoundError as e:
                code = e.code or ""
            return (listed if sorted(made) == sorted(listed) else []), got.status, code

    listed, status, code = asyncio.run(go())
    assert len(listed) == 3 and status == "queued" and code == "not_found"


def test_policies_webhooks_flagged_downloads_and_rescreen(client, run_worker) -> None:
    """Every route of the README's policy, webhook and safer-dataset examples through the client."""
    client.app.state.ftguard.settings.webhook_allow_private = True  # the receiver address is loopback
    ftg, rec = make(client)
    always = [{"metric": "risk_score", "threshold": 0, "decision": "reject"}]
    strict = ftg.policies.create("strict", rules=always, row_threshold=1, otherwise="approve")
    assert isinstance(strict, Policy) and strict.version == 1
    never = [{"metric": "risk_score", "threshold": 1e9, "decision": "reject"}]
    assert ftg.policies.update("strict", rules=never, row_threshold=1, otherwise="review").version == 2
    assert sorted(p.version for p in ftg.policies.versions("strict")) == [1, 2]
    assert ftg.policies.retrieve("strict", version=1).otherwise == "approve"
    assert "strict" in {p.name for p in ftg.policies.list()}

    ep = ftg.webhook_endpoints.create("http://127.0.0.1:9/hook", events=["screening.succeeded"])
    assert isinstance(ep, WebhookEndpoint) and (ep.secret or "").startswith("whsec_")
    rotated = ftg.webhook_endpoints.rotate_secret(ep.id)
    assert rotated.secret and rotated.secret != ep.secret
    assert ftg.webhook_endpoints.retrieve(ep.id).secret is None  # shown only when made or rotated
    assert [e.id for e in ftg.webhook_endpoints.list()] == [ep.id]

    cust, align = datasets(ftg)
    scr = ftg.screenings.create(dataset_id=cust, alignment_dataset_id=align, policy="strict", subset_size=5)
    run_worker()
    assert ftg.screenings.retrieve(scr.id).decision == "review"
    assert ftg.screenings.decide(scr.id, policy="strict", version=1).decision == "reject"
    flagged = ftg.screenings.flagged(scr.id, limit=5)
    assert isinstance(flagged, Flagged) and flagged.total > 0 and isinstance(flagged.data[0], FlaggedRow)
    filtered = ftg.screenings.download(scr.id, "filtered")
    total = len((DEMO / "customer_harmful_looking.jsonl").read_text().splitlines())
    assert len(filtered.splitlines()) == total - flagged.total
    assert len(ftg.screenings.download(scr.id, "flagged").splitlines()) == flagged.total
    assert ftg.screenings.download(scr.id, "augmented", share=0.5, selection="random").count(b"\n") > total
    again = ftg.screenings.rescreen(scr.id, variant="augmented", share=0.5)
    assert again.baseline and again.baseline["screening_id"] == scr.id
    deliveries = list(ftg.webhook_endpoints.deliveries(ep.id))
    assert deliveries and all(isinstance(d, WebhookDelivery) for d in deliveries)
    assert ftg.webhook_endpoints.replay(ep.id, deliveries[0].id).id
    ftg.webhook_endpoints.delete(ep.id)
    ftg.policies.delete("strict")
    assert all(key for method, _, key, _ in rec.seen if method == "POST")  # an Idempotency-Key on each


def test_async_client_policies_and_webhooks(client) -> None:
    key = client.headers["authorization"].removeprefix("Bearer ")
    client.app.state.ftguard.settings.webhook_allow_private = True

    async def go() -> tuple[list[int], list[str], bool]:
        transport = httpx.ASGITransport(app=client.app)
        async with AsyncClient("http://testserver", api_key=key, transport=transport) as ftg:
            rules = [{"metric": "flagged_rows", "threshold": 3, "decision": "review"}]
            await ftg.policies.create("async-one", rules=rules)
            await ftg.policies.update("async-one", rules=rules, otherwise="reject")
            versions = sorted([p.version async for p in ftg.policies.versions("async-one")])
            ep = await ftg.webhook_endpoints.create("http://127.0.0.1:9/h", events=["decision.made"])
            events = [e.events[0] async for e in ftg.webhook_endpoints.list()]
            await ftg.webhook_endpoints.delete(ep.id)
            await ftg.policies.delete("async-one")
            return versions, events, (ep.secret or "").startswith("whsec_")

    versions, events, secret = asyncio.run(go())
    assert versions == [1, 2] and events == ["decision.made"] and secret
