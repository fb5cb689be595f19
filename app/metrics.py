"""Prometheus metrics: requests, latency per agent stage, tokens."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

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


def observe_turn(final: dict[str, Any], seconds: float) -> None:
    """Record a finished turn's stage timings, tokens and outcome."""
    TURN_SECONDS.observe(seconds)
    for name, ms in (final.get("timings") or {}).items():
        if name.endswith("_ms") and name != "total_ms":
            STAGE_SECONDS.labels(name.removesuffix("_ms")).observe(ms / 1000)
    usage = final.get("usage") or {}
    for kind in ("prompt_tokens", "completion_tokens"):
        if usage.get(kind):
            TOKENS.labels(kind.removesuffix("_tokens")).inc(usage[kind])
    TURNS.labels("error" if final.get("error") else "ok").inc()
