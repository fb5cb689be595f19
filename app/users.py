"""Users: create them and look them up by API key. Also the CLI ``python -m app.users``.

``python -m app.users create NAME [--admin]`` prints the new key once, alone on the last
line, so scripts can take it with ``tail -n1``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from app.auth import hash_api_key, new_api_key
from app.store import Database, User
from app.store.users import UserExists, add_user, user_by_key_hash, user_by_name

__all__ = ["UserExists", "create_user", "user_by_key", "user_by_name"]

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


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    from app.settings import get_settings
    from app.store import open_database

    parser = argparse.ArgumentParser(prog="python -m app.users", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a user and print its API key once")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="give the user the admin role")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    db = open_database(get_settings().db_url)
    try:
        user, key = create_user(db, args.name, admin=args.admin)
    except (UserExists, ValueError) as exc:
        parser.exit(1, f"error: {exc}\n")
    finally:
        db.close()
    logger.info(
        "created %s %r (id %s); its API key, shown only now:", user.role, user.name, user.id
    )
    sys.stdout.write(key + "\n")


if __name__ == "__main__":
    main()
