"""The experiments pages: a real experiment on a tiny random Llama, run by a real worker, then its list row,
its stages with loss curves, its results and artefacts; a queued one; tenancy; escaping."""

from __future__ import annotations

import io
import re
import tarfile
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer, make_key
from tests.dashboard.conftest import run_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exps(dash: SimpleNamespace, tiny_llama: str) -> SimpleNamespace:
    done = run_experiment(dash, tiny_llama, name="lists <b>pilot</b>")
    queued = run_experiment(dash, tiny_llama, name="waiting", work=False)
    return SimpleNamespace(done=done, queued=queued, client=dash.client)


def test_list_shows_experiments_with_state_and_results(exps: SimpleNamespace) -> None:
    page = exps.client.get("/dashboard/experiments")
    assert page.status_code == 200
    done = exps.client.get(f"/v1/experiments/{exps.done}").json()
    assert done["status"] == "succeeded", done["error"]
    row = re.search(rf'<tr data-experiment="{exps.done}">(.*?)</tr>', page.text, re.S)
    assert row and "status-succeeded" in row.group(1) and "high_sim" in row.group(1)
    assert f"{100 * done['results']['headline']['harmfulness_rate']:.1f}%" in row.group(1)
    assert f'data-experiment="{exps.queued}"' in page.text
    assert 'aria-current="page">Experiments' in page.text
    only_queued = exps.client.get("/dashboard/experiments", params={"status": "queued"}).text
    assert exps.queued in only_queued and exps.done not in only_queued
    assert exps.done in exps.client.get("/dashboard/experiments", params={"status": "bogus"}).text


def test_detail_shows_stages_loss_curves_results_and_artefacts(exps: SimpleNamespace) -> None:
    page = exps.client.get(f"/dashboard/experiments/{exps.done}")
    assert page.status_code == 200
    html = page.text
    stages = re.findall(r'<tr data-stage="(\w+)">(.*?)</tr>', html, re.S)
    assert [s for s, _ in stages] == ["select", "align", "finetune", "generate", "judge", "summarise"]
    assert all("status-succeeded" in row for _, row in stages)
    # one loss curve per training stage, from the stage's own record of its steps
    exp = exps.client.get(f"/v1/experiments/{exps.done}").json()
    for stage in ("align", "finetune"):
        section = re.search(rf'<section class="card" data-loss="{stage}">(.*?)</section>', html, re.S)
        assert section, stage
        points = re.search(r'<polyline class="line"[^>]* points="([^"]+)"', section.group(1))
        assert points
        curve = next(s for s in exp["stages"] if s["name"] == stage)["result"]["loss_curve"]
        assert len(points.group(1).split()) == len(curve) == exp["results"]["training"][stage]["steps"]
    events = exps.client.get(f"/v1/experiments/{exps.done}/events", params={"limit": 500}).json()["data"]
    assert not any("loss_curve" in (e.get("data") or {}) for e in events)  # kept on the stage row only
    assert "harmfulness rate (keyword judge, 40 harmful prompts)" in html
    assert '<table class="categories">' in html  # the bundled prompts carry categories
    assert "refreshes" not in html  # finished: no auto-refresh
    assert 'http-equiv="refresh"' not in html
    # artefacts download through the dashboard's own authentication
    links = re.findall(rf'href="(/dashboard/experiments/{exps.done}/artefacts/\w+)"', html)
    assert len(links) == 4
    adapter = exps.client.get(f"/dashboard/experiments/{exps.done}/artefacts/finetune_adapter")
    assert adapter.status_code == 200 and "attachment" in adapter.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(adapter.content)) as tar:
        assert "adapter_config.json" in tar.getnames()
    gens = exps.client.get(f"/dashboard/experiments/{exps.done}/artefacts/generations")
    assert gens.headers["content-type"].startswith("application/x-ndjson")
    assert len(gens.text.splitlines()) == 60
    assert exps.client.get(f"/dashboard/experiments/{exps.done}/artefacts/nope").status_code == 404


def test_a_queued_experiment_refreshes_and_offers_no_artefacts(exps: SimpleNamespace) -> None:
    html = exps.client.get(f"/dashboard/experiments/{exps.queued}").text
    assert 'http-equiv="refresh"' in html and "status-queued" in html
    assert "/artefacts/" not in html and "data-loss" not in html
    missing = exps.client.get(f"/dashboard/experiments/{exps.queued}/artefacts/generations")
    assert missing.status_code == 404 and "no artefact" in missing.text


def test_names_are_escaped_and_unknown_ids_are_404(exps: SimpleNamespace) -> None:
    html = exps.client.get(f"/dashboard/experiments/{exps.done}").text
    assert "lists &lt;b&gt;pilot&lt;/b&gt;" in html and "<b>pilot</b>" not in html
    r = exps.client.get("/dashboard/experiments/exp_nope")
    assert r.status_code == 404 and "There is no experiment" in r.text


def test_another_tenant_sees_none_of_it(exps: SimpleNamespace) -> None:
    app = exps.client.app
    other = TestClient(app, headers=bearer(make_key(app.state.ftguard.services.db, "other-exp")))
    assert exps.done not in other.get("/dashboard/experiments").text
    for path in (
        f"/dashboard/experiments/{exps.done}",
        f"/dashboard/experiments/{exps.done}/artefacts/generations",
    ):
        assert other.get(path).status_code == 404, path
    anonymous = TestClient(app).get(f"/dashboard/experiments/{exps.done}", follow_redirects=False)
    assert anonymous.status_code in (302, 303, 307) and "sign-in" in anonymous.headers["location"]


def test_line_chart_axes_fit_the_curve_and_texts_are_escaped() -> None:
    from app.dashboard.charts import Axes, line_chart, nice_range

    assert nice_range(0.0, 3.0, 6, integer=True) == [0, 1, 2, 3]  # whole steps, never 0.5
    assert nice_range(10.80, 10.84)[0] == 10.8 and nice_range(10.80, 10.84)[-1] >= 10.84  # zoomed in
    assert nice_range(0.4, 2.3)[0] == 0  # from 0 when the low end is near it
    svg = line_chart([("<x>", "#000", [[1, 2.0], [2, 1.5], [3, 1.0]])], Axes("a & b", "step", "loss"))
    assert "&lt;x&gt;" in svg and "<x>" not in svg and "a &amp; b" in svg
    ys = [float(p.split(",")[1]) for p in re.search(r'points="([^"]+)"', svg).group(1).split()]  # type: ignore[union-attr]
    assert ys == sorted(ys)  # SVG y grows downwards: a falling loss is a rising y
