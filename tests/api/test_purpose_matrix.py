"""Purpose x role: every dataset purpose in every role of every create route, and only the valid pairs are
accepted. The roles are read from the OpenAPI schema (every `dataset_id` / `*_dataset_id` field of every
POST body), so a new role, or a new create route, fails here until its purpose is written down."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.core.vocab import PURPOSES
from tests.conftest import DEMO, upload

FILES = {
    "fine-tune": "customer_benign_lists.jsonl",
    "alignment": "alignment.jsonl",
    "harmful-anchors": "anchors_harmful.jsonl",
    "safe-anchors": "anchors_safe.jsonl",
    "eval-prompts": "eval_prompts.jsonl",
}
# (route, field path) -> the purpose that role needs; "[]" marks a list item.
ROLES: dict[tuple[str, str], str] = {
    ("/v1/screenings", "dataset_id"): "fine-tune",
    ("/v1/screenings", "alignment_dataset_id"): "alignment",
    ("/v1/screenings", "harmful_anchors_dataset_id"): "harmful-anchors",
    ("/v1/screenings", "safe_anchors_dataset_id"): "safe-anchors",
    ("/v1/rankings", "dataset_id"): "fine-tune",
    ("/v1/rankings", "candidates[].alignment_dataset_id"): "alignment",
    ("/v1/experiments", "alignment.dataset_id"): "alignment",
    ("/v1/experiments", "fine_tune.dataset_id"): "fine-tune",
    ("/v1/experiments", "evaluation.dataset_id"): "eval-prompts",
    ("/v1/comparisons", "alignment.dataset_id"): "alignment",
    ("/v1/comparisons", "fine_tune.dataset_id"): "fine-tune",
    ("/v1/comparisons", "evaluation.dataset_id"): "eval-prompts",
}


def _fields(schema: dict[str, Any], defs: dict[str, Any], prefix: str = "") -> list[str]:
    """Field paths of every dataset id in a request body schema."""
    if "$ref" in schema:
        return _fields(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, prefix)
    out = []
    for alt in schema.get("anyOf", []) + schema.get("allOf", []):
        out += _fields(alt, defs, prefix)
    if schema.get("type") == "array" and "items" in schema:
        out += _fields(schema["items"], defs, prefix + "[]")
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        if name == "dataset_id" or name.endswith("_dataset_id"):
            out.append(path)
        else:
            out += _fields(sub, defs, path)
    return sorted(set(out))


def _schema_roles(client: Any) -> set[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    defs = spec["components"]["schemas"]
    found = set()
    for path, ops in spec["paths"].items():
        body = ops.get("post", {}).get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            found |= {(path, f) for f in _fields(body["schema"], defs)}
    return found


def _set(body: dict[str, Any], field: str, value: str) -> None:
    node: Any = body
    parts = field.split(".")
    for part in parts[:-1]:
        if part.endswith("[]"):
            node = node[part[:-2]]
            for item in node:
                _set(item, ".".join(parts[parts.index(part) + 1 :]), value)
            return
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _valid(route: str, ids: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {"candidates": [{"name": "a"}, {"name": "b"}]} if route == "/v1/rankings" else {}
    for (r, field), purpose in ROLES.items():
        if r == route:
            _set(body, field, ids[purpose])
    return body


@pytest.fixture
def world(client, settings) -> dict[str, Any]:
    settings.max_active_screenings = 100_000  # every valid request here is accepted and queued
    settings.max_active_experiments = settings.max_active_comparisons = 100_000
    settings.max_active_compute_tokens = 10**15
    ids = {p: upload(client, DEMO / f, purpose=p).json()["id"] for p, f in FILES.items()}
    return ids


def _post(client: Any, route: str, body: dict[str, Any]) -> Any:
    return client.post(route, json=body)


def test_the_roles_in_the_schema_are_the_roles_checked_here(client) -> None:
    assert _schema_roles(client) == set(ROLES), "a dataset id field changed: give it its purpose in ROLES"
    assert set(ROLES.values()) <= set(PURPOSES)


def test_every_purpose_in_every_role(client, world) -> None:
    """The whole matrix: one request per (route, role, purpose), the other roles valid."""
    seen = 0
    for (route, field), needed in ROLES.items():
        for purpose in PURPOSES:
            body = _valid(route, world)
            _set(body, field, world[purpose])
            r = _post(client, route, body)
            seen += 1
            if purpose == needed:
                assert r.status_code == 201, (route, field, purpose, r.text[:300])
            else:
                err = r.json()["error"]
                assert r.status_code == 400 and err["code"] == "wrong_purpose", (
                    route,
                    field,
                    purpose,
                    r.text,
                )
                assert err["param"].replace("[0]", "[]").replace("[1]", "[]") == field, err
    assert seen == len(ROLES) * len(PURPOSES)


ROUTES = sorted({r for r, _ in ROLES})


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mix_of_purposes_is_accepted_only_when_every_role_fits(client, world, data) -> None:
    route = data.draw(st.sampled_from(ROUTES), label="route")
    fields = [f for r, f in ROLES if r == route]
    chosen = {f: data.draw(st.sampled_from(PURPOSES), label=f) for f in fields}
    body = _valid(route, world)
    for f, purpose in chosen.items():
        _set(body, f, world[purpose])
    r = _post(client, route, body)
    wrong = {f for f, p in chosen.items() if p != ROLES[(route, f)]}
    if not wrong:
        assert r.status_code == 201, (route, chosen, r.text[:300])
    else:
        err = r.json()["error"]
        assert r.status_code == 400 and err["code"] == "wrong_purpose", (route, chosen, r.text[:300])
        assert err["param"].replace("[0]", "[]").replace("[1]", "[]") in wrong, (err, wrong)
