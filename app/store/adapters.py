"""Adapter versions: the single source of truth for which adapter serves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from app.store.db import Database
from app.store.models import AdapterStatus, AdapterVersion


def active_adapter(db: Database) -> AdapterVersion | None:
    """The adapter version now serving, or None when the base model serves."""
    with db.session() as session:
        return session.scalar(
            select(AdapterVersion).where(AdapterVersion.status == AdapterStatus.active)
        )


def list_adapters(db: Database) -> list[AdapterVersion]:
    """Every adapter version, newest first."""
    with db.session() as session:
        return list(
            session.scalars(
                select(AdapterVersion).order_by(AdapterVersion.name, AdapterVersion.version.desc())
            )
        )


def highest_version(db: Database, name: str) -> int:
    """The highest version number of ``name`` in the store (0 when none)."""
    with db.session() as session:
        stored = session.scalar(
            select(func.max(AdapterVersion.version)).where(AdapterVersion.name == name)
        )
    return int(stored or 0)


def add_version(
    db: Database, *, name: str, version: int, path: str, base_model: str, manifest: dict[str, Any]
) -> AdapterVersion:
    """Record a newly written version as a candidate."""
    with db.session() as session:
        row = AdapterVersion(
            name=name,
            version=version,
            path=path,
            base_model=base_model,
            status=AdapterStatus.candidate,
            manifest=manifest,
        )
        session.add(row)
    return row


def find_version(db: Database, name: str, version: int) -> AdapterVersion | None:
    """Version ``version`` of ``name``, if the store has it."""
    with db.session() as session:
        return session.scalar(
            select(AdapterVersion).where(
                AdapterVersion.name == name, AdapterVersion.version == version
            )
        )


def merge_manifest(db: Database, version_id: int, fields: dict[str, Any]) -> dict[str, Any] | None:
    """Merge ``fields`` into a version's stored manifest; the result (None: no such row)."""
    with db.session() as session:
        current = session.get(AdapterVersion, version_id)
        if current is None:
            return None
        current.manifest = {**current.manifest, **fields}
        return dict(current.manifest)


def set_status(db: Database, version_id: int, status: AdapterStatus) -> None:
    """Set one version's status (not ``active``: use :func:`flip_active`)."""
    with db.session() as session:
        current = session.get(AdapterVersion, version_id)
        if current is not None:
            current.status = status


def flip_active(db: Database, target_id: int | None, previous_status: AdapterStatus) -> bool:
    """Make ``target_id`` the only active version (None: the base model), in one transaction.

    Versions active until now get ``previous_status``. False when the target is gone.
    """
    with db.session() as session:
        for active in session.scalars(
            select(AdapterVersion).where(AdapterVersion.status == AdapterStatus.active)
        ):
            if active.id != target_id:
                active.status = previous_status
        if target_id is None:
            return True
        current = session.get(AdapterVersion, target_id)
        if current is None:
            session.rollback()
            return False
        current.status = AdapterStatus.active
        current.promoted_at = datetime.now(UTC)
        return True


def rollback_pair(db: Database, name: str) -> tuple[AdapterVersion | None, AdapterVersion | None]:
    """``(active, the version active before it)`` of ``name``; either may be None."""
    with db.session() as session:
        current = session.scalar(
            select(AdapterVersion).where(
                AdapterVersion.name == name, AdapterVersion.status == AdapterStatus.active
            )
        )
        if current is None:
            return None, None
        previous = session.scalar(
            select(AdapterVersion)
            .where(
                AdapterVersion.name == name,
                AdapterVersion.status == AdapterStatus.retired,
                AdapterVersion.promoted_at.is_not(None),
                AdapterVersion.id != current.id,
            )
            .order_by(AdapterVersion.promoted_at.desc())
        )
        return current, previous


def roll_back(db: Database, current_id: int, previous_id: int | None) -> None:
    """Reject ``current_id`` and reactivate ``previous_id`` (None: the base), atomically.

    The previous version keeps its first ``promoted_at``, so a second rollback goes
    further back.
    """
    with db.session() as session:
        if previous_id is not None:
            row = session.get(AdapterVersion, previous_id)
            if row is not None:
                row.status = AdapterStatus.active
        old = session.get(AdapterVersion, current_id)
        if old is not None:
            old.status = AdapterStatus.rejected
            old.manifest = {**old.manifest, "rolled_back_at": datetime.now(UTC).isoformat()}
