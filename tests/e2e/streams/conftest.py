"""The stream tests' pipeline: its own workers on its own change feed, the stack's worker
stopped meanwhile."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from paystream.settings import Settings
from testkit import cdc_feed
from testkit.stack import StackPaused
from testkit.topics import delete_topics
from tests.e2e.streams.streams_harness import (
    MERCHANT_ID_PREFIX,
    SESSION,
    Pipeline,
    StripeProxy,
    worker_env,
)


# Package scope: the stack's worker is stopped only while the stream tests run, and
# the e2e tests after them (the trace, the console's payment page) find it running.
@pytest.fixture(scope="package", name="pipeline")
async def pipeline_fixture(settings: Settings) -> AsyncIterator[Pipeline]:
    """One worker (more with `pipeline.new_worker`) of the session's own group, reading a
    change feed of the session's merchants, calling Stripe through a switchable proxy."""
    app_id = f"paystream-e2e-{SESSION}"
    workdir = Path(tempfile.mkdtemp(prefix=f"streams-e2e-{SESSION}-"))
    # The session's merchants from now on, on topics of its own: a new group reads
    # them from the beginning. Also removes what killed sessions left behind.
    feed = cdc_feed.Feed("e2e", MERCHANT_ID_PREFIX, settings)
    proxy = StripeProxy(settings.stripe_api_base)
    await proxy.start()
    pipe = Pipeline(dataclasses.replace(feed.settings, faust_app_id=app_id), app_id,
                    worker_env(feed, app_id, proxy.url), workdir, proxy)
    # The stack's worker would race ours for the session's payments; its connector
    # goes on streaming (the stack's other traffic is none of ours).
    with StackPaused(pause_connector=False):
        try:
            await feed.start()
            worker = pipe.new_worker("w1")
            worker.start()
            await worker.wait_ready()
            yield pipe
        finally:
            for w in pipe.workers:
                w.stop()
            await proxy.stop()
            # The session's internal and changelog topics (the empty group expires).
            await delete_topics(settings.kafka_bootstrap, f"{app_id}-")
            await feed.close()
            if os.environ.get("STREAMS_E2E_KEEP") is None:
                shutil.rmtree(workdir, ignore_errors=True)
