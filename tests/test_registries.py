"""The extension registries: every registered representation backend and judge resolves to a class of that
name with the constructor the registry calls, and the API schema and the CLI take their names from the
registry, not from a list of their own."""

from __future__ import annotations

import importlib

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from app.core.backends import BACKENDS
from app.experiments.judge_kinds import JUDGES
from app.experiments.schemas import ExperimentCreate, JudgeSpec
from app.schemas import ScreeningCreate

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store


def _resolve(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_resolves_to_its_class(name: str) -> None:
    cls = _resolve(BACKENDS[name].path)
    assert cls.backend == name and callable(cls.load)


@pytest.mark.parametrize("name", list(JUDGES))
def test_every_judge_resolves_to_its_class(name: str) -> None:
    cls = _resolve(JUDGES[name].path)
    assert cls.name == name and callable(cls.from_spec)


def test_the_api_schema_lists_the_registered_names_and_refuses_others() -> None:
    backend = ScreeningCreate.model_json_schema()["properties"]["backend"]["anyOf"][0]
    assert backend["enum"] == list(BACKENDS)
    assert JudgeSpec.model_json_schema()["properties"]["type"]["enum"] == list(JUDGES)
    with pytest.raises(ValidationError, match="unknown representation backend"):
        ScreeningCreate(dataset_id="d", alignment_dataset_id="a", backend="word2vec")
    with pytest.raises(ValidationError, match="unknown judge"):
        JudgeSpec(type="vibes")
    for name, kind in JUDGES.items():  # a registry-model judge needs its model
        if kind.model == "registry":
            with pytest.raises(ValidationError, match="needs `model`"):
                ExperimentCreate(fine_tune={"dataset_id": "d"}, judges=[{"type": name}])


def test_the_cli_choices_come_from_the_registries() -> None:
    from app.cli import app

    runner = CliRunner()
    got = runner.invoke(app, ["screen", "missing.jsonl", "--backend", "word2vec"])
    assert got.exit_code != 0 and "word2vec" not in BACKENDS
    assert "expected one of" in got.output and all(n in got.output for n in BACKENDS)
    got = runner.invoke(app, ["experiment", "--help"], env={"COLUMNS": "200"})
    assert got.exit_code == 0, got.output
    assert all(n in got.output for n in JUDGES)
