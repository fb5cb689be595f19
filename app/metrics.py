"""Prometheus metrics: requests, latency per agent stage, tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from app.store.records import TurnRecord

REQUESTS = Counter("flywheel_http_requests_total", "HTTP requests", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "flywheel_http_request_seconds", "HTTP request latency", ["method", "route"]
)
STAGE_SECONDS = Histogram(
    "flywheel_agent_stage_seconds",
    "Time per agent stage",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TURN_SECONDS = Histogram("flywheel_turn_seconds", "Whole turn latency")
TOKENS = Counter("flywheel_tokens_total", "Tokens processed by the model", ["kind"])
TURNS = Counter("flywheel_turns_total", "Turns answered", ["outcome"])


def observe_turn(record: TurnRecord, seconds: float) -> None:
    """Record a finished turn's stage timings, tokens and outcome."""
    TURN_SECONDS.observe(seconds)
    for name, ms in record.timings.items():
        if name.endswith("_ms") and name != "total_ms":
            STAGE_SECONDS.labels(name.removesuffix("_ms")).observe(ms / 1000)
    if record.prompt_tokens:
        TOKENS.labels("prompt").inc(record.prompt_tokens)
    if record.completion_tokens:
        TOKENS.labels("completion").inc(record.completion_tokens)
    TURNS.labels("error" if record.error else "ok").inc()
