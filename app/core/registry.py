"""The provider's model registry: the only models a tenant may name, and where each one lives.

A request names a model (`model`, `anchor_model`, `base_model`, a classifier judge's `model`) by a registry
name; the workers turn the name into a path when they load it. A free path would let a tenant make a
worker load, train on and hand back any folder the worker can read (the provider's private model, another
tenant's fine-tune). The registry is `Settings.model_registry`: the bundled models plus `FTGUARD_MODELS`.
The operator's own defaults (`default_model`, `anchor_model`) are allowed whatever they are, since the
operator set them. The CLI runs as the operator and may pass paths (`allow_paths`).
"""

from __future__ import annotations

from collections.abc import Iterable

from app.core.config import Settings
from app.core.errors import InvalidRequest, UnknownModel


def names(settings: Settings) -> list[str]:
    """The names a request may use, sorted."""
    return sorted(settings.model_registry)


def check(settings: Settings, name: str, *, param: str) -> None:
    """UnknownModel (422) unless `name` is registered or one of the operator's own defaults."""
    if name in settings.model_registry or name in (settings.default_model, settings.anchor_model):
        return
    raise UnknownModel(
        f"unknown model {name[:100]!r}: name one of the provider's registered models {names(settings)} "
        "(GET /v1/models); paths are not accepted",
        param=param,
    )


def check_judge_model(settings: Settings, name: str | None, *, param: str) -> None:
    """The `llm` judge asks the provider's judge API; only the models the provider lists may be asked."""
    allowed = [m for m in (settings.judge_model, *settings.judge_models) if m]
    if name is None or name in allowed:
        return
    raise UnknownModel(
        f"unknown judge model {name[:100]!r}; allowed: {allowed} (FTGUARD_JUDGE_MODELS)", param=param
    )


def check_max_length(settings: Settings, value: int, *, param: str) -> None:
    if value > settings.max_length_limit:
        raise InvalidRequest(
            f"{param} is above the limit of {settings.max_length_limit} tokens",
            param=param,
            code="limit_exceeded",
        )


def path(settings: Settings, name: str) -> str:
    """Where a model lives (workers load this). An unregistered name is taken as a path: only the operator
    (the CLI, or the settings' own defaults) can get one past `check`."""
    return settings.model_registry.get(name, name)


def allow_paths(settings: Settings, models: Iterable[str | None]) -> Settings:
    """Settings whose registry also holds these paths, each under its own name: for the operator's CLI."""
    extra = {m: m for m in models if m and m not in settings.model_registry}
    if not extra:
        return settings
    return settings.model_copy(update={"models": {**settings.models, **extra}})
