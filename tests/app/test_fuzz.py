"""A bounded schemathesis run against the API, signed in as an admin (see ``tests.fuzz``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.app.conftest import Api, ModelServer, auth, create_user, start_api, stop
from tests.fuzz import fuzz

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed_api(
    model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    running = start_api(
        tmp_path_factory.mktemp("fuzz-api"),
        model_server.url,
        MEMORY_ENABLED="false",
        AGENT_MAX_TOKENS="4",
        RATE_LIMITS="false",  # a few hundred requests a minute is the point here
    )
    yield running
    stop(running.proc)


def test_api_conforms_to_its_schema_under_fuzzing(fuzzed_api: Api) -> None:
    key = create_user(fuzzed_api, "fuzzer", admin=True)
    ran = fuzz(fuzzed_api.url, max_examples=15, headers=auth(key))
    assert (
        "POST /chat" in ran and "POST /documents" in ran and "POST /turns/{turn_id}/feedback" in ran
    )
    assert sum(ran.values()) >= 200, ran
