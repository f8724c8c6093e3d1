"""The one place a worker is made: settings in, app with every agent, timer and view out.

Nothing in streams/ creates an app, a connection or a topic when it is
imported; `paystream worker` and the tests call build() with the settings they
want, and each part gets what it uses from the WorkerParts it is handed
(worker_parts.py).
"""

from __future__ import annotations

import logging
from typing import Any

from paystream.settings import Settings
from streams.adapters.tables import Tables
from streams.adapters.topics import Topics
from streams.agents.changes import Changes
from streams.agents.fraud import Fraud
from streams.agents.ledger import Ledger
from streams.agents.notify import Notify
from streams.agents.pending import Pending
from streams.agents.poller import Poller
from streams.agents.refunds import Refunds
from streams.agents.submit import Submit
from streams.agents.timers import Timers
from streams.dead_letters.sender import DeadLetters
from streams.faust_app import create_app, keep_log_level
from streams.runtime import Runtime
from streams.stripe_ports import PostgresSubmissions
from streams.stripe_sequence import StripeSequence
from streams.views import Views
from streams.watchdog import ConsumerWatch
from streams.worker_parts import WorkerParts


def build(settings: Settings, *, log_level: int = logging.INFO) -> WorkerParts:
    """A worker for these settings, every agent, timer and view installed on its app."""
    worker = bare_worker(settings, log_level=log_level)
    submit = Submit(worker)
    fraud, ledger, notify = Fraud(worker, submit), Ledger(worker), Notify(worker)
    Refunds(worker)
    Changes(worker, fraud, ledger, notify, Pending(worker))
    Timers(worker, Poller(worker, fraud, submit), notify)
    Views(worker)
    return worker


def bare_worker(settings: Settings, *, log_level: int = logging.INFO) -> WorkerParts:
    """The worker's app, connections, topics and tables with no agent installed yet
    (build() installs them all; a test installs the one it exercises)."""
    app = create_app(settings)
    keep_log_level(app, log_level)
    topics = Topics(app, settings)
    runtime = Runtime(settings)
    sequence = StripeSequence(settings, lambda: runtime.stripe, PostgresSubmissions(runtime))
    # Closed in this order at shutdown, before the connections: Stripe calls in
    # flight get a timeout's grace (their leases expire and the poller looks
    # again), then what the agents registered (merchant deliveries: the sweeper
    # redelivers what was cut short).
    runtime.on_close(sequence.stop)

    # mode calls a receiver as (sender, *args, signal=..., **kwargs), and types it with
    # sender positional-only.
    @app.on_before_shutdown.connect
    async def _close_runtime(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        await runtime.close()

    return WorkerParts(settings, app, runtime, topics, Tables(app, settings),
                  DeadLetters(topics.dead_letters), sequence,
                  ConsumerWatch(app, settings.watchdog_stall_seconds))
