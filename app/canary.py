"""Which version answers a user while a canary is on trial: a sticky share of users.

A user's arm is a hash of their id salted with the canary's served name, so each user
stays in the same arm for the whole trial (their thread never switches models
mid-conversation), and each new canary draws a fresh set of users.
"""

from __future__ import annotations

import hashlib

from app.store.loop import CANARY, CONTROL, canary_share
from app.store.models import AdapterVersion


def in_canary(user_id: str, salt: str, share: float) -> bool:
    """Whether ``user_id`` falls in the canary's ``share`` (0..1), the same every time."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def pick_arm(
    user_id: str, active: AdapterVersion | None, canary: AdapterVersion | None
) -> tuple[str | None, str | None]:
    """``(served name or None for the base model, arm or None when no canary runs)``."""
    control = active.served_name if active is not None else None
    if canary is None:
        return control, None
    if in_canary(user_id, canary.served_name, canary_share(canary)):
        return canary.served_name, CANARY
    return control, CONTROL
