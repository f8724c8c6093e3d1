"""`paystream reconcile` and `paystream ledger rebuild`: checking the books from a shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from typing import Any

from paystream.domain.reconcile import Drift
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

    from streams import reconcile
    from streams.adapters.stripe_gateway import StripeGateway
    from streams.resilience import RequestBudget

    settings = Settings.from_env()
    scope = reconcile.Scope(since=time.time() - args.since if args.since else None,
                            merchant=args.merchant, settle_seconds=args.settle)
    # Drifts are printed as they are found, never gathered: memory stays at a page
    # whatever the window. --json writes one object on one line, a drift at a time.
    out = sys.stdout
    first = [True]
    if args.json:
        out.write('{"drifts": [')

    def show(drift: Drift, at: float | None, fixed: bool) -> None:
        if args.json:
            out.write(("" if first[0] else ", ") + json.dumps({
                "kind": drift.kind.value, "ids": list(drift.ids), "detail": drift.detail,
                "fixable": drift.fix is not None, "fixed": fixed}))
            first[0] = False
            return
        state = "FIXED" if fixed else ("fixable" if drift.fix else "needs a person")
        print(f"{drift.kind.value:<32} {' '.join(drift.ids):<50} {state:<15} {drift.detail}",
              file=out)

    async def go() -> reconcile.Report:
        rate = args.rate or max(1.0, settings.stripe_requests_per_second / 2)
        stripe = StripeGateway(settings, budget=RequestBudget(rate))
        try:
            async with await psycopg.AsyncConnection.connect(
                    settings.database_url, autocommit=True) as conn, \
                    await psycopg.AsyncConnection.connect(
                        settings.database_url, autocommit=True) as fixer:
                return await reconcile.run(conn, reconcile.StripeLister(stripe), scope,
                                           fixer=fixer if args.fix else None,
                                           on_drift=show, progress=_progress(args.json))
        finally:
            await stripe.close()

    try:
        report = asyncio.run(go())
    except Exception as err:  # any failure to read means "not completed"
        if args.json:
            out.write("]}\n")  # what was found so far, still one JSON object
        print(f"reconcile could not complete: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    if args.json:
        out.write("], " + json.dumps({
            "counts": {k.value: n for k, n in report.left_counts.items()},
            "fixed": report.fixed, "left": report.left,
            "payments": report.payments, "refunds": report.refunds,
            "stripe_objects": report.stripe_objects,
            "stripe_requests": report.stripe_requests,
            "seconds": round(report.seconds, 2),
            "objects_per_second": round(report.rate, 1)})[1:] + "\n")
    else:
        print(f"{report.payments} payments, {report.refunds} refunds, {report.stripe_objects} "
              f"Stripe objects ({report.stripe_requests} requests) in {report.seconds:.1f}s "
              f"({report.rate:.0f} objects/s): {report.drifts} drift(s), {report.fixed} fixed, "
              f"{report.left} left")
    return 1 if report.left else 0


def run_rebuild(args: argparse.Namespace) -> int:
    from streams.ops import ledger_rebuild

    settings = Settings.from_env()
    try:
        diff = asyncio.run(ledger_rebuild.verify(settings, merchant=args.merchant,
                                                 app_id=args.app_id,
                                                 progress=_progress(args.json)))
    except Exception as err:
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
