"""Alembic environment: migrations run on the connection the application hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from app.store.models import Base

target_metadata = Base.metadata
config = context.config


def run() -> None:
    """Run migrations online, on the given connection or a URL from ``-x url=...``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the database as: alembic -x url=sqlite:///data/flywheel.db ...")
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
