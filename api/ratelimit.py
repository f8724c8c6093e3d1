"""Per-API-key request limit in Redis: a counter per key per wall-clock second."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

# A counter lives for its second plus one, so a slow clock edge never resets it early.
_WINDOW_TTL_SECONDS = 2

# INCR and EXPIRE in one atomic call: one round trip, and a counter can never
# be left without its expiry (as a crash between two separate commands could).
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""


class RateLimiter:
    """Fixed one-second windows.

    A burst straddling a second boundary may reach twice the limit for an
    instant; in exchange a check costs one Redis round trip.
    """

    def __init__(self, redis: aioredis.Redis, limit_per_second: int) -> None:
        self.limit = limit_per_second
        self._hit = redis.register_script(_HIT)

    async def hit(self, bucket: str, *, now: float | None = None) -> int | None:
        """Count one request; the Retry-After seconds if over the limit, else None.

        Raises RedisError; the caller decides to fail open.
        """
        second = int(time.time() if now is None else now)
        count = await self._hit(keys=[f"rl:{bucket}:{second}"], args=[_WINDOW_TTL_SECONDS])
        if int(count) > self.limit:
            # The window ends at the next second boundary.
            return 1
        return None
