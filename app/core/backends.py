"""Representation backends: the names a request or setting may use, and what the service knows of each.

A backend is a class in `workers/representations/` that implements `workers.representations.base.
Representer` and has a `load(model, **options)` classmethod. `workers.representations.load_representer`
imports it from `path` when a worker first needs it, so this module (read by the API, which imports no
torch) names it without importing it. The API's `backend` and `anchor_backend` fields (`BackendName`), the
settings' `default_backend` and `anchor_backend` and the README's list are all read from `BACKENDS`: adding a
backend is its module plus one line here (CONTRIBUTING.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, WithJsonSchema


@dataclass(frozen=True)
class BackendSpec:
    path: str  # "module:Class" of the Representer
    center: bool  # whether a screening centres its vectors by default (hidden states share an offset)
    about: str  # one line for docs and errors


BACKENDS: dict[str, BackendSpec] = {
    "sentence-transformers": BackendSpec(
        "workers.representations.sentence:SentenceTransformerRepresenter",
        center=False,
        about="a sentence-transformers model's pooled embedding (MiniLM by default)",
    ),
    "causal-lm": BackendSpec(
        "workers.representations.causal_lm:CausalLMRepresenter",
        center=True,
        about="a causal LM's hidden state at one layer, last token or mean (SmolLM2 by default)",
    ),
}


def check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown representation backend {name!r}; expected one of {list(BACKENDS)}")
    return name


# A request field or setting that names a backend: validated against BACKENDS, an enum in the API schema.
BackendName = Annotated[
    str, AfterValidator(check), WithJsonSchema({"type": "string", "enum": list(BACKENDS)})
]

# The representation options of a request, one definition each (screenings, experiments' selections).
BackendField = Annotated[
    BackendName | None, Field(description="Representation backend; default from settings.")
]
ModelField = Annotated[
    str | None,
    Field(
        max_length=500,
        description="A model of the provider's registry (GET /v1/models); default from settings.",
    ),
]
LayerField = Annotated[int, Field(ge=-1000, le=1000, description="causal-lm: hidden layer (-1 = final).")]
PoolingField = Annotated[Literal["last", "mean"], Field(description="causal-lm: last token or mean.")]
MaxLengthField = Annotated[int, Field(ge=8, le=32768, description="causal-lm: tokens kept (the end).")]
