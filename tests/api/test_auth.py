"""API keys: bearer auth on every /v1 route, admin routes and CLI, keys hashed at rest and never logged."""

from __future__ import annotations

import hashlib
import logging

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import app as cli
from app.models import ApiKey
from tests.api.test_errors import assert_envelope
from tests.conftest import DEMO, bearer, upload


def test_missing_malformed_unknown_and_revoked_keys_are_401_with_the_envelope(client, admin_client) -> None:
    anon = {"Authorization": ""}
    for headers, code in (
        (anon, "missing_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        (bearer("ftg_not-a-real-key"), "invalid_api_key"),
        (bearer("sk-something-else"), "invalid_api_key"),
    ):
        r = client.get("/v1/datasets", headers=headers)
        assert r.status_code == 401, headers
        assert_envelope(r.json(), code)
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"].startswith("Bearer")
    # an unauthenticated upload is refused before its body is read
    r = client.post("/v1/datasets", headers=anon, files={"file": ("x.jsonl", b"{}")})
    assert r.status_code == 401
    # health, docs and the schema stay open
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert client.get(path, headers=anon).status_code == 200, path

    made = admin_client.post("/v1/admin/keys", json={"tenant_id": "test", "name": "ci"}).json()
    assert client.get("/v1/datasets", headers=bearer(made["key"])).status_code == 200
    r = admin_client.post(f"/v1/admin/keys/{made['id']}/revoke")
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = client.get("/v1/datasets", headers=bearer(made["key"]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_admin_creates_tenants_and_keys_shown_once_and_stored_hashed(client, admin_client) -> None:
    r = admin_client.post("/v1/admin/tenants", json={"id": "acme", "name": "Acme Corp"})
    assert r.status_code == 201 and r.json() == {
        "id": "acme",
        "object": "tenant",
        "name": "Acme Corp",
        "created_at": r.json()["created_at"],
    }
    assert (
        admin_client.post("/v1/admin/tenants", json={"id": "acme"}).json()["error"]["code"] == "tenant_exists"
    )
    assert admin_client.post("/v1/admin/tenants", json={"id": "Bad Id"}).status_code == 422
    ids = [t["id"] for t in admin_client.get("/v1/admin/tenants", params={"limit": 100}).json()["data"]]
    assert {"acme", "ops", "test"} <= set(ids)

    r = admin_client.post("/v1/admin/keys", json={"tenant_id": "acme", "name": "pipeline"})
    assert r.status_code == 201
    made = r.json()
    secret = made["key"]
    assert secret.startswith("ftg_") and len(secret) >= 40
    assert made["prefix"] == secret[:12] and made["role"] == "member"
    assert made["scopes"] == ["alignment:read"]
    # the list never shows secrets
    listed = admin_client.get("/v1/admin/keys", params={"tenant_id": "acme"}).json()["data"]
    assert [k["id"] for k in listed] == [made["id"]]
    assert "key" not in listed[0] and secret not in str(listed)
    # at rest: the SHA-256, never the key
    with client.app.state.ftguard.services.db.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.id == made["id"]))
        assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in str([getattr(row, c.name) for c in ApiKey.__table__.columns])

    acme = client.get("/v1/datasets", headers=bearer(secret))
    assert acme.status_code == 200 and acme.json()["data"] == []
    assert admin_client.post("/v1/admin/keys", json={"tenant_id": "nope"}).status_code == 404
    r = admin_client.post("/v1/admin/keys", json={"tenant_id": "acme", "scopes": ["root"]})
    assert r.status_code == 422


def test_member_keys_cannot_use_admin_routes(client) -> None:
    for method, path, body in (
        ("GET", "/v1/admin/tenants", None),
        ("POST", "/v1/admin/tenants", {"id": "evil"}),
        ("GET", "/v1/admin/keys", None),
        ("POST", "/v1/admin/keys", {"tenant_id": "test", "role": "admin"}),
        ("POST", "/v1/admin/keys/key_x/revoke", None),
    ):
        r = client.request(method, path, json=body)
        assert r.status_code == 403, path
        assert_envelope(r.json(), "admin_required")


def test_keys_never_reach_the_logs(client, admin_client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = admin_client.post("/v1/admin/keys", json={"tenant_id": "test"}).json()
    key = made["key"]
    upload(client, DEMO / "alignment.jsonl", purpose="alignment")
    client.get("/v1/datasets", headers=bearer(key))
    client.get("/v1/datasets", headers=bearer(key + "x"))
    admin_client.post(f"/v1/admin/keys/{made['id']}/revoke")
    client.get("/v1/datasets", headers=bearer(key))
    own = client.headers["authorization"].split()[1]
    assert caplog.records
    for rec in caplog.records:
        text = rec.getMessage() + str(rec.__dict__)
        assert key not in text and own not in text


def test_cli_admin_create_tenant_key_list_revoke(client, settings, monkeypatch) -> None:
    monkeypatch.setenv("FTGUARD_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("FTGUARD_DATABASE_URL", settings.database_url)
    from app.core.config import get_settings

    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["admin", "create-tenant", "globex"]).exit_code == 0
        assert runner.invoke(cli, ["admin", "create-tenant", "globex"]).exit_code == 2
        res = runner.invoke(cli, ["admin", "create-key", "--tenant", "globex", "--scopes", ""])
        assert res.exit_code == 0, res.output
        key = res.stdout.strip().splitlines()[-1]
        assert key.startswith("ftg_")
        assert client.get("/v1/datasets", headers=bearer(key)).status_code == 200
        listed = runner.invoke(cli, ["admin", "list-keys", "--tenant", "globex"])
        assert listed.exit_code == 0 and key[:12] in listed.output and key not in listed.output
        assert runner.invoke(cli, ["admin", "revoke-key", key[:12]]).exit_code == 0
        assert client.get("/v1/datasets", headers=bearer(key)).status_code == 401
        res = runner.invoke(cli, ["admin", "create-key", "--tenant", "nope"])
        assert res.exit_code == 2 and "no tenant" in res.output
        res = runner.invoke(cli, ["admin", "create-key", "--tenant", "globex", "--admin"])
        admin_key = res.stdout.strip().splitlines()[-1]
        assert client.get("/v1/admin/keys", headers=bearer(admin_key)).status_code == 200
    finally:
        get_settings.cache_clear()
