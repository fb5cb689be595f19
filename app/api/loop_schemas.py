"""Bodies of the online loop's admin routes: its state, the canary trial, its decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ArmFigures(BaseModel):
    """Live counts of one arm of a canary trial, from the store."""

    turns: int
    rated: int
    down: int
    down_rate: float | None
    errors: int
    error_rate: float | None


class CanaryOut(BaseModel):
    """The version on trial, its share of users, and how each arm is doing."""

    version: str
    share: float
    started_at: datetime | None
    arms: dict[str, ArmFigures]
    last_check: dict[str, Any] = Field(
        default_factory=dict, description="The loop's last check: test, monitors, verdict."
    )
    history: list[dict[str, Any]] = Field(
        default_factory=list, description="Monitor figures per check, oldest first."
    )


class RoundOut(BaseModel):
    """The last round the loop ran."""

    id: str | None
    status: str | None
    started_at: datetime | None
    finished_at: datetime | None
    message: str | None


class EventOut(BaseModel):
    """One decision of the loop or an admin."""

    at: datetime
    kind: str
    version: str | None
    actor: str
    message: str
    figures: dict[str, Any]


class LoopOut(BaseModel):
    """The online loop as admins see it."""

    state: str = Field(description="not running | waiting | training | canary | paused")
    alive: bool = Field(description="Whether an `rl-trainer online` process holds the lock.")
    holder: str | None
    heartbeat_at: datetime | None
    paused: bool
    paused_reason: str | None
    train_requested: bool
    new_signals: int = Field(description="Usable signals since the last round's snapshot.")
    next_round_at: datetime | None
    settings: dict[str, Any]
    last_round: RoundOut
    canary: CanaryOut | None
    events: list[EventOut]


class PauseRequest(BaseModel):
    """Why an admin pauses the loop (shown to other admins)."""

    reason: str = Field("paused by an admin", min_length=1, max_length=500)
