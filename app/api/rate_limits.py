"""Rate limits per API key and per client address, on the ``limits`` library.

Three moving windows, each configurable: all requests of one key, all requests from one
address, and failed sign-ins from one address (so guessing keys is slow). Counters live in
this process's memory: with several API processes behind a balancer, point ``limits`` at a
shared storage (its Redis or Memcached backends) instead.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from fastapi import HTTPException, status

if TYPE_CHECKING:
    from app.settings import AppSettings


class RateLimits:
    """The API's limits; ``check_*`` raise 429 with ``Retry-After`` when one is spent."""

    def __init__(self, settings: AppSettings) -> None:
        from limits import parse
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self.enabled = settings.rate_limits
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_key = parse(settings.rate_limit_per_key)
        self._per_ip = parse(settings.rate_limit_per_ip)
        self._failures = parse(settings.rate_limit_auth_failures)

    def check_address(self, address: str) -> None:
        """Count a request from ``address``; 429 past its limit or its failed sign-ins."""
        if not self.enabled:
            return
        if not self._limiter.test(self._failures, "auth-failures", address):
            self._refuse(self._failures, ("auth-failures", address), "failed sign-ins")
        if not self._limiter.hit(self._per_ip, "address", address):
            self._refuse(self._per_ip, ("address", address), "requests from this address")

    def failed_sign_in(self, address: str) -> None:
        """Count a wrong or revoked key from ``address``."""
        if self.enabled:
            self._limiter.hit(self._failures, "auth-failures", address)

    def check_key(self, user_id: str) -> None:
        """Count a request with a user's key; 429 past the per-key limit."""
        if self.enabled and not self._limiter.hit(self._per_key, "key", user_id):
            self._refuse(self._per_key, ("key", user_id), "requests with this API key")

    def _refuse(self, item: object, ids: tuple[str, str], what: str) -> None:
        reset = self._limiter.get_window_stats(item, *ids).reset_time  # type: ignore[arg-type]
        retry = max(1, math.ceil(reset - time.time()))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many {what} ({item}); retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )
