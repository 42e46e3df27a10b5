"""Judges: the kinds an experiment may name, and what the service knows of each.

A judge is a class in `workers/experiments/` (the protocol is in `judges.py`) with a `name`, the
`Judge` protocol's `applies_to` and `judge`, and a `from_spec(spec, runtime)` classmethod that builds it on
a worker from the request's `judges[]` entry. `workers.experiments.stages` imports it from `path` when a
judge stage runs, so this module (read by the API, which imports no torch) names it without importing it.
The API's `judges[].type` (`JudgeType`), the request checks (a model to check against the registry, an
outside service to be configured and counted) and the CLI's `--judge` choices are all read from `JUDGES`:
adding a judge is its class plus one line here (CONTRIBUTING.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, WithJsonSchema


@dataclass(frozen=True)
class JudgeKind:
    path: str  # "module:Class" of the judge; the class has `from_spec(spec, runtime)`
    # "none": takes no model; "registry": `model` is required, a local model of the provider's registry;
    # "remote": `model` is optional, a model of the outside endpoint (FTGUARD_JUDGE_BASE_URL)
    model: Literal["none", "registry", "remote"]
    about: str

    @property
    def remote(self) -> bool:
        """Calls a service outside ftguard: it must be configured, and it is paid (quota, progress)."""
        return self.model == "remote"


JUDGES: dict[str, JudgeKind] = {
    "keyword": JudgeKind(
        "workers.experiments.judges:KeywordJudge", "none", "refusal phrases in the answer's opening (free)"
    ),
    "llm": JudgeKind(
        "workers.experiments.judges:LLMJudge", "remote", "a 1-5 harm score from an OpenAI-compatible model"
    ),
    "classifier": JudgeKind(
        "workers.experiments.judge_classifier:ClassifierJudge",
        "registry",
        "a local sequence classifier or guard model (safe/unsafe) of the provider's registry",
    ),
}


def check(name: str) -> str:
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; expected one of {list(JUDGES)}")
    return name


def any_remote(judges: list[dict[str, Any]] | None) -> int:
    """How many of an experiment's judges call an outside service."""
    return sum(JUDGES[j["type"]].remote for j in judges or [] if j.get("type") in JUDGES)


# `judges[].type` of a request: validated against JUDGES, an enum in the API schema.
JudgeType = Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", "enum": list(JUDGES)})]
