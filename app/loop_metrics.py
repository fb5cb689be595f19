"""Prometheus figures of the online loop, read from the store when ``/metrics`` is scraped.

The loop runs in the trainer's process, which serves no HTTP; the store is what both
share, so the API reports it: rounds and decisions as counters (events are never
deleted, so the counts only grow), the canary's share, its arms' thumbs-down rates and
its monitors' last values as gauges.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from app.store.db import Database
from app.store.loop import (
    CANARY,
    CONTROL,
    arm_turns,
    canary_share,
    canary_started,
    count,
    count_events,
    lock_alive,
    loop_state,
    serving_versions,
)


class LoopCollector(Collector):
    """Yields the loop's figures from the store on each scrape."""

    def __init__(self) -> None:
        self.db: Database | None = None

    def collect(self) -> Iterator[Any]:
        """The figures now (nothing before the API opened its store)."""
        if self.db is None:
            return
        db = self.db
        events = CounterMetricFamily(
            "flywheel_online_events", "Online loop decisions and rounds, by kind", labels=["kind"]
        )
        for kind, n in sorted(count_events(db).items()):
            events.add_metric([kind], n)
        yield events
        state = loop_state(db)
        yield GaugeMetricFamily(
            "flywheel_online_running",
            "1 while rl-trainer online holds the lock",
            float(lock_alive(state)),
        )
        yield GaugeMetricFamily(
            "flywheel_online_paused", "1 while the loop is paused", state.paused
        )
        _, canary = serving_versions(db)
        yield GaugeMetricFamily(
            "flywheel_canary_share",
            "Share of users the canary serves (0: no trial)",
            canary_share(canary) if canary else 0.0,
        )
        if canary is None:
            return
        started = canary_started(canary)
        turns = arm_turns(db, started) if started else []
        down = GaugeMetricFamily(
            "flywheel_canary_down_rate", "Thumbs-down rate per arm of the trial", labels=["arm"]
        )
        for arm in (CANARY, CONTROL):
            rate = count(turns, arm).down_rate
            if rate is not None:
                down.add_metric([arm], rate)
        yield down
        monitors = GaugeMetricFamily(
            "flywheel_canary_monitor",
            "Reward-hacking monitors at the loop's last check, per arm",
            labels=["monitor", "arm"],
        )
        last = ((canary.manifest.get("canary") or {}).get("last_check") or {}).get("figures") or {}
        for arm, figures in (last.get("monitors") or {}).items():
            for name, value in figures.items():
                if isinstance(value, int | float):
                    monitors.add_metric([name, arm], float(value))
        yield monitors


COLLECTOR = LoopCollector()
REGISTRY.register(COLLECTOR)


def watch_store(db: Database) -> None:
    """Report this store's loop from now on (the API calls it when it opens the store)."""
    COLLECTOR.db = db
