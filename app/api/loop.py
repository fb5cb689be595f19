"""Admin routes of the online loop: its state, pause/resume, train now, the canary's fate.

The API does not train: "train now" asks the running ``rl-trainer online`` (it picks the
request up from the store). Promoting or rolling back a canary is a flip in the store
of a version that already passed the gate and is already loaded, the same functions the
loop uses; nothing here goes around the trainer's gate.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict

from fastapi import APIRouter, HTTPException, status

from app.api.deps import AdminUser, ServicesDep
from app.api.loop_schemas import (
    ArmFigures,
    CanaryOut,
    EventOut,
    LoopOut,
    PauseRequest,
    RoundOut,
)
from app.api.schemas import error_responses
from app.services import Services
from app.store.adapters import flip_active, set_status
from app.store.loop import (
    CANARY,
    CONTROL,
    ArmTurn,
    add_event,
    arm_turns,
    canary_share,
    canary_started,
    count,
    end_canary,
    lock_alive,
    loop_phase,
    loop_state,
    new_signals,
    recent_events,
    serving_versions,
    update_loop,
)
from app.store.models import AdapterStatus
from backend.errors import ModelServerError

router = APIRouter(prefix="/admin", tags=["admin"], responses=error_responses(401, 403, 409, 429))


def _arm(turns: list[ArmTurn], arm: str) -> ArmFigures:
    counts = count(turns, arm)
    return ArmFigures(**asdict(counts), down_rate=counts.down_rate, error_rate=counts.error_rate)


def loop_view(services: Services) -> LoopOut:
    """Everything the Model page shows about the loop, read from the store."""
    db = services.db
    state = loop_state(db)
    _, canary = serving_versions(db)
    alive = lock_alive(state)
    canary_out = None
    if canary is not None:
        started = canary_started(canary)
        turns = arm_turns(db, started) if started else []
        trial = canary.manifest.get("canary") or {}
        canary_out = CanaryOut(
            version=canary.served_name,
            share=canary_share(canary),
            started_at=started,
            arms={arm: _arm(turns, arm) for arm in (CANARY, CONTROL)},
            last_check=trial.get("last_check") or {},
            history=trial.get("history") or [],
        )
    return LoopOut(
        state=loop_phase(state, canary is not None),
        alive=alive,
        holder=state.holder if alive else None,
        heartbeat_at=state.heartbeat_at,
        paused=state.paused,
        paused_reason=state.paused_reason,
        train_requested=state.train_requested,
        new_signals=new_signals(db, state.signals_since),
        next_round_at=state.next_round_at,
        settings=state.settings or {},
        last_round=RoundOut(
            id=state.round_id,
            status=state.round_status,
            started_at=state.round_started_at,
            finished_at=state.round_finished_at,
            message=state.round_message,
        ),
        canary=canary_out,
        events=[
            EventOut(
                at=e.at,
                kind=e.kind,
                version=e.version,
                actor=e.actor,
                message=e.message,
                figures=e.figures,
            )
            for e in recent_events(db)
        ],
    )


@router.get("/loop", response_model=LoopOut)
async def loop(admin: AdminUser, services: ServicesDep) -> LoopOut:
    """The online loop's state, the canary trial with live figures, and recent decisions."""
    return await asyncio.to_thread(loop_view, services)


def _actor(admin: AdminUser) -> str:
    return f"admin:{admin.name}"


@router.post("/loop/pause", response_model=LoopOut)
async def pause(body: PauseRequest, admin: AdminUser, services: ServicesDep) -> LoopOut:
    """Stop starting rounds (a round already training finishes; a canary keeps serving)."""

    def run() -> LoopOut:
        update_loop(services.db, paused=True, paused_reason=body.reason)
        add_event(services.db, "paused", body.reason, actor=_actor(admin))
        return loop_view(services)

    return await asyncio.to_thread(run)


@router.post("/loop/resume", response_model=LoopOut)
async def resume(admin: AdminUser, services: ServicesDep) -> LoopOut:
    """Start rounds again, after a pause by an admin or by a monitor."""

    def run() -> LoopOut:
        update_loop(services.db, paused=False, paused_reason=None)
        add_event(services.db, "resumed", "rounds start again", actor=_actor(admin))
        return loop_view(services)

    return await asyncio.to_thread(run)


@router.post("/loop/train-now", response_model=LoopOut, status_code=status.HTTP_202_ACCEPTED)
async def train_now(admin: AdminUser, services: ServicesDep) -> LoopOut:
    """Ask the online loop for a round now (it starts on the loop's next check)."""

    def run() -> LoopOut:
        state = loop_state(services.db)
        if state.paused:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "the loop is paused: resume it before asking for a round"
            )
        update_loop(services.db, train_requested=True)
        add_event(services.db, "train_requested", "a round was asked for", actor=_actor(admin))
        return loop_view(services)

    return await asyncio.to_thread(run)


def _canary_or_409(services: Services) -> tuple[int, str]:
    _, canary = serving_versions(services.db)
    if canary is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "no version is on canary trial now")
    return canary.id, canary.served_name


@router.post("/canary/promote", response_model=LoopOut)
async def promote_canary(admin: AdminUser, services: ServicesDep) -> LoopOut:
    """Serve the canary to everyone now (it passed the gate and is loaded already)."""

    def run() -> LoopOut:
        version_id, name = _canary_or_409(services)
        flip_active(services.db, version_id, AdapterStatus.retired)
        end_canary(services.db, version_id, {"verdict": "promoted", "by": _actor(admin)})
        add_event(
            services.db, "promoted", "promoted by an admin", version=name, actor=_actor(admin)
        )
        return loop_view(services)

    return await asyncio.to_thread(run)


@router.post("/canary/rollback", response_model=LoopOut)
async def rollback_canary(admin: AdminUser, services: ServicesDep) -> LoopOut:
    """Stop the canary: everyone goes back to the active version; the canary is rejected."""

    def run() -> tuple[LoopOut, str]:
        version_id, name = _canary_or_409(services)
        set_status(services.db, version_id, AdapterStatus.rejected)
        end_canary(services.db, version_id, {"verdict": "rolled back", "by": _actor(admin)})
        add_event(
            services.db, "rolled_back", "stopped by an admin", version=name, actor=_actor(admin)
        )
        return loop_view(services), name

    view, name = await asyncio.to_thread(run)
    with contextlib.suppress(ModelServerError):  # frees memory; nothing serves it now
        await services.client.unload_adapter(name)
    return view
