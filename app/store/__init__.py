"""The SQL store: users, threads, turns, feedback, judgments, documents, adapter versions.

SQLAlchemy 2 models with Alembic migrations; SQLite by default (WAL, foreign keys on),
PostgreSQL by URL. It is the record the trainer learns from, so a turn is written whole
in one transaction or not at all.
"""

from app.store.db import Database, open_database
from app.store.models import (
    AdapterStatus,
    AdapterVersion,
    Base,
    Document,
    DocumentStatus,
    Feedback,
    Judgment,
    Role,
    Thread,
    Turn,
    User,
)

__all__ = [
    "AdapterStatus",
    "AdapterVersion",
    "Base",
    "Database",
    "Document",
    "DocumentStatus",
    "Feedback",
    "Judgment",
    "Role",
    "Thread",
    "Turn",
    "User",
    "open_database",
]
