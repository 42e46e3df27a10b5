"""The registry is the one place formats are listed: the API enum, the README table, the CLI choices and
the detection hints all follow it; and `ftguard validate` prints the API's object."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app as cli
from app.datasets.containers import CONTAINERS
from app.datasets.formats import ALL_FORMATS, REGISTRY, readme_table
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]


def _form_enum(schema: dict, path: str, field: str) -> list[str]:  # type: ignore[type-arg]
    body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    ref = body["$ref"].rsplit("/", 1)[-1]
    return schema["components"]["schemas"][ref]["properties"][field]["enum"]


def test_the_openapi_format_and_container_enums_are_the_registries(settings) -> None:  # type: ignore[no-untyped-def]
    schema = create_app(settings).openapi()
    for path in ("/v1/datasets", "/v1/datasets/validate"):
        assert _form_enum(schema, path, "format") == ["auto", *(s.name for s in REGISTRY)]
        assert _form_enum(schema, path, "container") == ["auto", *CONTAINERS]


def test_the_readme_table_is_the_registry_and_lists_every_format() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme_table() in readme
    for name in ALL_FORMATS:
        assert f"| `{name}` |" in readme
    assert "## Add a dataset format" in (ROOT / "CONTRIBUTING.md").read_text()


def test_the_cli_choices_are_the_registry(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n')
    r = CliRunner().invoke(cli, ["validate", str(f), "--format", "yaml"])
    assert r.exit_code == 2
    for name in ALL_FORMATS:
        assert CliRunner().invoke(cli, ["validate", str(f), "--format", name]).exit_code in (0, 1), name


def test_validate_exits_0_or_1_and_json_is_the_api_object(tmp_path: Path, client) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "a", "completion": "b"}\n{"text": "x"}\n')
    r = CliRunner().invoke(cli, ["validate", str(good)])
    assert r.exit_code == 1 and "line 2, record 2, field prompt: missing_field" in r.output
    good.write_text('{"prompt": "a", "completion": "b"}\n')
    r = CliRunner().invoke(cli, ["validate", str(good)])
    assert r.exit_code == 0 and "format prompt-completion" in r.output and "examples 1" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": 1, "completion": "b"}\n')
    r = CliRunner().invoke(cli, ["validate", str(bad), "--json"])
    assert r.exit_code == 1
    local = json.loads(r.output)
    api = client.post(
        "/v1/datasets/validate",
        files={"file": ("bad.jsonl", bad.read_bytes())},
        data={"purpose": "fine-tune"},
    )
    assert api.status_code == 200, api.text
    assert api.json() == local
    assert local["errors"] == [
        {
            "line": 2,
            "record": 2,
            "code": "invalid_type",
            "field": "prompt",
            "message": local["errors"][0]["message"],
        }
    ]
    assert local["valid"] is False and local["object"] == "dataset.validation"
