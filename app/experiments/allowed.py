"""An experiment request against the provider's model registry and token caps (`app.core.registry`)."""

from __future__ import annotations

from typing import Any

from app.core import registry
from app.core.config import Settings
from app.experiments.judge_kinds import JUDGES


def local_models(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(param, name) of every model an experiment request names that a worker loads from disk."""
    out = [("base_model", spec["base_model"])]
    model = ((spec.get("alignment") or {}).get("representation") or {}).get("model")
    if model:
        out.append(("alignment.representation.model", model))
    for i, judge in enumerate(spec["judges"]):
        if JUDGES[judge["type"]].model == "registry" and judge.get("model"):
            out.append((f"judges[{i}].model", judge["model"]))
    return out


def check(*, settings: Settings, spec: dict[str, Any]) -> None:
    """UnknownModel for a model outside the registry; limit_exceeded for a token count past the cap."""
    for param, name in local_models(spec):
        registry.check(settings, name, param=param)
    for i, judge in enumerate(spec["judges"]):
        if JUDGES[judge["type"]].remote:
            registry.check_judge_model(settings, judge.get("model"), param=f"judges[{i}].model")
    lengths = [("training.max_length", spec["training"]["max_length"])]
    if spec.get("alignment"):
        rep = spec["alignment"]["representation"]
        lengths.append(("alignment.representation.max_length", rep["max_length"]))
    if spec.get("alignment_training"):
        lengths.append(("alignment_training.max_length", spec["alignment_training"]["max_length"]))
    for param, value in lengths:
        registry.check_max_length(settings, int(value), param=param)
