"""Debezium change events of ``payments`` and ``refunds``: their Kafka keys, decoded and checked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from streams.errors import DecodeError
from streams.rows import json_object, loads_json

Op = Literal["c", "u", "d", "r"]
_OPS = frozenset({"c", "u", "d", "r"})


def id_key(object_id: str) -> bytes:
    """The Kafka key Debezium's JsonConverter writes for a row: ``{"id":"..."}``, no spaces.

    Internal topics keyed by a payment id use the very same bytes, so the
    producer's murmur2 partitioner puts them on the partition of the CDC topic
    that holds the payment (co-partitioning for the pending table).
    """
    return json.dumps({"id": object_id}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Change:
    """One Debezium change event for a row of ``payments`` or ``refunds``."""

    op: Op
    key_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    table: str
    lsn: int | None
    tx_id: int | None
    source_ts_ms: int | None
    snapshot: bool

    @property
    def row(self) -> dict[str, Any]:
        """The row as it is now (the before-image for a delete)."""
        row = self.after if self.after is not None else self.before
        assert row is not None  # decode_change guarantees one of them
        return row

    @property
    def old_status(self) -> str | None:
        return None if self.before is None else self.before.get("status")

    @property
    def new_status(self) -> str | None:
        return None if self.after is None else self.after.get("status")

    def entered(self, status: str) -> bool:
        """Whether this change moved the row into status (a create in it counts)."""
        if self.op == "d" or self.new_status != status:
            return False
        # Snapshot reads ("r") and inserts have no before-image: the row arrives in status.
        return self.before is None or self.old_status != status


def decode_change(key: bytes | None, value: bytes | None) -> Change | None:
    """The change in a CDC message, None for a tombstone; DecodeError if malformed."""
    if value is None:
        return None
    if key is None:
        raise DecodeError("change event without a key", field="key")
    key_obj = json_object(loads_json(key, "key"), "key")
    key_id = key_obj.get("id")
    if not isinstance(key_id, str) or not key_id:
        raise DecodeError(f"key has no string id: {key_obj!r}", field="key")
    envelope = json_object(loads_json(value, "value"), "value")
    # A converter with schemas.enable=true wraps the envelope in {"schema", "payload"}.
    if "payload" in envelope and "schema" in envelope:
        envelope = json_object(envelope["payload"], "payload")
    op = envelope.get("op")
    if op not in _OPS:
        raise DecodeError(f"op must be one of c, u, d, r, got {op!r}", field="op")
    before = envelope.get("before")
    after = envelope.get("after")
    if before is not None:
        before = json_object(before, "before")
    if after is not None:
        after = json_object(after, "after")
    if op == "d" and before is None:
        raise DecodeError("delete without a before-image", field="before")
    if op != "d" and after is None:
        raise DecodeError(f"op {op} without an after-image", field="after")
    source = envelope.get("source") or {}
    if not isinstance(source, dict):
        raise DecodeError("source must be an object", field="source")
    row_id = (after or before or {}).get("id")
    if row_id != key_id:
        raise DecodeError(f"key id {key_id!r} does not match row id {row_id!r}", field="id")
    return Change(
        op=op,
        key_id=key_id,
        before=before,
        after=after,
        table=str(source.get("table", "")),
        lsn=source.get("lsn") if type(source.get("lsn")) is int else None,
        tx_id=source.get("txId") if type(source.get("txId")) is int else None,
        source_ts_ms=source.get("ts_ms") if type(source.get("ts_ms")) is int else None,
        # Debezium writes "true", "last", "first", "incremental" or "false".
        snapshot=str(source.get("snapshot", "false")) not in ("false", "None"),
    )
