"""What Postgres spends per payment, statement by statement (pg_stat_statements).

A bench that runs in a database of its own (bench/own_database.py) can ask the
primary for that database's statements alone: calls and execution time per
payment show which statement, trigger or index write costs the primary most,
and a statement whose calls per payment grow is a round trip that stopped being
batched. Needs `shared_preload_libraries = 'pg_stat_statements'` (db/postgresql.conf);
a primary started before that line reports why there is no figure instead.
"""

from __future__ import annotations

from typing import Any

import psycopg


class StatementCosts:
    """pg_stat_statements of one database between start() and per_payment()."""

    def __init__(self, admin_url: str, dbname: str, *, top: int = 10) -> None:
        self._admin_url = admin_url
        self._dbname = dbname
        self._top = top
        self.unavailable: str | None = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self._admin_url, autocommit=True)

    async def start(self) -> None:
        async with await self._connect() as conn:
            cur = await conn.execute("SELECT current_setting('shared_preload_libraries')")
            loaded = (await cur.fetchone() or ("",))[0]
            if "pg_stat_statements" not in loaded:
                self.unavailable = ("pg_stat_statements is not loaded: restart the primary "
                                    "(python3 -m stack stop postgres-primary && make up)")
                return
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            # Only this database's counters start again; the stack's are left alone.
            await conn.execute(
                "SELECT pg_stat_statements_reset(0, "
                "(SELECT oid FROM pg_database WHERE datname = %s), 0)", (self._dbname,))

    async def per_payment(self, payments: int) -> list[dict[str, Any]] | str:
        """The statements that took the most execution time, each with its calls and
        milliseconds per payment; or why there are none."""
        if self.unavailable:
            return self.unavailable
        n = max(1, payments)
        async with await self._connect() as conn:
            cur = await conn.execute(
                "SELECT calls, total_exec_time, rows, query FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) "
                "ORDER BY total_exec_time DESC LIMIT %s", (self._dbname, self._top))
            rows = await cur.fetchall()
        return [{"exec_ms": round(float(total) / n, 3), "calls": round(int(calls) / n, 3),
                 "rows": round(int(returned) / n, 2), "query": " ".join(str(query).split())[:110]}
                for calls, total, returned, query in rows]
