"""API keys: made once, shown once, stored only as a SHA-256 digest.

A key is 32 random bytes, so a fast hash is enough (no password stretching needed), and
the digest can be looked up by index on every request.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "fw_"


def new_api_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The digest stored for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
