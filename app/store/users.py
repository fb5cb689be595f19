"""Users: created with a hashed API key, found by key or name, trusted or not.

A user may let training prompts keep their sources and memories (off by default).
"""

from __future__ import annotations

from sqlalchemy import select

from app.store.db import Database
from app.store.models import Role, User


class UserExists(ValueError):
    """A user of that name exists already."""


def add_user(db: Database, name: str, key_hash: str, *, admin: bool = False) -> User:
    """Store a new user; :class:`UserExists` when the name is taken."""
    with db.session() as session:
        if session.scalar(select(User).where(User.name == name)) is not None:
            raise UserExists(f"a user named {name!r} exists already; pick another name")
        user = User(name=name, api_key_hash=key_hash, role=Role.admin if admin else Role.user)
        session.add(user)
    return user


def user_by_key_hash(db: Database, key_hash: str) -> User | None:
    """The user whose API key hashes to ``key_hash``, or None."""
    with db.session() as session:
        return session.scalar(select(User).where(User.api_key_hash == key_hash))


def user_by_name(db: Database, name: str) -> User | None:
    """The user called ``name``, or None."""
    with db.session() as session:
        return session.scalar(select(User).where(User.name == name))


def _update_user(db: Database, user_id: str, **values: object) -> User | None:
    """Set columns of one user; None when there is no such user."""
    with db.session() as session:
        user = session.get(User, user_id)
        if user is not None:
            for column, value in values.items():
                setattr(user, column, value)
        return user


def set_trusted(db: Database, user_id: str, trusted: bool) -> User | None:
    """Mark a user trusted or not; None when there is no such user."""
    return _update_user(db, user_id, trusted=trusted)


def set_train_on_context(db: Database, user_id: str, allowed: bool) -> User | None:
    """Let training prompts keep (or drop) the user's sources and memories; None: no user."""
    return _update_user(db, user_id, train_on_context=allowed)


def set_key_hash(db: Database, user_id: str, key_hash: str) -> User | None:
    """Replace a user's key digest (rotation, revocation); None when there is no such user."""
    return _update_user(db, user_id, api_key_hash=key_hash)
