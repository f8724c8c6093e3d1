"""What every agent, timer and view of one worker is built with."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from paystream.settings import Settings
from streams.adapters.tables import Tables
from streams.adapters.topics import Topics
from streams.dead_letters.sender import DeadLetters
from streams.handling import Stage
from streams.runtime import Runtime
from streams.stripe_sequence import StripeSequence
from streams.watchdog import ConsumerWatch


@dataclass(frozen=True)
class WorkerParts:
    """One worker's settings, Faust app, connections (``runtime``), topics, tables, dead
    letters, Stripe sequence and consumer watch, made by bootstrap.build() and handed to
    each agent, timer and view it installs."""

    settings: Settings
    app: faust.App
    runtime: Runtime
    topics: Topics
    tables: Tables
    dead_letters: DeadLetters
    sequence: StripeSequence
    watch: ConsumerWatch

    def stage(self, name: str) -> Stage:
        """A named step of this worker (metrics, dead letters, database retries)."""
        return Stage(name, self.runtime, self.dead_letters)
