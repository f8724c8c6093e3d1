"""A table's first write is not refused while the metadata does not know a topic yet
(streams/adapters/tables.CheckedTable), and a real partition mismatch still is."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from faust.exceptions import PartitionsMismatch

from paystream.settings import Settings
from streams.adapters.tables import CheckedTable
from streams.faust_app import create_app
from tests.unit.streams.test_streams_deadline import close_thread_loop

SOURCE = "tables-unit-balance-deltas"


def table_with_metadata(tmp_path: Path, counts: dict[str, int]) -> Any:
    settings = dataclasses.replace(Settings(), faust_store="memory://",
                                   faust_data_dir=str(tmp_path), faust_app_id="tables-unit")
    app = create_app(settings)
    close_thread_loop(app.consumer)
    # The consumer's metadata snapshot: 0 for a topic it has not seen described yet.
    app.consumer.topic_partitions = lambda topic: counts.get(topic, 0)
    table = app.Table("balance-applied", default=None, partitions=4)
    assert isinstance(table, CheckedTable)
    return table


def test_a_changelog_the_metadata_does_not_know_yet_is_checked_later(tmp_path: Path) -> None:
    counts = {SOURCE: 4}
    table = table_with_metadata(tmp_path, counts)
    table._verify_source_topic_partitions(SOURCE)  # Faust's own raised here (4 against 0)
    assert SOURCE not in table._verified_source_topics_for_partitions
    counts[table.changelog_topic_name] = 4
    table._verify_source_topic_partitions(SOURCE)
    assert SOURCE in table._verified_source_topics_for_partitions


def test_a_real_mismatch_still_raises(tmp_path: Path) -> None:
    table = table_with_metadata(tmp_path, {SOURCE: 4})
    table.app.consumer.topic_partitions = {SOURCE: 4, table.changelog_topic_name: 8}.get
    with pytest.raises(PartitionsMismatch):
        table._verify_source_topic_partitions(SOURCE)
