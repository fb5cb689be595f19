"""A bounded schemathesis run: what both HTTP servers' fuzz tests share.

Cases are derandomized (the same ones every run, so CI cannot flake on a lucky draw),
capped per operation and not shrunk, so a run is a few hundred requests. Every case must
not be a 5xx and must answer with a status code, content type and body that its OpenAPI
schema documents.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

logger = logging.getLogger(__name__)

CHECKS: list[Any] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz(
    base_url: str,
    *,
    max_examples: int,
    headers: dict[str, str] | None = None,
    prepare: Callable[[Any], None] | None = None,
) -> dict[str, int]:
    """Run the bounded cases of every operation of ``base_url/openapi.json``.

    ``prepare`` may adjust each case before it is sent (e.g. cap generation lengths, so
    the run stays bounded in time). Returns how many cases each operation ran; raises on
    the first failing case, saying which operation it was.
    """
    headers = headers or {}
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=headers)
    ran: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        ran[operation.label] = 0
        started = time.perf_counter()
        _run_operation(operation, base_url, headers, max_examples, ran, prepare)
        logger.info(
            "%s: %d cases in %.1f s",
            operation.label,
            ran[operation.label],
            time.perf_counter() - started,
        )
    return ran


def _run_operation(
    operation: Any,
    base_url: str,
    headers: dict[str, str],
    max_examples: int,
    ran: dict[str, int],
    prepare: Callable[[Any], None] | None,
) -> None:
    label = operation.label

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def one(case: Any) -> None:
        ran[label] += 1
        if prepare is not None:
            prepare(case)
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=120)

    try:
        one()
    except Exception as exc:
        raise AssertionError(f"{label}: {exc}") from exc
