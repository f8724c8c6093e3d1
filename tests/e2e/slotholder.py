"""A replication session that takes a logical slot and sits on it, like a stale Debezium task's.

It answers the server's keepalives (so wal_sender_timeout does not end it) but
never confirms a position, so nothing it is sent is lost for the real reader.
Built on psycopg's libpq wrapper: psycopg itself does not speak the streaming
replication (COPY BOTH) protocol.
"""

from __future__ import annotations

import select
import struct
import threading
import time

from psycopg import pq

# Standby status updates count microseconds from 2000-01-01.
PG_EPOCH = 946684800


class SlotHolder:
    """Holds `slot` open from a background thread until `close()`."""

    def __init__(self, conninfo: str, slot: str, publication: str) -> None:
        self.conninfo = f"{conninfo} replication=database application_name='Debezium Streaming'"
        self.slot = slot
        self.publication = publication
        self.pid = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: pq.abc.PGconn | None = None

    def open(self) -> SlotHolder:
        conn = pq.PGconn.connect(self.conninfo.encode())
        if conn.status != pq.ConnStatus.OK:
            raise RuntimeError(conn.get_error_message())
        result = conn.exec_(
            f"START_REPLICATION SLOT {self.slot} LOGICAL 0/0 "
            f"(proto_version '1', publication_names '{self.publication}')".encode())
        if result.status != pq.ExecStatus.COPY_BOTH:
            message = conn.get_error_message()
            conn.finish()
            raise RuntimeError(f"START_REPLICATION failed: {message}")
        self._conn, self.pid = conn, conn.backend_pid
        self._thread = threading.Thread(target=self._serve, name="slot-holder", daemon=True)
        self._thread.start()
        return self

    def _reply(self, conn: pq.abc.PGconn) -> None:
        now = int((time.time() - PG_EPOCH) * 1_000_000)
        # write, flush and apply all 0 (invalid): the server confirms nothing for us.
        conn.put_copy_data(b"r" + struct.pack(">QQQqB", 0, 0, 0, now, 0))
        conn.flush()

    def _serve(self) -> None:
        conn = self._conn
        assert conn is not None
        last_reply = 0.0
        while not self._stop.is_set():
            select.select([conn.socket], [], [], 1.0)
            try:
                conn.consume_input()
                while True:
                    size, data = conn.get_copy_data(1)
                    if size <= 0:
                        break
                    if bytes(data[:1]) == b"k" and data[-1]:  # keepalive asking for a reply
                        last_reply = 0.0
                if time.monotonic() - last_reply > 5:
                    self._reply(conn)
                    last_reply = time.monotonic()
            except Exception:  # the server ended the session (the repair did): nothing to hold
                return
            if size == -1:  # COPY ended: the session is over
                return

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.finish()
            self._conn = None
