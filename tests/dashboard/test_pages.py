"""Dashboard pages through the real app with a screening run by a real worker."""

from __future__ import annotations

import re

import pytest
from markupsafe import escape

from tests.conftest import upload


@pytest.fixture
def client(dash):
    return dash.client


@pytest.fixture
def finished(dash) -> dict:
    return dash.ids


def test_list_shows_screenings_by_risk_with_tiles_filters_and_sorting(client, finished) -> None:
    r = client.get("/dashboard")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'none'" in r.headers["content-security-policy"]
    html = r.text
    ids = re.findall(r'data-screening="(scr_[0-9a-f]+)"', html)
    # risk descending, the unfinished one last
    assert ids == [finished["harmful"], finished["benign"], finished["queued"]]
    assert "customer_harmful_looking.jsonl" in html and 'class="riskbar"' in html
    assert "badge tier-critical" in html or "badge tier-high" in html

    asc = client.get("/dashboard", params={"sort": "risk", "order": "asc"}).text
    assert re.findall(r'data-screening="(scr_[0-9a-f]+)"', asc)[:2] == [
        finished["benign"],
        finished["harmful"],
    ]
    only = client.get("/dashboard", params={"status": "queued"}).text
    assert re.findall(r'data-screening="(scr_[0-9a-f]+)"', only) == [finished["queued"]]
    found = client.get("/dashboard", params={"q": "harmful"}).text
    assert re.findall(r'data-screening="(scr_[0-9a-f]+)"', found) == [finished["harmful"]]
    # form values that mean "any", and junk, do not break the page
    r = client.get("/dashboard", params={"status": "", "tier": "nope", "sort": "x", "order": "y"})
    assert r.status_code == 200 and len(re.findall(r"data-screening=", r.text)) == 3
    assert "No screening matches" in client.get("/dashboard", params={"q": "no-such-file"}).text
    assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard"
    css = client.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def _texts(client, sid: str) -> tuple[str, str, str]:
    """The top driver's own text, its nearest alignment text and its nearest harmful anchor text, as the
    page escapes them."""
    top = client.get(f"/v1/screenings/{sid}/report").json()["report"]["top_examples"][0]
    anchor = top["anchor_evidence"][0]["nearest_harmful_anchor"]["example"]["prompt"]
    return tuple(
        str(escape(t[:40]))
        for t in (top["example"]["prompt"], top["nearest_alignment"][0]["example"]["prompt"], anchor)
    )


def test_detail_shows_histogram_levels_examples_and_downloads(client, finished) -> None:
    sid = finished["harmful"]
    html = client.get(f"/dashboard/screenings/{sid}").text
    assert 'data-chart="histogram"' in html and 'data-chart="gauge"' in html
    assert {"floor", "near", "high"} <= set(re.findall(r'data-level="(\w+)"', html))
    own, aligned, anchor = _texts(client, sid)
    assert own in html and aligned in html  # nearest alignment text, not redacted
    assert anchor in html and "Nearest anchors" in html  # the anchor part's evidence
    assert re.search(r"<dt>similarity</dt><dd>exact · (fp32|bf16 screen, fp32 re-score)", html)
    for name in ("high_sim", "low_sim"):
        href = f"/dashboard/screenings/{sid}/subsets/{name}"
        assert href in html
        r = client.get(href)
        assert r.status_code == 200 and len(r.text.splitlines()) == 10
        assert r.text == client.get(f"/v1/screenings/{sid}/subsets/{name}").text
    doc = client.get(f"/dashboard/screenings/{sid}/report.html")
    assert doc.status_code == 200 and "attachment" in doc.headers["content-disposition"]
    assert "<style>" in doc.text and 'data-chart="histogram"' in doc.text


def test_redacted_view_hides_alignment_texts_but_keeps_record_numbers(client, finished) -> None:
    sid = finished["harmful"]
    own, aligned, anchor = _texts(client, sid)
    html = client.get(f"/dashboard/screenings/{sid}", params={"redact": 1}).text
    assert aligned not in html and anchor not in html
    assert "alignment record" in html and "text hidden" in html
    assert own in html  # the customer's own text stays
    doc = client.get(f"/dashboard/screenings/{sid}/report.html", params={"redact": 1}).text
    assert aligned not in doc and anchor not in doc


def test_forced_redaction_blocks_subset_downloads(client, finished) -> None:
    from app.dashboard.routes import hide_alignment_texts

    client.app.dependency_overrides[hide_alignment_texts] = lambda: True
    try:
        sid = finished["harmful"]
        _, aligned, _ = _texts(client, sid)
        html = client.get(f"/dashboard/screenings/{sid}").text
        assert aligned not in html and "/subsets/" not in html
        r = client.get(f"/dashboard/screenings/{sid}/subsets/high_sim")
        assert r.status_code == 403 and "may not read alignment texts" in r.text
        doc = client.get(f"/dashboard/screenings/{sid}/report.html").text
        assert aligned not in doc
    finally:
        client.app.dependency_overrides.clear()


def test_queued_screening_shows_progress_and_refreshes(client, finished) -> None:
    html = client.get(f"/dashboard/screenings/{finished['queued']}").text
    assert 'role="progressbar"' in html and 'http-equiv="refresh"' in html
    assert "screening.queued" in html and "data-chart" not in html


def test_not_found_pages(client, finished) -> None:
    r = client.get("/dashboard/screenings/scr_nope")
    assert r.status_code == 404 and "no screening" in r.text.lower() and "<html" in r.text
    assert client.get("/dashboard/screenings/scr_nope/report.html").status_code == 404
    r = client.get(f"/dashboard/screenings/{finished['queued']}/report.html")
    assert r.status_code == 404 and "no report yet" in r.text
    assert client.get(f"/dashboard/screenings/{finished['harmful']}/subsets/nope").status_code == 404


def test_user_text_is_escaped(client, dash) -> None:
    # Last in the module: its worker run also finishes the screening the tests above need queued.
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    line = (
        '{"messages": [{"role": "user", "content": "' + evil.replace('"', '\\"') + '"}, '
        '{"role": "assistant", "content": "ok"}]}\n'
    )
    cust = upload(client, "x.jsonl", name=f"{evil}.jsonl", content=(line * 3).encode()).json()["id"]
    align = dash.ids["alignment"]
    sid = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()["id"]
    dash.work()
    for url in ("/dashboard", f"/dashboard/screenings/{sid}", f"/dashboard/screenings/{sid}/report.html"):
        html = client.get(url).text
        assert "<script>" not in html and "<img src=x" not in html, url
    # file names are cleaned at upload; example texts are escaped
    assert "&lt;script&gt;" in client.get(f"/dashboard/screenings/{sid}").text


def test_similarity_summary_says_how_the_comparison_ran() -> None:
    from app.dashboard.render import similarity_summary

    assert similarity_summary({}) == ""
    screened = {
        "method": "exact",
        "precision": "bf16 screen, fp32 re-score",
        "fp32_fallback": {"rows": 3, "columns": 1, "unscreened_rows": 4096},
        "centered": True,
        "recall_at_k": None,
        "device": "cpu",
    }
    assert similarity_summary(screened) == (
        "exact · bf16 screen, fp32 re-score · 3 rows and 1 columns redone in fp32, 4096 rows not screened"
        " (scores too bunched for bf16) · centred · cpu"
    )
    ivf = {"method": "faiss-ivf", "precision": "fp32", "centered": False, "recall_at_k": 0.9871, "k": 5}
    assert similarity_summary(ivf) == "faiss-ivf · fp32 · not centred · measured recall@5 0.987"


def test_detail_and_list_show_the_policy_decision(client, finished) -> None:
    sid = finished["harmful"]
    scr = client.get(f"/v1/screenings/{sid}").json()
    assert scr["decision"] in ("approve", "review", "reject")
    html = client.get(f"/dashboard/screenings/{sid}").text
    assert f'<span class="badge decision-badge-{scr["decision"]}">{scr["decision"]}</span>' in html
    assert "Policy <code>default</code> version 0" in html
    assert f"decision-badge-{scr['decision']}" in client.get("/dashboard").text
