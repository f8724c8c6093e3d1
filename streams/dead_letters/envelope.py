"""The dead letter's JSON body: where a message came from, who failed on it, why, and the message.

Keys and values that are not UTF-8 travel base64-encoded, so a replay sends
back exactly the bytes that failed.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

MAX_ERROR_CHARS = 2000


def pack(raw: bytes | None, name: str) -> dict[str, str | None]:
    if raw is None:
        return {name: None}
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(raw).decode("ascii")}


def unpack(entry: dict[str, Any], name: str) -> bytes | None:
    if entry.get(f"{name}_b64") is not None:
        return base64.b64decode(entry[f"{name}_b64"])
    value = entry.get(name)
    return None if value is None else str(value).encode("utf-8")


def envelope(
    *,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    agent: str,
    error: BaseException | str,
    key: bytes | None,
    value: bytes | None,
) -> dict[str, Any]:
    """The dead letter's JSON body: where the message came from, who failed, why, and it."""
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "agent": agent,
        "error": reason[:MAX_ERROR_CHARS],
        "error_type": "str" if isinstance(error, str) else type(error).__name__,
        "failed_at": datetime.now(UTC).isoformat(),
        **pack(key, "key"),
        **pack(value, "value"),
    }
