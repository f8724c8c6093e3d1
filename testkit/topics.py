"""Topics a run made for itself (a worker group's, a feed's), deleted once it is done."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient


async def delete_topics(bootstrap: str, *prefixes: str) -> list[str]:
    """Delete every topic whose name starts with one of prefixes; their names."""
    if not prefixes:
        return []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefixes))
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()
