"""The Faust app for a worker's settings: broker, RocksDB store, web server, commit policy."""

from __future__ import annotations

import logging

import faust

from paystream.settings import Settings
from streams import current_acks
from streams.adapters.tables import CheckedTable


def create_app(conf: Settings) -> faust.App:
    """The worker's Faust app for these settings; streams/bootstrap.py attaches the agents."""
    app = faust.App(
        conf.faust_app_id,
        broker=conf.broker_url,
        store=conf.faust_store,
        datadir=conf.faust_data_dir,
        # Nothing registers itself on import: bootstrap.build() installs every agent.
        autodiscover=False,
        # app.Table makes these (see CheckedTable).
        Table=CheckedTable,
        topic_partitions=conf.topic_partitions,
        table_standby_replicas=conf.table_standby_replicas,
        # Internal topics and table changelogs, as many copies as the cluster
        # keeps (TOPIC_REPLICATION_FACTOR: 3 in the ha topology).
        topic_replication_factor=conf.topic_replication_factor,
        # Every send waits for all in-sync replicas (Faust's default, said
        # here because it is what makes min.insync.replicas=2 mean something:
        # an acknowledged changelog write or stage hop survives its leader).
        producer_acks=-1,
        # A partition with no committed offset is read from its beginning: an
        # internal topic must never skip what was sent before a crash.
        consumer_auto_offset_reset="earliest",
        # A crashed worker's partitions move after 15 s instead of Faust's 60 s.
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        # The broker waits this long for every member to rejoin in a rebalance
        # (Faust: 60 s). Ours revoke in about a second (no wait for the stream
        # buffers, a commit); one that does not is dropped from that generation.
        broker_rebalance_timeout=30.0,
        # One request of the consumer (fetch, OffsetCommit, JoinGroup, ...; Faust:
        # 90 s). Above the rebalance timeout, since the broker may hold a JoinGroup
        # that long; at least the session timeout (Faust refuses less); below the
        # commit deadline (WORKER_COMMIT_DEADLINE_SECONDS, 60 s), so that one lost
        # OffsetCommit ends in an error and a retry before the deadline calls the
        # commit hung. It bounds a request, not a commit: aiokafka retries for
        # ever while the coordinator is unknown, which streams/deadline.py ends.
        broker_request_timeout=40.0,
        # A produce request, and how long a batch may wait to be sent before it
        # expires and its send fails (Faust: 1,200 s). It bounds the producer flush
        # before every commit, so it stays above the commit deadline (2x): when the
        # broker does not answer, the deadline ends the worker before a batch
        # expires, and a commit never follows a send that was given up on (that
        # message would be lost; after the exit it is redelivered instead).
        producer_request_timeout=2 * conf.worker_commit_deadline_seconds,
        # Faust warns when a partition being processed has not committed for this
        # long (Faust: 300 s, only a log line): half the stall watchdog, so the log
        # says so before /health/ does.
        broker_commit_livelock_soft_timeout=conf.watchdog_stall_seconds / 2,
        web_bind=conf.faust_web_host,
        web_host=conf.faust_web_host,
        web_port=conf.faust_web_port,
        # Commit often: on a crash everything after the last commit is redelivered,
        # which is safe but costs a replay.
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        table_cleanup_interval=30.0,
        # Wait up to 5 ms to fill a produce request: a payment sends ~9 messages
        # (stage hops, changelogs), and one request per message costs the broker
        # and aiokafka CPU per request (see streams/README.md). Adds at most 5 ms
        # per hop; the fraud path has three.
        producer_linger=0.005,
        # Stop without draining the stream buffers: what was not acked is
        # redelivered, and a shutdown blocked on a slow agent never ends.
        stream_wait_empty=False,
    )
    # Acks from before a rebalance must not move its commits (current_acks.py).
    current_acks.install(app)
    return app


def keep_log_level(app: faust.App, level: int) -> None:
    """Hold the root logger at level once the worker runs (see the comment inside)."""

    async def _quiet_logging() -> None:
        # At warn and above Faust hangs a terminal spinner on the root logger and sets
        # it to DEBUG, so every debug call in aiokafka builds a record: ~7% of the CPU.
        logging.getLogger().setLevel(level)
        # One INFO line per Stripe request adds nothing the metrics do not say.
        logging.getLogger("stripe").setLevel(max(level, logging.WARNING))

    app.task(_quiet_logging)
