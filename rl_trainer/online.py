"""``rl-trainer online``: the loop that trains, canaries and promotes by itself.

Every ``ONLINE_POLL_S`` seconds it looks at the store:

- **A canary on trial** is decided first (:mod:`rl_trainer.canary`): promoted, rolled
  back, or left to collect ratings. No round starts while a trial runs, so each trial
  compares one candidate with one control.
- **Otherwise a round starts** when ``ONLINE_MIN_SIGNALS`` new ratings arrived since
  the last round's snapshot, when an admin asked for one, or on schedule
  (``ONLINE_INTERVAL_S``) if any signal arrived. The round is ``rl-trainer run`` with
  the gate's winner put on canary trial instead of promoted; turns of versions more
  than ``ONLINE_MAX_STALENESS`` versions behind are skipped.

State lives in the store (``loop_state``, ``loop_events``), so a restart picks up where
the loop stood. One trainer at a time: a lock row that the holder renews from a
heartbeat thread; a killed holder's lock lapses after ``ONLINE_LOCK_TTL_S`` (at once on
the same host, where its pid can be seen to be gone). A round killed halfway published
nothing that serves (candidates serve only after the gate), and is retried on the next
start.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.store.adapters import list_adapters, merge_manifest, set_status
from app.store.loop import (
    CANARY,
    CONTROL,
    acquire_lock,
    add_event,
    arm_turns,
    canary_started,
    end_canary,
    loop_state,
    new_signals,
    release_lock,
    serving_versions,
    update_loop,
)
from app.store.models import AdapterStatus, AdapterVersion, LoopState
from rl_trainer import pipeline
from rl_trainer import publish as pub
from rl_trainer.canary import CanaryPolicy, Verdict, decide
from rl_trainer.config import Recipe
from rl_trainer.monitors import MonitorLimits
from rl_trainer.settings import TrainerSettings

logger = logging.getLogger(__name__)

HISTORY_LIMIT = 200  # monitor points kept per canary (one per change in its turns)


class LoopBusy(RuntimeError):
    """Another trainer holds the loop's lock."""


def _now() -> datetime:
    return datetime.now(UTC)


def holder_name() -> str:
    """``host:pid`` of this process, as the lock records it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_local_holder(holder: str | None) -> str | None:
    """``holder`` when it names a process on this host that no longer runs."""
    if not holder:
        return None
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return holder
    except PermissionError:  # alive, someone else's
        return None
    return None


def stale_versions(versions: list[AdapterVersion], keep: int) -> frozenset[str | None]:
    """Served names (None: the base) more than ``keep`` versions behind the active one."""
    active = next((v.version for v in versions if v.status.value == "active"), 0)
    stale: set[str | None] = {v.served_name for v in versions if v.version < active - keep}
    if active - keep > 0:
        stale.add(None)
    return frozenset(stale)


class Heartbeat(threading.Thread):
    """Renews the lock while the loop works (a round blocks for minutes)."""

    def __init__(self, loop: OnlineLoop) -> None:
        super().__init__(name="online-heartbeat", daemon=True)
        self.loop = loop
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        """Renew every third of the lock's lifetime until stopped, or until it is lost."""
        ttl = self.loop.settings.online_lock_ttl_s
        while not self.stopped.wait(ttl / 3):
            if not acquire_lock(self.loop.db, self.loop.holder, ttl):
                logger.error("the loop's lock was taken by another trainer; stopping")
                self.lost.set()
                return


@dataclass
class OnlineLoop:
    """One ``rl-trainer online`` process."""

    ws: pipeline.Workspace
    recipe: Recipe
    holder: str = field(default_factory=holder_name)
    stop: threading.Event = field(default_factory=threading.Event)
    rounds: int = 0

    @property
    def db(self) -> Any:
        """The store."""
        return self.ws.db

    @property
    def settings(self) -> TrainerSettings:
        """The trainer's settings (ONLINE_*, CANARY_*)."""
        return self.ws.settings

    def policy(self) -> CanaryPolicy:
        """When a canary trial is decided."""
        s = self.settings
        return CanaryPolicy(
            min_rated=s.canary_min_rated,
            max_rated=s.canary_max_rated,
            alpha=s.canary_alpha,
            margin=s.canary_margin,
            max_error_rise=s.canary_max_error_rise,
        )

    def shown_settings(self) -> dict[str, Any]:
        """What the Model page shows of the loop's configuration."""
        s = self.settings
        return {
            "algo": self.recipe.algo,
            "min_signals": s.online_min_signals,
            "interval_s": s.online_interval_s,
            "max_staleness": s.online_max_staleness,
            "canary_share": s.canary_share,
            "canary_min_rated": s.canary_min_rated,
            "canary_max_rated": s.canary_max_rated,
            "canary_alpha": s.canary_alpha,
            "canary_margin": s.canary_margin,
        }

    def start(self) -> None:
        """Take the lock (or raise :class:`LoopBusy`) and recover from a killed round."""
        state = loop_state(self.db)
        takeover = dead_local_holder(state.holder)
        if not acquire_lock(
            self.db, self.holder, self.settings.online_lock_ttl_s, take_over=takeover
        ):
            until = state.lock_expires_at.isoformat() if state.lock_expires_at else "?"
            raise LoopBusy(
                f"another trainer runs the online loop ({state.holder}, lock held until {until}); "
                "stop it first, or wait for its lock to lapse"
            )
        fields: dict[str, Any] = {"settings": self.shown_settings()}
        if state.next_round_at is None:
            fields["next_round_at"] = _now() + timedelta(seconds=self.settings.online_interval_s)
        if state.round_status == "running":
            fields |= {"round_status": "interrupted", "train_requested": True}
            self.reject_leftovers(state.round_started_at)
            add_event(
                self.db,
                "round_interrupted",
                "the last round stopped halfway (the trainer was killed); it runs again now",
                figures={"holder": state.holder, "started_at": str(state.round_started_at)},
            )
        update_loop(self.db, **fields)
        add_event(self.db, "loop_started", f"online loop started by {self.holder}")

    def reject_leftovers(self, since: datetime | None) -> None:
        """Candidates an interrupted round published but never gated: never to serve."""
        for row in list_adapters(self.db):
            if row.status.value == "candidate" and (since is None or row.created_at >= since):
                pub.update_manifest(self.db, row, rejected_because="its round was interrupted")
                set_status(self.db, row.id, AdapterStatus.rejected)

    def run(self, max_rounds: int | None = None) -> None:
        """Check the store every poll until stopped (or after ``max_rounds`` rounds)."""
        self.start()
        heartbeat = Heartbeat(self)
        heartbeat.start()
        try:
            while not self.stop.is_set() and not heartbeat.lost.is_set():
                try:
                    self.tick()
                except Exception as exc:  # the server or store failed; look again later
                    logger.exception("the loop's check failed")
                    add_event(self.db, "check_failed", f"the loop's check failed: {exc}")
                if max_rounds is not None and self.rounds >= max_rounds:
                    break
                self.stop.wait(self.settings.online_poll_s)
        finally:
            heartbeat.stopped.set()
            release_lock(self.db, self.holder)
            add_event(self.db, "loop_stopped", f"online loop stopped ({self.holder})")

    def tick(self) -> None:
        """One look at the store: decide a canary, or start a round when one is due."""
        _, canary = serving_versions(self.db)
        if canary is not None:
            self.check_canary(canary)
            return
        state = loop_state(self.db)
        if state.paused:
            return
        trigger = self.due(state)
        if trigger is not None:
            self.run_round(trigger)

    def due(self, state: LoopState) -> str | None:
        """Why a round should start now, or None."""
        n = new_signals(self.db, state.signals_since)
        need = self.settings.online_min_signals
        if state.train_requested:
            return f"asked for ({n} new signals)"
        if n >= need:
            return f"{n} new signals (trigger: {need})"
        if n and state.next_round_at is not None and _now() >= state.next_round_at:
            return f"schedule ({n} new signals)"
        return None

    def run_round(self, trigger: str) -> pipeline.Report | None:
        """Train, gate, and put the winner on canary trial; every step recorded."""
        started = _now()
        update_loop(
            self.db,
            round_status="running",
            round_started_at=started,
            round_finished_at=None,
            round_id=None,
            round_message=trigger,
            train_requested=False,
        )
        add_event(self.db, "round_started", f"round started: {trigger}")
        logger.info("round started: %s", trigger)
        self.rounds += 1
        stale = stale_versions(list_adapters(self.db), self.settings.online_max_staleness)
        done: dict[str, Any] = {
            "signals_since": started,
            "next_round_at": started + timedelta(seconds=self.settings.online_interval_s),
        }
        try:
            report = pipeline.run(
                self.ws, self.recipe, canary_share=self.settings.canary_share, stale=stale
            )
        except Exception as exc:  # any failure ends the round; the loop itself goes on
            logger.exception("round failed")
            done |= {"round_finished_at": _now(), "round_status": "failed"}
            update_loop(self.db, **done, round_message=f"failed: {exc}")
            add_event(self.db, "round_failed", f"round failed: {exc}")
            return None
        summary = round_summary(report)
        done |= {"round_finished_at": _now(), "round_status": "done"}
        update_loop(
            self.db, **done, round_id=Path(report.run_dir).name, round_message=summary["outcome"]
        )
        if report.tripped:
            reason = "; ".join(str(t.get("message")) for t in report.tripped)
            update_loop(self.db, paused=True, paused_reason=f"training monitor tripped: {reason}")
            add_event(self.db, "monitor_tripped", reason, version=report.candidate, figures=summary)
        elif report.canary is not None:
            add_event(
                self.db,
                "canary_started",
                f"{report.candidate} passed the gate and serves {report.canary:.0%} of users",
                version=report.candidate,
                figures=summary,
            )
        else:
            reasons = "; ".join((report.gate or {}).get("reasons") or []) or "see the report"
            add_event(
                self.db,
                "gate_rejected",
                f"the gate rejected {report.candidate}: {reasons}",
                version=report.candidate,
                figures=summary,
            )
        return report

    def check_canary(self, canary: AdapterVersion) -> Verdict:
        """Decide the trial on its turns so far; act on a promote or rollback verdict."""
        started = canary_started(canary) or canary.created_at
        turns = arm_turns(self.db, started)
        verdict = decide(turns, self.policy(), MonitorLimits())
        self.record_check(canary, verdict)
        name = canary.served_name
        if verdict.action == "promote":
            pub.promote(self.ws.db, self.ws.client, canary)
            end_canary(self.db, canary.id, {"verdict": "promoted", "reason": verdict.reason})
            add_event(self.db, "promoted", verdict.reason, version=name, figures=verdict.to_dict())
            logger.info("promoted %s: %s", name, verdict.reason)
        elif verdict.action == "rollback":
            pub.stop_canary(self.ws.db, self.ws.client, canary)
            end_canary(self.db, canary.id, {"verdict": "rolled back", "reason": verdict.reason})
            add_event(
                self.db, "rolled_back", verdict.reason, version=name, figures=verdict.to_dict()
            )
            logger.warning("rolled back %s: %s", name, verdict.reason)
        return verdict

    def record_check(self, canary: AdapterVersion, verdict: Verdict) -> None:
        """Keep the last check and, when the arms' counts moved, a point for the charts."""
        trial = dict(canary.manifest.get("canary") or {})
        history = list(trial.get("history") or [])
        point = history_point(verdict.figures)
        counts = {k: point[k] for k in ("canary_turns", "control_turns", "rated")}
        if not history or {k: history[-1].get(k) for k in counts} != counts:
            history = [*history, point][-HISTORY_LIMIT:]
        trial |= {"last_check": verdict.to_dict(), "history": history}
        canary.manifest = merge_manifest(self.db, canary.id, {"canary": trial}) or canary.manifest


def history_point(figures: dict[str, Any]) -> dict[str, Any]:
    """One point of the canary's charts: each arm's rating and monitor figures."""
    point: dict[str, Any] = {"at": _now().isoformat()}
    monitors = figures.get("monitors") or {}
    for arm in (CANARY, CONTROL):
        arm_figs = figures.get(arm) or {}
        point[f"{arm}_turns"] = arm_figs.get("turns", 0)
        point[f"{arm}_down_rate"] = arm_figs.get("down_rate")
        point[f"{arm}_error_rate"] = arm_figs.get("error_rate")
        for name, value in (monitors.get(arm) or {}).items():
            if name != "n":
                point[f"{arm}_{name}"] = value
    point["rated"] = (figures.get(CANARY) or {}).get("rated", 0) + (figures.get(CONTROL) or {}).get(
        "rated", 0
    )
    return point


def round_summary(report: pipeline.Report) -> dict[str, Any]:
    """The figures a round's event carries, and a one-line outcome."""
    if report.tripped:
        outcome = "stopped by a training monitor"
    elif report.canary is not None:
        outcome = f"{report.candidate} on canary trial"
    else:
        outcome = f"{report.candidate} rejected by the gate"
    gate = report.gate or {}
    return {
        "outcome": outcome,
        "run": Path(report.run_dir).name,
        "stages_s": report.stages_s,
        "data": report.data,
        "training_rows": {k: report.training_rows.get(k) for k in ("given", "kept")},
        "metrics": report.metrics,
        "gate": {
            k: gate.get(k)
            for k in ("passed", "win_rate", "improved", "reasons", "prompts", "grounding")
            if k in gate
        },
        "tripped": report.tripped,
    }
