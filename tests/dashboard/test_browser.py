"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, JavaScript off (the
pages need none), against a live server with finished screenings. Saves screenshots; with
FTGUARD_UPDATE_SCREENSHOTS=1 it also refreshes the ones in docs/."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import DEMO, upload
from tests.dashboard.conftest import run_experiment

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("one_thread")]
CHROMIUM = os.environ.get("FTGUARD_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _need_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test; missing: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")


@pytest.fixture(scope="module")
def live(dash: SimpleNamespace, tiny_llama: str) -> Iterator[SimpleNamespace]:
    """A real uvicorn server on a free loopback port, over the module's finished screenings and one finished
    experiment."""
    import uvicorn

    from app.main import create_app

    _need_browser()
    lists = upload(dash.client, DEMO / "customer_benign_lists.jsonl").json()["id"]
    dash.client.post(
        "/v1/screenings", json={"dataset_id": lists, "alignment_dataset_id": dash.ids["alignment"]}
    )
    dash.work()  # also finishes the queued one; the browser sees four finished screenings
    experiment = run_experiment(dash, tiny_llama, name="harmful-looking, High-Sim alignment")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(dash.settings, redis_url=dash.settings.redis_url)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", ids=dash.ids, key=dash.key, experiment=experiment)
    server.should_exit = True
    thread.join(timeout=15)
    sock.close()


def test_list_chart_and_click_through_in_chromium(live: SimpleNamespace, tmp_path_factory) -> None:
    from playwright.sync_api import sync_playwright

    shots = tmp_path_factory.mktemp("screenshots")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))

            page.goto(f"{live.url}/dashboard")  # no key yet: the sign-in form, then back to the list
            page.wait_for_url("**/dashboard/sign-in?next=*")
            page.fill("#key", live.key)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/dashboard")
            row = page.locator(f'tr[data-screening="{live.ids["harmful"]}"]')
            assert row.is_visible()
            assert "customer_harmful_looking.jsonl" in row.inner_text()
            # highest risk first
            assert page.locator("tbody tr").first.get_attribute("data-screening") == live.ids["harmful"]
            bar = row.locator("svg.riskbar").bounding_box()
            assert bar and bar["width"] > 50
            header = page.locator("header.top").evaluate("e => getComputedStyle(e).backgroundColor")
            assert header == "rgb(27, 31, 36)"  # the stylesheet, served by the app, applied
            page.screenshot(path=str(shots / "list.png"))

            row.locator("a.row-link").click()
            page.wait_for_url(f"**/dashboard/screenings/{live.ids['harmful']}")
            chart = page.locator('svg[data-chart="histogram"]').first
            box = chart.bounding_box()
            assert box and box["width"] > 600 and box["height"] > 150
            assert chart.locator("rect.bar").count() >= 3
            assert chart.locator("line.level").count() == 3
            assert page.locator('svg[data-chart="gauge"]').is_visible()
            assert page.locator("article.pair").first.is_visible()
            assert page.get_by_role("link", name="Download JSONL").count() == 3
            page.set_viewport_size({"width": 1280, "height": 1240})  # the score and the whole histogram
            page.screenshot(path=str(shots / "detail.png"))
            page.screenshot(path=str(shots / "detail-full.png"), full_page=True)

            page.get_by_role("link", name="Experiments").click()
            page.wait_for_url("**/dashboard/experiments")
            row = page.locator(f'tr[data-experiment="{live.experiment}"]')
            assert "succeeded" in row.inner_text()
            row.locator("a.row-link").click()
            page.wait_for_url(f"**/dashboard/experiments/{live.experiment}")
            assert page.locator("tr[data-stage]").count() == 6
            for stage in ("align", "finetune"):
                curve = page.locator(f'[data-loss="{stage}"] svg[data-chart="line"]')
                box = curve.bounding_box()
                assert box and box["width"] > 600 and box["height"] > 120, stage
                assert curve.locator("polyline.line").count() == 1
            page.screenshot(path=str(shots / "experiment.png"), full_page=True)
        finally:
            browser.close()
    # every request went to the app itself: no CDN, no fonts, nothing external
    assert requested and all(u.startswith(live.url) or u.startswith("data:") for u in requested), requested
    for name in ("list.png", "detail.png", "experiment.png"):
        assert (shots / name).stat().st_size > 10_000
    if os.environ.get("FTGUARD_UPDATE_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        shutil.copy(shots / "detail.png", DOCS / "dashboard.png")
        shutil.copy(shots / "list.png", DOCS / "dashboard-list.png")
        shutil.copy(shots / "experiment.png", DOCS / "dashboard-experiment.png")
