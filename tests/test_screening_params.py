from __future__ import annotations

import pytest

from app.core.config import Settings
from app.screenings.params import with_defaults

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store


def test_centring_defaults_on_for_causal_lm_only_and_an_explicit_choice_wins() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert with_defaults({}, s)["center"] is False
    assert with_defaults({"backend": "causal-lm"}, s)["center"] is True
    assert with_defaults({"backend": "causal-lm", "center": False}, s)["center"] is False
    full = with_defaults({"center": None}, s)
    assert full["backend"] == s.default_backend and full["anchor_model"] == s.anchor_model
    assert full["block_size"] == s.similarity_block_size and full["method"] == s.similarity_method
