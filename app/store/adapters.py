"""Adapter versions: the single source of truth for which adapter serves."""

from __future__ import annotations

from sqlalchemy import select

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
