"""Property-based fuzzing of the whole API against its own OpenAPI schema (schemathesis, in-process ASGI):
no 5xx, and every response (status, content type, headers, body) as the schema documents it."""

from __future__ import annotations

from collections import Counter

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.core.config import Settings
from app.main import create_app
from tests.conftest import bearer, key_for

EXAMPLES = 25  # per operation and mode: bounded so the test stays under a minute
# No 5xx; status, content type, headers and body as documented, for valid and for invalid requests. Not
# positive_data_acceptance: a schema-valid upload may hold a file that is no dataset, and a schema-valid
# id may name nothing (422 and 404 are right there). Not negative_data_rejection: it flags a repeated
# scalar query parameter (`?after=a&after=b`), which FastAPI reads as the last value, as "accepted".
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_no_schema_violation(settings: Settings, redis_url: str, mode: GenerationMode) -> None:
    # fuzzing sends hundreds of requests a second: the rate limit is tested elsewhere
    s = settings.model_copy(update={"rate_limit_per_s": 0.0, "max_active_screenings": 1000})
    auth = bearer(key_for(s, "fuzz", role="admin"))
    app = create_app(s, redis_url=redis_url)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: Counter[tuple[str, int]] = Counter()

    @given(case=schema.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=EXAMPLES * 17,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=auth, checks=CHECKS)
        seen[(f"{case.method} {case.path}", response.status_code)] += 1

    run()
    operations = {op for op, _ in seen}
    statuses = {status for _, status in seen}
    n = sum(seen.values())
    print(f"{mode.value}: {n} requests, {len(operations)} operations, statuses {sorted(statuses)}")
    assert len(operations) >= 15 and max(statuses) < 500
    assert any(200 <= st < 300 for st in statuses) and any(400 <= st < 500 for st in statuses)
