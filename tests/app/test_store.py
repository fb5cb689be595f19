"""The store on SQLite and on a real PostgreSQL: migrations, whole turns, feedback,
ownership, adapter versions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from app.store import AdapterStatus, AdapterVersion, Database, Feedback, Turn, open_database
from app.store.adapters import active_adapter
from app.store.feedback import set_feedback
from app.store.records import TurnRecord
from app.store.threads import (
    delete_thread,
    get_or_create_thread,
    get_thread,
    get_turn,
    save_turn,
)
from app.users import UserExists, create_user, user_by_key
from tests.conftest import free_port
from tests.pg import pg_bin, postgres_server


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed here (make setup installs it as root)")
    with postgres_server(free_port()) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = open_database(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        url = request.getfixturevalue("pg_url")
        database = open_database(url)
    yield database
    if request.param == "postgresql":  # one server per module: leave it empty for the next test
        from app.store import Base

        with database.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    database.close()


def turn_record(user_id: str, thread_id: str, **extra: Any) -> TurnRecord:
    fields: dict[str, Any] = {
        "thread_id": thread_id,
        "user_id": user_id,
        "question": "q?",
        "standalone_query": "q?",
        "route": "retrieve",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q?"}],
        "retrieved": [{"chunk_id": "c1", "document_id": "d1", "text": "t", "score": 0.5}],
        "memories": [],
        "answer": "a [1]",
        "sources": [{"chunk_id": "c1", "number": 1}],
        "model": "tiny",
        "adapter_version": None,
        "sampling": {"temperature": 0.2},
        "timings": {"generate_ms": 3.0},
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "error": None,
        **extra,
    }
    return TurnRecord(**fields)


def test_migrations_create_every_table(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert {
        "users",
        "threads",
        "turns",
        "feedback",
        "judgments",
        "documents",
        "adapter_versions",
    } <= tables
    assert "alembic_version" in tables
    open_database(db.engine.url.render_as_string(hide_password=False)).close()  # idempotent


def test_api_keys_are_stored_hashed(db: Database) -> None:
    user, key = create_user(db, "ann")
    with db.session() as s:
        stored = s.get(type(user), user.id)
        assert stored is not None and key not in stored.api_key_hash
    assert user_by_key(db, key).id == user.id  # type: ignore[union-attr]
    assert user_by_key(db, key + "x") is None
    with pytest.raises(UserExists):
        create_user(db, "ann")


def test_turn_is_stored_whole_or_not_at_all(db: Database) -> None:
    user, _ = create_user(db, "ben")
    thread, created = get_or_create_thread(db, user.id, None, "first")  # type: ignore[misc]
    assert created
    save_turn(db, turn_record(user.id, thread.id, id="t1"))
    turn = get_turn(db, user.id, "t1")
    assert (
        turn is not None
        and turn.messages[1]["content"] == "q?"
        and turn.timings["generate_ms"] == 3.0
    )
    with pytest.raises(IntegrityError):  # an unknown thread: nothing of the turn is written
        save_turn(db, turn_record(user.id, "no-such-thread", id="t2"))
    with db.session() as s:
        assert s.get(Turn, "t2") is None


def test_threads_turns_and_feedback_are_the_owners_alone(db: Database) -> None:
    a, _ = create_user(db, "a")
    b, _ = create_user(db, "b")
    thread, _ = get_or_create_thread(db, a.id, None, "t")  # type: ignore[misc]
    save_turn(db, turn_record(a.id, thread.id, id="ta"))
    assert get_or_create_thread(db, b.id, thread.id, "x") is None
    assert get_thread(db, b.id, thread.id) is None
    assert get_turn(db, b.id, "ta") is None
    assert set_feedback(db, b.id, "ta", rating=1, comment=None, corrected_answer=None) is None
    assert set_feedback(db, a.id, "ta", rating=1, comment="ok", corrected_answer=None)
    assert set_feedback(db, a.id, "ta", rating=-1, comment=None, corrected_answer="better")
    with db.session() as s:
        rows = list(s.scalars(select(Feedback)))
    assert [(f.rating, f.corrected_answer) for f in rows] == [(-1, "better")]  # replaced, not added
    assert not delete_thread(db, b.id, thread.id)
    assert delete_thread(db, a.id, thread.id)
    with db.session() as s:  # cascade: the thread's turns and their feedback went with it
        assert s.get(Turn, "ta") is None and not list(s.scalars(select(Feedback)))


def test_adapter_versions_and_the_active_one(db: Database) -> None:
    with db.session() as s:
        s.add(
            AdapterVersion(
                name="flywheel",
                version=1,
                path="/a/v1",
                base_model="tiny",
                status=AdapterStatus.active,
            )
        )
        s.add(AdapterVersion(name="flywheel", version=2, path="/a/v2", base_model="tiny"))
    active = active_adapter(db)
    assert active is not None and active.served_name == "flywheel-v1"
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(AdapterVersion(name="flywheel", version=2, path="/x", base_model="tiny"))
