"""`paystream trace <payment id>`: what happened to one payment, and what it waits for."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from paystream.settings import Settings, SettingsError


def register(sub: Any) -> None:
    """Add the trace subcommand to the `paystream` parser."""
    trace = sub.add_parser(
        "trace", help="one payment's story in time order, across every source",
        description="One payment's story in time order, with the time between steps: its "
        "rows (fraud decision, Stripe submissions, refunds, ledger journals, merchant "
        "events), its change events and the agents' messages about it on Kafka (topic, "
        "partition, offset), its PaymentIntent at Stripe and its pending-table entry at "
        "the worker; then where it is and what it waits for. Exit 0: traced (a source "
        "that did not answer is shown as 'unavailable: why'); 1: no such payment; "
        "2: could not read Postgres.",
        epilog="Kafka is not scanned: each record's partition follows from its key, the "
        "first offset from the payment's creation time, and reading stops past the "
        "payment's last known step (or at --max-records per partition).")
    trace.add_argument("payment_id", metavar="PAYMENT_ID", help="a payment id (pay_...)")
    trace.add_argument("--json", action="store_true", help="one JSON object on stdout")
    trace.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long each source may stay silent (default 10)")
    trace.add_argument("--max-records", type=int, default=None, metavar="N",
                       help="records read at most per Kafka partition (default 20000)")
    trace.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streams.ops.trace import gather, render
    from streams.ops.trace.kafka import MAX_RECORDS_PER_PARTITION

    try:
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"paystream: {err}", file=sys.stderr)
        return 2
    try:
        gathered = asyncio.run(gather.gather(
            settings, args.payment_id, timeout=args.timeout,
            max_records=args.max_records or MAX_RECORDS_PER_PARTITION))
    except Exception as err:  # Postgres is the one source a trace needs
        print(f"paystream trace: could not read the payment from Postgres: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        return 2
    if gathered is None:
        print(f"paystream trace: no such payment: {args.payment_id!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(render.as_json(gathered)))
    else:
        print("\n".join(render.lines(gathered)))
    return 0
