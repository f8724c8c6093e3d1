"""Per-API-key request limit in Redis: a counter per key per wall-clock second.

Every API process claims the key's allowance from Redis in small chunks (a
twentieth of the limit) and spends each chunk locally, so at most one request
in `chunk` costs a Redis round trip, and every process (on every machine)
still draws from the same per-second total in Redis. The price: allowance a
process claimed and did not spend within its second is lost, so with several
busy processes a key may get up to (chunk - 1) fewer requests per process per
second than the limit; never more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis

# A counter lives for its second plus one, so a slow clock edge never resets it early.
_WINDOW_TTL_SECONDS = 2
# Claims at most this share of the limit at a time.
_CHUNK_DIVISOR = 20
# Local allowances are forgotten wholesale past this many keys (they expire each second anyway).
_MAX_LOCAL_KEYS = 10_000

# Grant up to ARGV[1] requests of what is left of the second's ARGV[2]; atomic,
# so processes never claim the same allowance twice, and the counter can never
# be left without its expiry.
_CLAIM = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if grant <= 0 then
    return 0
end
redis.call('INCRBY', KEYS[1], grant)
if used == 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return grant
"""


class RateLimiter:
    """Fixed one-second windows.

    A burst straddling a second boundary may reach twice the limit for an
    instant; in exchange a check rarely needs Redis.
    """

    def __init__(self, redis: aioredis.Redis, limit_per_second: int) -> None:
        self.limit = limit_per_second
        self.chunk = max(1, limit_per_second // _CHUNK_DIVISOR)
        self._claim = redis.register_script(_CLAIM)
        # bucket -> (the second it was claimed for, requests left to spend in it)
        self._allowance: dict[str, tuple[int, int]] = {}
        # One claim in flight per bucket: a burst waits for it instead of each
        # request claiming a chunk of its own and starving the others.
        self._claims: dict[str, asyncio.Future[int]] = {}

    async def hit(self, bucket: str, *, now: float | None = None) -> int | None:
        """Count one request; the Retry-After seconds if over the limit, else None.

        Raises RedisError; the caller decides to fail open.
        """
        second = int(time.time() if now is None else now)
        while not self._spend(bucket, second):
            claim = self._claims.get(bucket)
            if claim is None or claim.done():
                # A finished claim whose allowance is spent is no use: awaiting it
                # again would not even yield, and this loop would spin.
                claim = asyncio.ensure_future(self._claim_chunk(bucket, second))
                self._claims[bucket] = claim
                claim.add_done_callback(self._forget_claim(bucket))
            if await asyncio.shield(claim) == 0 and not self._spend(bucket, second):
                # The window ends at the next second boundary.
                return 1
        return None

    def _forget_claim(self, bucket: str) -> Callable[[asyncio.Future[int]], None]:
        def forget(done: asyncio.Future[int]) -> None:
            # Only this claim: a newer one may have taken its place already.
            if self._claims.get(bucket) is done:
                del self._claims[bucket]
        return forget

    def _spend(self, bucket: str, second: int) -> bool:
        claimed_for, left = self._allowance.get(bucket, (second, 0))
        if claimed_for != second or left == 0:
            return False
        self._allowance[bucket] = (second, left - 1)
        return True

    async def _claim_chunk(self, bucket: str, second: int) -> int:
        granted = int(await self._claim(keys=[f"rl:{bucket}:{second}"],
                                        args=[self.chunk, self.limit, _WINDOW_TTL_SECONDS]))
        if granted > 0:
            if len(self._allowance) >= _MAX_LOCAL_KEYS:
                self._allowance.clear()
            self._allowance[bucket] = (second, granted)
        return granted
