"""`paystream reconcile` and `paystream ledger rebuild`: checking the books from a shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import Counter
from typing import Any

from paystream.settings import Settings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """'90s', '30m', '24h', '7d' -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return float(match.group(1)) * _UNIT[match.group(2)]


def register(sub: Any) -> None:
    """Add the reconcile and ledger subcommands to the `paystream` parser."""
    rec = sub.add_parser(
        "reconcile", help="compare payments, refunds and the ledger with Stripe",
        description="Compare our payments and refunds with Stripe's PaymentIntents and "
        "Refunds (by the ids in their metadata and our stored Stripe ids), and the ledger "
        "with both. Reports every drift with its ids. Exit 0: clean (or, with --fix, every "
        "drift fixed); 1: drift left; 2: could not complete.",
        epilog="Stripe is listed page by page at --rate requests/s (its requests come out "
        "of the account's limit, like the worker's); a 429 pauses and retries. Objects "
        "changed in the last --settle seconds are left out: the pipeline may not have "
        "caught up with them yet.")
    rec.add_argument("--since", type=duration, default=None, metavar="DURATION",
                     help="only objects created in this last period, e.g. 24h (default: all)")
    rec.add_argument("--merchant", metavar="ID", help="only this merchant's books")
    rec.add_argument("--fix", action="store_true",
                     help="apply the guarded transitions our state machine allows (e.g. "
                     "pending -> succeeded when Stripe charged it); list what needs a person")
    rec.add_argument("--json", action="store_true", help="one JSON object on stdout")
    rec.add_argument("--rate", type=float, default=None,
                     help="Stripe requests per second (default: half of "
                     "STRIPE_REQUESTS_PER_SECOND, leaving the rest to the workers)")
    rec.add_argument("--settle", type=float, default=10.0, metavar="SECONDS",
                     help="leave out objects changed this recently (default 10)")
    rec.set_defaults(func=run_reconcile)

    ledger = sub.add_parser("ledger", help="the ledger projection",
                            description="Operations on the ledger projection.")
    actions = ledger.add_subparsers(dest="ledger_command", metavar="ACTION")
    ledger.set_defaults(func=lambda args: (ledger.print_help(), 2)[1])
    rebuild = actions.add_parser(
        "rebuild", help="replay the change stream into a scratch ledger and compare",
        description="Read the payments and refunds change topics from their earliest "
        "offset, post the journals they imply (same domain functions and posting SQL as "
        "the worker) into the scratch schema ledger_rebuild, and compare it with the live "
        "ledger (journals, entries, balances) and with the worker's Faust balances table "
        "(read from its changelog topic). Exit 0 only when identical; 1 on any "
        "difference; 2 if it could not complete.",
        epilog="The scratch schema is dropped and made again by each run and left in "
        "place afterwards for inspection (README.md, 'Checking the books', shows how to "
        "re-post missing journals from it). Run it while the pipeline is quiet: a "
        "payment that succeeds during the run shows as a difference.")
    rebuild.add_argument("--verify", action="store_true", required=True,
                         help="compare with the live projection (the only mode for now)")
    rebuild.add_argument("--merchant", metavar="ID", help="only this merchant's ledger "
                         "(the Faust table: only its own accounts)")
    rebuild.add_argument("--app-id", metavar="ID", default=None,
                         help="the worker group whose Faust balances table is compared "
                         "(default: FAUST_APP_ID, else paystream)")
    rebuild.add_argument("--json", action="store_true", help="one JSON object on stdout")
    rebuild.set_defaults(func=run_rebuild)


def _progress(quiet: bool) -> Any:
    last = [0.0]

    def say(line: str) -> None:
        if not quiet and time.monotonic() - last[0] >= 2.0:
            last[0] = time.monotonic()
            print(f"  ... {line}", file=sys.stderr, flush=True)

    return say


def run_reconcile(args: argparse.Namespace) -> int:
    import psycopg

    from streams.adapters.stripe_gateway import StripeGateway
    from streams.ops import reconcile
    from streams.resilience import RequestBudget

    settings = Settings.from_env()
    scope = reconcile.Scope(since=time.time() - args.since if args.since else None,
                            merchant=args.merchant, settle_seconds=args.settle)

    async def go() -> reconcile.Report:
        rate = args.rate or max(1.0, settings.stripe_requests_per_second / 2)
        stripe = StripeGateway(settings, budget=RequestBudget(rate))
        try:
            async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                             autocommit=True) as conn:
                return await reconcile.run(conn, stripe, scope, fix=args.fix,
                                           progress=_progress(args.json))
        finally:
            await stripe.close()

    try:
        report = asyncio.run(go())
    except Exception as err:  # noqa: BLE001 - any failure to read means "not completed"
        print(f"reconcile could not complete: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    left = [d for d in report.drifts if d not in report.fixed]
    if args.json:
        print(json.dumps({
            "drifts": [{"kind": d.kind.value, "ids": list(d.ids), "detail": d.detail,
                        "fixable": d.fix is not None, "fixed": d in report.fixed}
                       for d in report.drifts],
            "counts": dict(Counter(d.kind.value for d in left)),
            "payments": report.payments, "refunds": report.refunds,
            "stripe_objects": report.stripe_objects,
            "seconds": round(report.seconds, 2), "objects_per_second": round(report.rate, 1)}))
    else:
        for d in report.drifts:
            state = "FIXED" if d in report.fixed else ("fixable" if d.fix else "needs a person")
            print(f"{d.kind.value:<32} {' '.join(d.ids):<50} {state:<15} {d.detail}")
        print(f"{report.payments} payments, {report.refunds} refunds, {report.stripe_objects} "
              f"Stripe objects in {report.seconds:.1f}s ({report.rate:.0f} objects/s): "
              f"{len(report.drifts)} drift(s), {len(report.fixed)} fixed, {len(left)} left")
    return 1 if left else 0


def run_rebuild(args: argparse.Namespace) -> int:
    from streams.ops import ledger_rebuild

    settings = Settings.from_env()
    try:
        diff = asyncio.run(ledger_rebuild.verify(settings, merchant=args.merchant,
                                                 app_id=args.app_id,
                                                 progress=_progress(args.json)))
    except Exception as err:  # noqa: BLE001
        print(f"ledger rebuild could not complete: {type(err).__name__}: {err}",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(diff.as_json()))
    else:
        for line in diff.lines():
            print(line)
        print(diff.summary())
    return 0 if diff.identical else 1
