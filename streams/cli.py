"""`paystream worker` and `paystream dlq list|replay`: the stream side of the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from paystream.settings import Settings


def register(sub: Any) -> None:
    """Add the worker and dlq subcommands to the `paystream` parser."""
    worker = sub.add_parser(
        "worker",
        help="run the Faust stream worker in the foreground",
        description="Run the Faust worker (agents, tables, timers, web views) in the "
        "foreground. Settings come from the environment: BROKER_URL/KAFKA_BOOTSTRAP, "
        "DATABASE_URL, STRIPE_API_BASE, FAUST_APP_ID, FAUST_WEB_PORT, FAUST_DATA_DIR, "
        "POLL_INTERVAL_SECONDS, WORKER_COMMIT_DEADLINE_SECONDS, WORKER_STOP_DEADLINE_SECONDS, "
        "FRAUD_* ... Past a deadline on a commit or the stop, it exits 70 to be restarted.",
    )
    worker.add_argument("-l", "--loglevel", default="info",
                        choices=("debug", "info", "warn", "warning", "error", "crit"),
                        help="log level (default info)")
    worker.add_argument("--web-port", type=int, default=None,
                        help="port of the web views (default FAUST_WEB_PORT)")
    worker.set_defaults(func=run_worker)

    dlq = sub.add_parser("dlq", help="inspect and replay dead letters",
                         description="Messages the agents could not process, from the "
                         "dead-letter topic (DLQ_TOPIC, default paystream.dlq).")
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")
    dlq.set_defaults(func=lambda args: (dlq.print_help(), 2)[1])

    lister = actions.add_parser("list", help="show dead letters, oldest first",
                                description="Show every dead letter: its reference "
                                "(partition:offset in the DLQ), the agent, where the "
                                "message came from and why it failed.")
    lister.add_argument("--agent", help="only those from this agent")
    lister.add_argument("--limit", type=int, default=None, help="show at most N (the newest)")
    lister.add_argument("--json", action="store_true", help="one JSON object per line")
    lister.set_defaults(func=dlq_list)

    replayer = actions.add_parser(
        "replay", help="re-publish dead letters to their original topic",
        description="Publish the original message of each selected dead letter to the "
        "topic it came from, after the cause is fixed. Every agent is idempotent, so a "
        "replayed change event is safe for the agents that had processed it. A failed "
        "merchant webhook is put back in the outbox for new attempts instead.")
    replayer.add_argument("refs", nargs="*", metavar="PARTITION:OFFSET",
                          help="dead letters to replay, as shown by `dlq list`")
    replayer.add_argument("--all", action="store_true", help="replay every dead letter")
    replayer.add_argument("--agent", help="only those from this agent")
    replayer.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    replayer.set_defaults(func=dlq_replay)


_LOG_LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40, "crit": 50}


def run_worker(args: argparse.Namespace) -> int:
    import mode.loop

    # uvloop, as the API has: much of a message's CPU in Faust is the event loop
    # itself (callbacks, futures, socket I/O), which uvloop does in C. Set before
    # any loop exists (what `faust -L uvloop` does).
    mode.loop.use("uvloop")
    # Imported here: the other commands need no Faust.
    from streams import deadline
    from streams.bootstrap import build

    # Faust spells them warn and crit.
    level = {"warning": "warn", "critical": "crit"}.get(args.loglevel, args.loglevel)
    settings = Settings.from_env()
    worker = build(settings, log_level=_LOG_LEVELS[level])
    # Before the consumer exists: its commits, and the stop, run under deadlines
    # past which the worker exits 70 to be restarted (streams/deadline.py).
    deadline.install(worker.app, commit_seconds=settings.worker_commit_deadline_seconds,
                     stop_seconds=settings.worker_stop_deadline_seconds)
    asyncio.run(worker.topics.ensure())
    port = args.web_port or settings.faust_web_port
    sys.argv = ["paystream worker", "worker", "--loglevel", level,
                "--web-port", str(port), "--web-host", settings.faust_web_host,
                "--web-bind", settings.faust_web_host]
    try:
        worker.app.main()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def dlq_list(args: argparse.Namespace) -> int:
    from streams.dead_letters.replay import read_all, select

    settings = Settings.from_env()
    entries = list(select(asyncio.run(read_all(settings.kafka_bootstrap, settings.dlq_topic)),
                          agent=args.agent))
    if args.limit is not None:
        entries = entries[-args.limit:] if args.limit > 0 else []
    for entry in entries:
        body = entry.body
        if args.json:
            print(json.dumps({"ref": entry.ref, **body}))
            continue
        origin = (f"{body.get('topic')}[{body.get('partition')}]@{body.get('offset')}"
                  if body.get("topic") else f"webhook {body.get('event_id')}")
        print(f"{entry.ref:>8}  {body.get('failed_at', '?')[:19]}  {body.get('agent', '?'):<14}"
              f"  {origin}  {body.get('error', '')}")
    if not args.json:
        print(f"{len(entries)} dead letter(s)", file=sys.stderr)
    return 0


def dlq_replay(args: argparse.Namespace) -> int:
    from streams.dead_letters.replay import read_all, replay, select

    if not args.refs and not args.all:
        print("error: name dead letters (PARTITION:OFFSET ...) or pass --all", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    entries = list(select(asyncio.run(read_all(settings.kafka_bootstrap, settings.dlq_topic)),
                          agent=args.agent, refs=args.refs or None))
    missing = set(args.refs) - {e.ref for e in entries}
    if missing:
        print(f"error: no dead letter {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    webhooks = [e for e in entries if not e.body.get("topic") and e.body.get("event_id")]
    messages = [e for e in entries if e.body.get("topic")]
    for entry in entries:
        what = "outbox" if entry in webhooks else entry.body.get("topic")
        print(f"{'would replay' if args.dry_run else 'replaying'} {entry.ref} -> {what}")
    if args.dry_run:
        return 0
    sent = asyncio.run(replay(settings.kafka_bootstrap, messages)) if messages else 0
    reset = _requeue_webhooks(settings, [e.body["event_id"] for e in webhooks])
    print(f"replayed {sent} message(s), re-queued {reset} webhook(s)")
    return 0


def _requeue_webhooks(settings: Settings, event_ids: list[str]) -> int:
    if not event_ids:
        return 0
    import psycopg

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        cur = conn.execute(
            "UPDATE merchant_notifications SET status = 'pending', attempts = 0, "
            "next_attempt_at = now(), lease_until = NULL, updated_at = now() "
            "WHERE event_id = ANY(%s) AND status = 'failed'", (event_ids,))
        return cur.rowcount
