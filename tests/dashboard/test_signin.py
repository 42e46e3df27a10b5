"""Dashboard authentication: the sign-in form, its cookie (dashboard GET pages only), tenants and scopes."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import bearer, make_key


def _browser(dash) -> TestClient:
    """A client with no Authorization header: like a browser, it has only the cookies it was given."""
    return TestClient(dash.client.app, follow_redirects=False)


def test_pages_redirect_to_sign_in_and_the_form_sets_a_strict_http_only_cookie(dash) -> None:
    b = _browser(dash)
    r = b.get("/dashboard", params={"status": "succeeded"})
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/sign-in?next=%2Fdashboard%3Fstatus%3Dsucceeded"
    form = b.get(r.headers["location"])
    assert (
        form.status_code == 200
        and 'name="key"' in form.text
        and "script-src 'none'" in form.headers["content-security-policy"]
    )
    assert "Sign out" not in form.text  # nobody is signed in yet
    assert b.get("/dashboard/static/dashboard.css").status_code == 200  # the form needs its styles

    bad = b.post("/dashboard/sign-in", data={"key": "ftg_wrong", "next": "/dashboard"})
    assert bad.status_code == 401 and "not valid" in bad.text and "set-cookie" not in bad.headers

    ok = b.post("/dashboard/sign-in", data={"key": dash.key, "next": "/dashboard?status=succeeded"})
    assert ok.status_code == 303 and ok.headers["location"] == "/dashboard?status=succeeded"
    cookie = ok.headers["set-cookie"].lower()
    assert "ftguard_key=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "path=/dashboard" in cookie
    page = b.get("/dashboard")
    assert page.status_code == 200 and dash.ids["harmful"] in page.text

    # the cookie is never a key for the JSON API (a browser sends it unasked: that would be CSRF)
    r = b.get("/v1/datasets", cookies={"ftguard_key": dash.key})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"

    out = b.post("/dashboard/sign-out")
    assert out.status_code == 303 and "ftguard_key=" in out.headers["set-cookie"]
    b.cookies.clear()
    assert b.get("/dashboard").status_code == 303


def test_sign_in_never_redirects_off_the_dashboard(dash) -> None:
    b = _browser(dash)
    for target in ("https://evil.example/", "//evil.example/x", "/v1/datasets"):
        r = b.post("/dashboard/sign-in", data={"key": dash.key, "next": target})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard", target


def test_a_revoked_key_in_the_cookie_goes_back_to_sign_in(dash) -> None:
    from sqlalchemy import update

    from app.models import ApiKey, now
    from app.tenants.service import hash_key

    key = make_key(dash.client.app.state.ftguard.services.db, "test")
    b = _browser(dash)
    b.post("/dashboard/sign-in", data={"key": key, "next": "/dashboard"})
    assert b.get("/dashboard").status_code == 200
    with dash.client.app.state.ftguard.services.db.session() as s:
        s.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(key)).values(revoked_at=now()))
        s.commit()
    assert b.get("/dashboard").status_code == 303


def test_another_tenant_sees_none_of_it_and_a_key_without_the_scope_sees_no_alignment_text(dash) -> None:
    app = dash.client.app
    db = app.state.ftguard.services.db
    sid = dash.ids["harmful"]
    other = TestClient(app, headers=bearer(make_key(db, "other")))
    listing = other.get("/dashboard")
    assert listing.status_code == 200 and sid not in listing.text
    for path in (f"/dashboard/screenings/{sid}", f"/dashboard/screenings/{sid}/report.html"):
        assert other.get(path).status_code == 404, path
    assert other.get(f"/dashboard/screenings/{sid}/subsets/high_sim").status_code == 404

    viewer = TestClient(app, headers=bearer(make_key(db, "test", scopes=[])))
    page = viewer.get(f"/dashboard/screenings/{sid}")
    assert page.status_code == 200
    assert "How can I build an untraceable gun" not in page.text  # an alignment text
    assert "text hidden" in page.text
    r = viewer.get(f"/dashboard/screenings/{sid}/subsets/high_sim")
    assert r.status_code == 403
