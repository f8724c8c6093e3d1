"""The per-key rate limit against the real Redis: chunked claims, one shared total."""

from __future__ import annotations

import asyncio
import secrets
import threading

import redis.asyncio as aioredis

from api.ratelimit import RateLimiter
from paystream.settings import Settings

SECOND = 1_900_000_000  # a fixed window, far from any other test's keys


async def test_processes_share_one_total_and_never_exceed_it(settings: Settings) -> None:
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        bucket = f"test-{secrets.token_hex(6)}"
        # Two limiters are two API processes drawing on one key's allowance.
        first, second = RateLimiter(client, 100), RateLimiter(client, 100)
        admitted = 0
        for i in range(300):
            limiter = first if i % 3 else second
            if await limiter.hit(bucket, now=SECOND + 0.5) is None:
                admitted += 1
        # Never more than the limit; fewer by at most each process's unspent chunk.
        assert 100 - 2 * (first.chunk - 1) <= admitted <= 100
        assert int(await client.get(f"rl:{bucket}:{SECOND}")) == 100
        # Over the limit the answer is "retry after one second".
        assert await first.hit(bucket, now=SECOND + 0.9) == 1
        # The next second starts afresh.
        assert await first.hit(bucket, now=SECOND + 1.0) is None
    finally:
        await client.aclose()


async def test_one_process_claims_in_chunks_and_spends_them_locally(
    settings: Settings,
) -> None:
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        bucket = f"test-{secrets.token_hex(6)}"
        limiter = RateLimiter(client, 100)
        assert limiter.chunk == 5
        for _ in range(6):
            assert await limiter.hit(bucket, now=SECOND) is None
        # Six requests, two claims of five: one Redis call per five requests.
        assert int(await client.get(f"rl:{bucket}:{SECOND}")) == 10
        # A small limit is claimed one request at a time: exact.
        exact = RateLimiter(client, 3)
        results = [await exact.hit(f"{bucket}-small", now=SECOND) for _ in range(5)]
        assert results == [None, None, None, 1, 1]
    finally:
        await client.aclose()


async def test_concurrent_requests_in_one_process_lose_no_allowance(settings: Settings) -> None:
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        bucket = f"test-{secrets.token_hex(6)}"
        limiter = RateLimiter(client, 100)
        # Forty requests at once all find no local allowance and claim in parallel.
        results = await asyncio.gather(*(limiter.hit(bucket, now=SECOND) for _ in range(40)))
        assert results == [None] * 40
        claimed = int(await client.get(f"rl:{bucket}:{SECOND}"))
        # What was claimed and not yet spent stays spendable, with no Redis call.
        spent = 40
        while spent < claimed:
            assert await limiter.hit(bucket, now=SECOND) is None
            spent += 1
        assert int(await client.get(f"rl:{bucket}:{SECOND}")) == claimed
    finally:
        await client.aclose()


async def test_a_burst_over_a_small_limit_gets_exactly_the_limit(settings: Settings) -> None:
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        limiter = RateLimiter(client, 3)
        bucket = f"test-{secrets.token_hex(6)}"
        # Requests that arrive while a finished claim is still registered must
        # claim anew (once, this spun forever instead).
        results = await asyncio.gather(*(limiter.hit(bucket, now=SECOND) for _ in range(12)))
        assert results.count(None) == 3 and results.count(1) == 9
    finally:
        await client.aclose()


def test_a_finished_claim_still_registered_is_not_awaited_again(settings: Settings) -> None:
    # The state a request can find between a claim finishing and its callbacks
    # running: awaiting that claim again does not yield, so hit() must claim anew
    # (it once spun forever here, freezing the API). Run in a thread so a spin
    # fails the test instead of hanging it.
    async def scenario() -> int | None:
        client = aioredis.from_url(settings.redis_url, decode_responses=True)
        try:
            limiter = RateLimiter(client, 3)
            bucket = f"test-{secrets.token_hex(6)}"
            spent = asyncio.get_running_loop().create_future()
            spent.set_result(1)
            limiter._claims[bucket] = spent
            return await limiter.hit(bucket, now=SECOND)
        finally:
            await client.aclose()

    results: list[int | None] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(scenario())),
                              daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "RateLimiter.hit spun on a finished claim"
    assert results == [None]
