"""A cheap in-memory Stripe peer with Stripe's latency and rate limit, for benchmarks only.

    .venv/bin/python -m bench.stripe_peer --port 8421 --latency-ms 800 --jitter-ms 300 \\
        --tail-ratio 0.01 --tail-ms 4000 --rate-limit 100

localstripe answers at once, never rate-limits, and pickles its whole store on
every write. Real Stripe takes ~0.5-2 s to confirm a card PaymentIntent and
answers 429 above ~100 requests/s per account (25 in test mode). This peer
serves the calls the worker makes (streams/adapters/stripe_gateway.py, through the stripe
SDK) with that shape:

- POST /v1/payment_intents creates and confirms: `pm_card_chargeCustomerFail`
  is declined (402 card_error carrying the failed PaymentIntent), anything else
  succeeds, or with --processing-ratio answers `processing` and turns
  `succeeded` on a read --processing-seconds later (no webhooks: only a poll
  resolves it). GET /v1/payment_intents/{id}, /v1/payment_intents/search
  (`metadata['payment_id']:'...'` only), /v1/charges (always empty).
- POST /v1/refunds, GET /v1/refunds/{id}, GET /v1/refunds?payment_intent=...
- Idempotency-Key is ignored, like localstripe: a retried create is a second
  PaymentIntent. Payment ids (metadata.payment_id) with more than one are listed.
- Every answer but a 429 waits a random delay: --latency-ms +/- --jitter-ms
  (uniform), or --tail-ms with probability --tail-ratio. The object exists
  before the wait, so a client that times out may still have created it.
- --rate-limit N: an account-wide token bucket of N requests/s holding at most
  N tokens (a 1 s burst). Over it, 429 at once with Stripe's rate_limit error
  body and a Retry-After header (whole seconds until a token is back, >= 1).
- Every answer names itself in a Request-Id header, as Stripe's do.
- GET /_stats: counts (requests by route and status, 429s, PaymentIntents,
  duplicates, processing ones, most requests in flight). Not rate-limited.

Importable: `async with serving(PeerConfig(...)) as running:` runs it in the
caller's event loop (running.url, running.peer.stats()).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import secrets
import signal
import socket
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

DECLINED_CARD = "pm_card_chargeCustomerFail"
# The message of Stripe's rate_limit error as captured from the live API and kept in
# public test fixtures; test mode words it differently.
RATE_LIMIT_MESSAGES = {
    "live": "Request rate limit exceeded. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
    "test": "Testmode request rate limit exceeded, the rate limits in testmode are lower "
            "than livemode. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
}
# The one search query the worker sends: metadata['payment_id']:'pay_x'.
_SEARCH = re.compile(r"""^\s*metadata\[['"](?P<key>[^'"]+)['"]\]\s*:"""
                     r"""\s*['"](?P<value>[^'"]*)['"]\s*$""")
Handler = Callable[[web.Request], Awaitable[web.Response]]


@dataclass(frozen=True)
class PeerConfig:
    """How Stripe-like the peer is; all zero is localstripe's instant, unlimited peer."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    tail_ratio: float = 0.0
    tail_ms: float = 0.0
    rate_limit: float = 0.0
    processing_ratio: float = 0.0
    processing_seconds: float = 5.0
    # Real Stripe's search index lags writes (under a minute, it says); 0: none.
    search_lag_seconds: float = 0.0
    mode: str = "live"
    seed: int | None = None

    @property
    def worst_latency_s(self) -> float:
        return max(self.tail_ms if self.tail_ratio > 0 else 0.0,
                   self.latency_ms + self.jitter_ms) / 1000


class TokenBucket:
    """`rate` tokens per second, holding at most `rate` (a one-second burst)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._updated = clock()

    def take(self) -> float:
        """0 if a request may go now, else the seconds until one may."""
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


def _error(status: int, type_: str, message: str, **fields: Any) -> web.Response:
    return _json({"error": {"type": type_, "message": message, **fields}}, status)


def _json(body: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status,
                        content_type="application/json")


def _missing(param: str) -> web.Response:
    return _error(400, "invalid_request_error", f"Missing required param: {param}.",
                  code="parameter_missing", param=param,
                  doc_url="https://stripe.com/docs/error-codes/parameter-missing")


def _no_such(kind: str, object_id: str, param: str) -> web.Response:
    return _error(404, "invalid_request_error", f"No such {kind}: '{object_id}'",
                  code="resource_missing", param=param,
                  doc_url="https://stripe.com/docs/error-codes/resource-missing")


def _nested(form: Mapping[str, str], name: str) -> dict[str, str]:
    """`name[key]=value` fields (how the SDK encodes a dict) as a dict."""
    prefix = name + "["
    return {k[len(prefix):-1]: v for k, v in form.items()
            if k.startswith(prefix) and k.endswith("]")}


def _list(url: str, data: list[dict[str, Any]]) -> web.Response:
    return _json({"object": "list", "data": data, "has_more": False, "url": url})


class StripePeer:
    """The peer's state and handlers; one instance per server, plain dicts throughout."""

    def __init__(self, config: PeerConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._bucket = TokenBucket(config.rate_limit) if config.rate_limit > 0 else None
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.intents_by_payment: dict[str, list[str]] = defaultdict(list)
        self._refunds_by_intent: dict[str, list[str]] = defaultdict(list)
        # PaymentIntent id -> when it turns from processing to succeeded.
        self._resolve_at: dict[str, float] = {}
        self._created_at: dict[str, float] = {}
        self.processing_answered: set[str] = set()
        self.processing_resolved: set[str] = set()
        self.requests: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.rate_limited = 0
        self.in_flight = 0
        self.max_in_flight = 0

    # --- plumbing ------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        table = [
            ("POST", "/v1/payment_intents", self._create_payment_intent),
            # Before /{id}: aiohttp matches in the order routes were added.
            ("GET", "/v1/payment_intents/search", self._search_payment_intents),
            ("GET", "/v1/payment_intents/{id}", self._retrieve_payment_intent),
            ("GET", "/v1/charges", self._list_charges),
            ("POST", "/v1/refunds", self._create_refund),
            ("GET", "/v1/refunds", self._list_refunds),
            ("GET", "/v1/refunds/{id}", self._retrieve_refund),
        ]
        defs = [web.route(method, path, self._wrap(f"{method} {path}", handler))
                for method, path, handler in table]
        defs.append(web.get("/_stats", self._stats))
        return defs

    def _wrap(self, route: str, handler: Handler) -> Handler:
        counts = self.requests[route]

        async def handle(request: web.Request) -> web.Response:
            response = await answer(request)
            # Stripe names every answer; the SDK keeps its latency for the next request's
            # telemetry header, as it would against Stripe.
            response.headers["Request-Id"] = "req_" + secrets.token_hex(7)
            return response

        async def answer(request: web.Request) -> web.Response:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if not request.headers.get("Authorization", "").startswith("Bearer "):
                    response = _error(401, "invalid_request_error",
                                      "You did not provide an API key.")
                elif self._bucket is not None and (wait := self._bucket.take()) > 0:
                    # Stripe's limiter answers at once: no latency on a 429.
                    self.rate_limited += 1
                    counts[429] += 1
                    response = _error(429, "invalid_request_error",
                                      RATE_LIMIT_MESSAGES[self.config.mode],
                                      code="rate_limit",
                                      doc_url="https://stripe.com/docs/error-codes/rate-limit")
                    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
                    return response
                else:
                    # The effect happens first, then the wait: a client that gives up
                    # during it has still created the object.
                    response = await handler(request)
                delay = self._delay()
                if delay > 0:
                    await asyncio.sleep(delay)
                counts[response.status] += 1
                return response
            finally:
                self.in_flight -= 1

        return handle

    def _delay(self) -> float:
        config = self.config
        if config.tail_ratio > 0 and self._rng.random() < config.tail_ratio:
            return config.tail_ms / 1000
        if config.jitter_ms > 0:
            return max(0.0, config.latency_ms + self._rng.uniform(-1, 1) * config.jitter_ms) / 1000
        return config.latency_ms / 1000

    def stats(self) -> dict[str, Any]:
        requests = {route: {str(status): n for status, n in sorted(by_status.items())}
                    for route, by_status in self.requests.items() if by_status}
        return {
            "requests": requests,
            "requests_total": sum(sum(s.values()) for s in self.requests.values()),
            "rate_limited": self.rate_limited,
            "payment_intents": len(self.payment_intents),
            "payment_ids": len(self.intents_by_payment),
            "payment_ids_with_several_intents": sorted(
                pid for pid, ids in self.intents_by_payment.items() if len(ids) > 1),
            "refunds": len(self.refunds),
            "processing_answered": len(self.processing_answered),
            "processing_resolved": len(self.processing_resolved),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())

    # --- PaymentIntents --------------------------------------------------------------

    async def _create_payment_intent(self, request: web.Request) -> web.Response:
        form = await request.post()
        for param in ("amount", "currency"):
            if not form.get(param):
                return _missing(param)
        try:
            amount = int(str(form["amount"]))
        except ValueError:
            return _error(400, "invalid_request_error", f"Invalid integer: {form['amount']!s}",
                          param="amount")
        fields = {k: str(v) for k, v in form.items()}
        metadata = _nested(fields, "metadata")
        payment_method = fields.get("payment_method")
        confirm = fields.get("confirm") == "true"
        now = time.time()
        pi_id = "pi_" + secrets.token_hex(12)
        pi: dict[str, Any] = {
            "id": pi_id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
            "amount_received": 0, "capture_method": "automatic_async",
            "client_secret": f"{pi_id}_secret_{secrets.token_hex(8)}",
            "confirmation_method": "automatic", "created": int(now),
            "currency": fields["currency"].lower(), "customer": fields.get("customer"),
            "description": None, "last_payment_error": None, "latest_charge": None,
            "livemode": self.config.mode == "live", "metadata": metadata,
            "payment_method": payment_method, "payment_method_types": ["card"],
            "status": "requires_payment_method" if not payment_method
            else "requires_confirmation",
        }
        self.payment_intents[pi_id] = pi
        self._created_at[pi_id] = now
        if "payment_id" in metadata:
            self.intents_by_payment[metadata["payment_id"]].append(pi_id)
        if not (confirm and payment_method):
            return _json(pi)
        charge_id = "ch_" + secrets.token_hex(12)
        pi["latest_charge"] = charge_id
        if payment_method == DECLINED_CARD:
            error = {"type": "card_error", "code": "card_declined",
                     "decline_code": "generic_decline", "message": "Your card was declined.",
                     "charge": charge_id,
                     "doc_url": "https://stripe.com/docs/error-codes/card-declined"}
            pi["status"] = "requires_payment_method"
            pi["last_payment_error"] = {**error, "payment_method": {"id": payment_method,
                                                                     "object": "payment_method"}}
            pi["payment_method"] = None
            return _json({"error": {**error, "payment_intent": pi}}, 402)
        if self.config.processing_ratio > 0 and self._rng.random() < self.config.processing_ratio:
            pi["status"] = "processing"
            self._resolve_at[pi_id] = time.monotonic() + self.config.processing_seconds
            self.processing_answered.add(pi_id)
            return _json(pi)
        pi["status"] = "succeeded"
        pi["amount_received"] = amount
        return _json(pi)

    def _settle(self, pi: dict[str, Any]) -> dict[str, Any]:
        """A processing PaymentIntent whose time has come succeeds as it is read."""
        resolve_at = self._resolve_at.get(pi["id"])
        if resolve_at is not None and time.monotonic() >= resolve_at:
            del self._resolve_at[pi["id"]]
            pi["status"] = "succeeded"
            pi["amount_received"] = pi["amount"]
            self.processing_resolved.add(pi["id"])
        return pi

    async def _retrieve_payment_intent(self, request: web.Request) -> web.Response:
        pi_id = request.match_info["id"]
        pi = self.payment_intents.get(pi_id)
        if pi is None:
            return _no_such("payment_intent", pi_id, "intent")
        return _json(self._settle(pi))

    async def _search_payment_intents(self, request: web.Request) -> web.Response:
        query = request.query.get("query")
        if not query:
            return _missing("query")
        match = _SEARCH.match(query)
        if match is None or match["key"] != "payment_id":
            return _error(400, "invalid_request_error",
                          f"This peer only searches metadata['payment_id']: {query!r}",
                          param="query")
        visible_before = time.time() - self.config.search_lag_seconds
        data = [self._settle(self.payment_intents[i])
                for i in reversed(self.intents_by_payment.get(match["value"], []))
                if self._created_at[i] <= visible_before]
        return _json({"object": "search_result", "data": data, "has_more": False,
                      "next_page": None, "url": "/v1/payment_intents/search"})

    async def _list_charges(self, request: web.Request) -> web.Response:
        # The worker lists charges only when search is refused; this peer searches.
        return _list("/v1/charges", [])

    # --- Refunds ---------------------------------------------------------------------

    async def _create_refund(self, request: web.Request) -> web.Response:
        fields = {k: str(v) for k, v in (await request.post()).items()}
        pi_id = fields.get("payment_intent")
        if not pi_id:
            return _missing("payment_intent")
        pi = self.payment_intents.get(pi_id)
        if pi is None:
            return _no_such("payment_intent", pi_id, "payment_intent")
        if self._settle(pi)["status"] != "succeeded":
            return _error(400, "invalid_request_error",
                          f"This PaymentIntent ({pi_id}) does not have a successful charge "
                          "to refund.", code="charge_not_refundable", param="payment_intent")
        refunded = sum(self.refunds[r]["amount"] for r in self._refunds_by_intent[pi_id])
        left = pi["amount"] - refunded
        try:
            amount = int(fields["amount"]) if fields.get("amount") else left
        except ValueError:
            return _error(400, "invalid_request_error", f"Invalid integer: {fields['amount']}",
                          param="amount")
        if left <= 0:
            return _error(400, "invalid_request_error",
                          f"Charge {pi['latest_charge']} has already been refunded.",
                          code="charge_already_refunded")
        if amount <= 0 or amount > left:
            return _error(400, "invalid_request_error",
                          f"Refund amount ({amount}) is greater than unrefunded amount on "
                          f"charge ({left})", param="amount", code="amount_too_large")
        refund = {
            "id": "re_" + secrets.token_hex(12), "object": "refund", "amount": amount,
            "charge": pi["latest_charge"], "created": int(time.time()),
            "currency": pi["currency"], "metadata": _nested(fields, "metadata"),
            "payment_intent": pi_id, "reason": fields.get("reason"), "status": "succeeded",
        }
        self.refunds[refund["id"]] = refund
        self._refunds_by_intent[pi_id].append(refund["id"])
        return _json(refund)

    async def _retrieve_refund(self, request: web.Request) -> web.Response:
        refund_id = request.match_info["id"]
        refund = self.refunds.get(refund_id)
        if refund is None:
            return _no_such("refund", refund_id, "id")
        return _json(refund)

    async def _list_refunds(self, request: web.Request) -> web.Response:
        pi_id = request.query.get("payment_intent")
        ids = self._refunds_by_intent.get(pi_id, []) if pi_id else list(self.refunds)
        limit = int(request.query.get("limit", "10"))
        # Newest first, like Stripe's lists.
        return _list("/v1/refunds", [self.refunds[i] for i in reversed(ids)][:limit])


@dataclass
class RunningPeer:
    """A peer serving on `url` in the current event loop."""

    peer: StripePeer
    url: str
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_peer(config: PeerConfig, *, host: str = "127.0.0.1",
                     port: int = 0) -> RunningPeer:
    """Serve a new peer on host:port (0: a free port) in the running event loop."""
    peer = StripePeer(config)
    app = web.Application()
    app.add_routes(peer.routes())
    # No access log: one line per request would cost more than the request.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock)
    await site.start()
    return RunningPeer(peer, f"http://{host}:{sock.getsockname()[1]}", runner)


@asynccontextmanager
async def serving(config: PeerConfig, *, host: str = "127.0.0.1",
                  port: int = 0) -> AsyncIterator[RunningPeer]:
    running = await start_peer(config, host=host, port=port)
    try:
        yield running
    finally:
        await running.close()


def add_latency_arguments(parser: argparse.ArgumentParser, title: str | None = None) -> None:
    """--latency-ms, --jitter-ms, --tail-ratio and --tail-ms, defaulting to Stripe's
    answer times; in a group of their own when titled."""
    flags = parser.add_argument_group(title) if title else parser
    flags.add_argument("--latency-ms", type=float, default=800.0,
                       help="mean delay of every answer but a 429 (default 800)")
    flags.add_argument("--jitter-ms", type=float, default=300.0,
                       help="the delay is uniform in latency +/- jitter (default 300)")
    flags.add_argument("--tail-ratio", type=float, default=0.01,
                       help="share of answers delayed by --tail-ms instead (default 0.01)")
    flags.add_argument("--tail-ms", type=float, default=4000.0,
                       help="the tail's delay; keep it under the client's timeout (default 4000)")


def latency_from_args(args: argparse.Namespace) -> PeerConfig:
    """A PeerConfig with the fields add_latency_arguments sets (dataclasses.replace the rest)."""
    return PeerConfig(latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
                      tail_ratio=args.tail_ratio, tail_ms=args.tail_ms)


def config_from_args(args: argparse.Namespace) -> PeerConfig:
    return replace(latency_from_args(args),
                   rate_limit=args.rate_limit, processing_ratio=args.processing_ratio,
                   processing_seconds=args.processing_seconds,
                   search_lag_seconds=args.search_lag_seconds, mode=args.mode,
                   seed=args.seed)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Point the worker at it with STRIPE_API_BASE=http://HOST:PORT. On exit it "
        "prints its /_stats as JSON.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8421, help="port (default 8421; 0: any free one)")
    add_latency_arguments(p)
    p.add_argument("--rate-limit", type=float, default=100.0,
                   help="account-wide requests/s (token bucket, 1 s burst) before 429; "
                   "0: no limit (default 100, Stripe live mode; test mode is 25)")
    p.add_argument("--processing-ratio", type=float, default=0.0,
                   help="share of approved PaymentIntents answered `processing` (default 0)")
    p.add_argument("--processing-seconds", type=float, default=5.0,
                   help="a processing PaymentIntent reads `succeeded` this long after it "
                   "was created (default 5)")
    p.add_argument("--search-lag-seconds", type=float, default=0.0,
                   help="search finds a PaymentIntent only this long after its creation "
                   "(real Stripe: up to a minute; default 0)")
    p.add_argument("--mode", choices=sorted(RATE_LIMIT_MESSAGES), default="live",
                   help="live or test: the 429 message's wording and `livemode` (default live)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random draws")
    return p


async def _serve(args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serving(config_from_args(args), host=args.host, port=args.port) as running:
        print(f"stripe peer on {running.url} ({running.peer.config})", flush=True)
        await stop.wait()
    # After the answers still in their delay have gone out.
    return running.peer.stats()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        import uvloop
    except ImportError:  # the peer needs only aiohttp
        stats = asyncio.run(_serve(args))
    else:
        stats = uvloop.run(_serve(args))
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
