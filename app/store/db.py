"""Opening the database: engine, sessions, and migrations to the newest schema.

SQLite gets WAL (readers never block the writer), foreign keys (off by default in
SQLite) and a busy timeout, so concurrent chats wait for the write lock instead of
failing. The schema is always brought up by Alembic, never by ``create_all``, so the
same migrations run on a laptop and on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def default_database_url(data_dir: Path) -> str:
    """The SQLite store inside ``data_dir``: the API and the trainer must agree on it."""
    return f"sqlite:///{data_dir / 'flywheel.db'}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a crash loses no commit
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their directory and pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def upgrade(engine: Engine) -> None:
    """Run every Alembic migration not yet applied to ``engine``'s database."""
    from alembic import command
    from alembic.config import Config

    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration is noise
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Database:
    """The process's engine and session factory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        """Whether the database is PostgreSQL (the checkpointer follows it)."""
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self.sessions.begin() as session:
            yield session

    def ping(self) -> bool:
        """Whether the database answers."""
        from sqlalchemy import text

        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means "not healthy"; reported, not raised
            logger.warning("database ping failed: %s", exc)
            return False
        return True

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()


def open_database(url: str, *, migrate: bool = True) -> Database:
    """Open ``url`` and bring its schema to the newest migration."""
    engine = make_engine(url)
    if migrate:
        upgrade(engine)
    return Database(engine)
