"""Users and their API keys, and the CLI ``python -m app.users``.

``create NAME [--admin]`` and ``rotate NAME`` print the new key once, alone on the last
line, so scripts can take it with ``tail -n1``. ``revoke NAME`` makes the user's key stop
working at once (the API looks keys up on every request); the user and their turns stay.
``train-on-context NAME on|off`` records the user's choice to let training prompts keep
their retrieved sources and memories (off by default; see the README's privacy section).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys

from app.auth import hash_api_key, new_api_key
from app.store import Database, User
from app.store.users import (
    UserExists,
    add_user,
    set_key_hash,
    set_train_on_context,
    user_by_key_hash,
    user_by_name,
)

__all__ = ["UserExists", "create_user", "revoke_key", "rotate_key", "user_by_key", "user_by_name"]

logger = logging.getLogger(__name__)


def create_user(db: Database, name: str, *, admin: bool = False) -> tuple[User, str]:
    """Create a user; returns it with its API key (the only time the key is known)."""
    name = name.strip()
    if not name:
        raise ValueError("a user needs a non-empty name")
    key = new_api_key()
    return add_user(db, name, hash_api_key(key), admin=admin), key


def user_by_key(db: Database, key: str) -> User | None:
    """The user holding ``key``, or None."""
    return user_by_key_hash(db, hash_api_key(key))


def rotate_key(db: Database, user_id: str) -> tuple[User, str] | None:
    """Give the user a new key (the old one stops working); None when there is no such user."""
    key = new_api_key()
    user = set_key_hash(db, user_id, hash_api_key(key))
    return (user, key) if user is not None else None


def revoke_key(db: Database, user_id: str) -> User | None:
    """Make the user's key stop working; None when there is no such user.

    The stored digest becomes a random string with a ``!``, which no SHA-256 hex digest
    equals, so no key can match it until the key is rotated.
    """
    return set_key_hash(db, user_id, "!" + secrets.token_hex(31))


def _cli_user(db: Database, name: str, parser: argparse.ArgumentParser) -> User:
    user = user_by_name(db, name)
    if user is None:
        parser.exit(1, f"error: no user named {name!r}\n")
    return user


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    from app.settings import get_settings
    from app.store import open_database

    parser = argparse.ArgumentParser(prog="python -m app.users", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a user and print its API key once")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="give the user the admin role")
    sub.add_parser("rotate", help="give a user a new key (printed once)").add_argument("name")
    sub.add_parser("revoke", help="make a user's key stop working now").add_argument("name")
    context = sub.add_parser(
        "train-on-context", help="let training prompts keep the user's sources and memories"
    )
    context.add_argument("name")
    context.add_argument("choice", choices=["on", "off"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    db = open_database(get_settings().db_url)
    try:
        if args.command == "create":
            try:
                user, key = create_user(db, args.name, admin=args.admin)
            except (UserExists, ValueError) as exc:
                parser.exit(1, f"error: {exc}\n")
            logger.info(
                "created %s %r (id %s); its API key, shown only now:", user.role, user.name, user.id
            )
        elif args.command == "rotate":
            rotated = rotate_key(db, _cli_user(db, args.name, parser).id)
            assert rotated is not None
            user, key = rotated
            logger.info(
                "new API key for %r (the old one no longer works), shown only now:", user.name
            )
        elif args.command == "revoke":
            revoke_key(db, _cli_user(db, args.name, parser).id)
            logger.info("revoked the API key of %r; 'rotate' gives them a new one", args.name)
            return
        else:
            set_train_on_context(db, _cli_user(db, args.name, parser).id, args.choice == "on")
            kept = "keep" if args.choice == "on" else "leave out"
            logger.info("training prompts now %s the sources and memories of %r", kept, args.name)
            return
    finally:
        db.close()
    sys.stdout.write(key + "\n")


if __name__ == "__main__":
    main()
