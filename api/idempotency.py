"""Stripe's Idempotency-Key semantics: a Redis lock and cached answer first, Postgres last.

Redis answers the common cases in one round trip: the first request takes a
lock (``SET NX``), a concurrent duplicate finds it (409), a later retry finds
the cached answer (replayed). Redis may lose keys (flush, eviction, outage), so
the write itself is guarded by ``UNIQUE (merchant_id, idempotency_key)``: the
handler's action reports a conflict as ``Outcome(replayed=True)`` after comparing
the stored request fingerprint, and no key ever yields a second row.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from api.errors import IdempotencyError, IdempotencyKeyInUse
from api.logs import warn_throttled
from api.metrics import Metrics

log = logging.getLogger(__name__)

REPLAYED_HEADER = "Idempotent-Replayed"
TOKEN_HEADER = "PayStream-Consistency-Token"
# A lock is a short lease that its request renews while it runs: a request
# that dies (kill -9 of the API) frees its key within LOCK_SECONDS, and a live
# one, however slow, keeps answering 409 to its duplicates.
LOCK_SECONDS = 5
RENEW_EVERY_SECONDS = 1.5

# Delete the lock only if it is still ours (it may have expired and been retaken).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
# Extend the lease only if the lock is still ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def mismatch_error() -> IdempotencyError:
    return IdempotencyError(
        "Keys for idempotent requests can only be used with the same parameters they "
        "were first used with. Try using a key other than the one used previously.",
        code="idempotency_key_reused",
        param="Idempotency-Key",
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a write produced: the answer to send, and whether Postgres already had it."""

    status: int
    body: dict[str, Any]
    token: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A finished answer kept in Redis for the key's lifetime."""

    status: int
    body: str
    token: str


@dataclass(frozen=True, slots=True)
class Lock:
    key: str
    value: str
    fingerprint: str


def redis_key(merchant_id: str, idempotency_key: str) -> str:
    # Hashed: bounded length, and no client bytes inside our key names.
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
    return f"idem:{merchant_id}:{digest}"


class IdempotencyStore:
    """Locks and cached answers in Redis; every method may raise RedisError."""

    def __init__(self, redis: aioredis.Redis, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    async def begin(
        self, merchant_id: str, idempotency_key: str, fingerprint: str
    ) -> Lock | CachedResponse:
        """Take the key's lock, or return its cached answer; raise if it is busy or
        was used for another request."""
        key = redis_key(merchant_id, idempotency_key)
        value = json.dumps(
            {"state": "in_flight", "fp": fingerprint, "owner": secrets.token_hex(8)}
        )
        # NX with GET (Redis >= 7): set if absent, and either way return the old
        # value, so taking the lock and reading a competitor's is one atomic step.
        old = await self.redis.set(key, value, nx=True, ex=LOCK_SECONDS, get=True)
        if old is None:
            return Lock(key, value, fingerprint)
        try:
            held = json.loads(old)  # type: ignore[arg-type]  # a str: decode_responses
            state, held_fp = held["state"], held["fp"]
        except (ValueError, KeyError, TypeError):
            # Not ours to interpret: overwrite it and let Postgres be the judge.
            await self.redis.set(key, value, ex=LOCK_SECONDS)
            return Lock(key, value, fingerprint)
        if held_fp != fingerprint:
            raise mismatch_error()
        if state == "done":
            return CachedResponse(int(held["status"]), str(held["body"]), str(held["token"]))
        raise IdempotencyKeyInUse(
            "There is currently another in-progress request using this Idempotency-Key. "
            "Retry after it completes.",
            param="Idempotency-Key",
        )

    async def complete(self, lock: Lock, response: CachedResponse) -> None:
        """Replace the lock with the answer, kept for the configured TTL."""
        value = json.dumps(
            {
                "state": "done",
                "fp": lock.fingerprint,
                "status": response.status,
                "body": response.body,
                "token": response.token,
            }
        )
        await self.redis.set(lock.key, value, ex=self.ttl_seconds)

    async def renew(self, lock: Lock) -> bool:
        """Extend the lease of a lock still held; False if it was lost meanwhile."""
        return bool(await self._renew(keys=[lock.key],
                                      args=[lock.value, int(LOCK_SECONDS * 1000)]))

    async def release(self, lock: Lock) -> None:
        """Drop the lock so the client may retry (the request failed; nothing to cache)."""
        await self._release(keys=[lock.key], args=[lock.value])


class _Renewal:
    """Renews a lock every RENEW_EVERY_SECONDS until stopped. A timer, not a task
    per request: most requests end long before the first renewal is due."""

    def __init__(self, store: IdempotencyStore, lock: Lock, metrics: Metrics) -> None:
        self._store, self._lock, self._metrics = store, lock, metrics
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._timer = asyncio.get_running_loop().call_later(RENEW_EVERY_SECONDS, self._due)

    def _due(self) -> None:
        self._task = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        try:
            await self._store.renew(self._lock)
        except RedisError:
            # Postgres' unique constraint is still the last line.
            self._metrics.redis_errors.labels("idempotency").inc()
        if not self._stopped:
            self._timer = asyncio.get_running_loop().call_later(RENEW_EVERY_SECONDS, self._due)

    def stop(self) -> None:
        self._stopped = True
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _answer(status: int, body: str, token: str, *, replayed: bool) -> web.Response:
    headers = {TOKEN_HEADER: token}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return web.Response(text=body, status=status, headers=headers, content_type="application/json")


async def run_idempotent(
    store: IdempotencyStore,
    metrics: Metrics,
    *,
    merchant_id: str,
    idempotency_key: str | None,
    fingerprint: str,
    action: Callable[[], Awaitable[Outcome]],
) -> web.Response:
    """Run a write at most once per key, replaying its first answer to retries."""
    if idempotency_key is None:
        outcome = await action()
        return _answer(outcome.status, _dumps(outcome.body), outcome.token, replayed=False)

    lock: Lock | None = None
    try:
        begun = await store.begin(merchant_id, idempotency_key, fingerprint)
    except RedisError as err:
        # Redis is down: carry on without it; the UNIQUE constraint still holds.
        metrics.redis_errors.labels("idempotency").inc()
        warn_throttled(log, "idempotency", "idempotency locks unavailable, relying on "
                       "Postgres: %s", type(err).__name__)
    else:
        if isinstance(begun, CachedResponse):
            metrics.idempotent_replays.labels("redis").inc()
            return _answer(begun.status, begun.body, begun.token, replayed=True)
        lock = begun

    renewal = _Renewal(store, lock, metrics) if lock is not None else None
    try:
        outcome = await action()
    except BaseException:
        if renewal is not None:
            renewal.stop()
        if lock is not None:
            try:
                await store.release(lock)
            except RedisError:
                # It expires by itself after LOCK_SECONDS.
                metrics.redis_errors.labels("idempotency").inc()
        raise

    if renewal is not None:
        renewal.stop()
    body = _dumps(outcome.body)
    if outcome.replayed:
        metrics.idempotent_replays.labels("postgres").inc()
    if lock is not None:
        try:
            await store.complete(lock, CachedResponse(outcome.status, body, outcome.token))
        except RedisError:
            # The row is committed; a retry will be answered from Postgres.
            metrics.redis_errors.labels("idempotency").inc()
    return _answer(outcome.status, body, outcome.token, replayed=outcome.replayed)
