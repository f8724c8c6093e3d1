"""PostgreSQL as components: the primary and its streaming replicas, each a cluster run by
pg_ctl in the stack folder, and psql as the superuser for what the stack asks them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from stack import procs
from stack.component import Component
from stack.config import ROOT, Config
from stack.errors import StackError
from stack.probes import wait_until


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *argv] if running_as_root() else argv


def chown_postgres(path: Path) -> None:
    if running_as_root():
        shutil.chown(path, "postgres", "postgres")


def psql_admin(cfg: Config, sql: str, *, db: str = "paystream", port: int | None = None,
               timeout: float | None = None) -> str:
    """Runs `sql` as the superuser on the primary (or the server on `port`); returns its output."""
    out = subprocess.run([str(cfg.pg_bin / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                          "-h", "127.0.0.1", "-p", str(port or cfg.pg_port), "-U", "postgres",
                          "-d", db, "-c", sql], check=True, capture_output=True, text=True,
                         timeout=timeout,
                         env={**os.environ, "PGPASSWORD": cfg.pg_super_password,
                              "PGCONNECT_TIMEOUT": "3"})
    return out.stdout



def clone_again(slot_wal_status: str | None, receiver: str | None) -> str | None:
    """Why a replica must be cloned from the primary again, or None.

    `slot_wal_status`: its physical slot's wal_status on the primary (None: no
    slot, or the primary did not answer); `receiver`: its pg_stat_wal_receiver
    status (None: not running or not answering). A replica more than
    max_slot_wal_keep_size behind (db/postgresql.conf) gets its slot invalidated
    at the primary's next checkpoint ("lost") and the WAL it needs removed: no
    restart makes it stream again, only a new base backup does. One that streams
    is left alone, whatever the slot says.
    """
    if receiver == "streaming" or slot_wal_status != "lost":
        return None
    return ("its slot on the primary lost the WAL it needs "
            "(more than max_slot_wal_keep_size behind)")


class Postgres(Component):
    """A PostgreSQL cluster run by pg_ctl; replicas are made from the primary once, and
    again when the primary dropped the WAL they need (clone_again)."""

    def __init__(self, name: str, port: int, cfg: Config, *, primary: Postgres | None = None):
        super().__init__(name, port, cfg)
        self.primary = primary

    @property
    def data(self) -> Path:
        return self.cfg.dir / "pg" / self.name

    @property
    def pidfile(self) -> Path:
        return self.data / "postmaster.pid"

    def ready(self) -> bool:
        probe = subprocess.run([str(self.cfg.pg_bin / "pg_isready"), "-q", "-h", "127.0.0.1",
                                "-p", str(self.port)], check=False)
        return probe.returncode == 0

    def owns(self, pid: int) -> bool:
        # The postmaster keeps the command line pg_ctl gave it, -D <data> included.
        args = procs.argv(pid)
        return any(flag == "-D" and Path(value).resolve() == self.data.resolve()
                   for flag, value in zip(args, args[1:], strict=False))

    def clear_stale(self) -> None:
        """After a kill -9 of the postmaster: end its orphaned server processes, drop its lock.

        Orphans still attached to the old shared memory make a new postmaster refuse
        to start ("pre-existing shared memory block ... is still in use", whose hint
        is to terminate any old server processes of the data directory). Every server
        process works in the data directory, so they are found by executable and
        working directory; SIGQUIT is the signal a server process exits on at once.
        The lock file goes only when nothing runs there any more: a pid in it that was
        reused by another program would make postgres refuse to start too.
        """
        executable = self.cfg.pg_bin / "postgres"
        running = procs.running_in(self.data, executable)
        postmaster = next((pid for pid in running if self.owns(pid)), None)
        if postmaster is not None:
            raise StackError(self.name, f"a postmaster (pid {postmaster}) runs in {self.data} "
                             f"but {self.pidfile.name} does not name it; stop it first")
        if running:
            print(f"  {self.name}: ending {len(running)} orphaned server process(es) of a killed "
                  f"postmaster: {', '.join(map(str, running))}", flush=True)
            procs.end(running, first=signal.SIGQUIT)
        if self.pidfile.exists() and not procs.running_in(self.data, executable):
            print(f"  {self.name}: removed stale {self.pidfile.name} "
                  f"(postmaster {self.recorded_pid()} is gone)", flush=True)
            self.pidfile.unlink()
        # The socket's lock file names the dead postmaster too; a killed postmaster
        # not yet reaped (a zombie) still "exists", so postgres would refuse to take it.
        lock = self.cfg.dir / "pg" / "sockets" / f".s.PGSQL.{self.port}.lock"
        if lock.exists() and not self.pidfile.exists():
            lock.unlink(missing_ok=True)
            print(f"  {self.name}: removed stale {lock.name}", flush=True)

    def health(self) -> str | None:
        reason = super().health()
        if reason is not None and self.primary is not None:
            # Stopped, or never coming up: a lost slot says what `up` will do about it.
            why = clone_again(self.slot_status(), None)
            return reason if why is None else f"{reason}; {why}: make up clones it again"
        if reason is not None or self.primary is None:
            return reason
        # A replica that answers may still have lost its primary: ask its WAL receiver.
        try:
            receiver = psql_admin(self.cfg, "SELECT status FROM pg_stat_wal_receiver",
                                  db="postgres", port=self.port, timeout=5).strip()
        except (subprocess.SubprocessError, OSError):
            return "not answering queries"
        if receiver != "streaming":
            why = clone_again(self.slot_status(), receiver)
            if why is not None:
                return f"{why}: make up clones it again"
            return f"not streaming from the primary (WAL receiver {receiver or 'not running'})"
        return None

    @property
    def slot(self) -> str:
        """The replica's physical replication slot on the primary."""
        return self.name.replace("-", "_")

    def slot_status(self) -> str | None:
        """The wal_status of this replica's slot on the primary; None without one or an answer."""
        try:
            return psql_admin(self.cfg, "SELECT wal_status FROM pg_replication_slots "
                              f"WHERE slot_name = '{self.slot}'", db="postgres",
                              timeout=5).strip() or None
        except (subprocess.SubprocessError, OSError):
            return None

    def receiver_status(self) -> str | None:
        if self.pid() is None:
            return None
        try:
            return psql_admin(self.cfg, "SELECT status FROM pg_stat_wal_receiver", db="postgres",
                              port=self.port, timeout=5).strip() or None
        except (subprocess.SubprocessError, OSError):
            return None

    def start(self, timeout: float) -> str:
        why = None
        if self.primary is not None and (self.data / "PG_VERSION").exists():
            why = clone_again(self.slot_status(), self.receiver_status())
        if why is None:
            return super().start(timeout)
        # What the replica holds is a copy of the primary's, useless without the
        # WAL that is gone: stop it, remove it, and base-backup it again (prepare).
        print(f"  {self.name}: {why}; cloning it again from the primary", flush=True)
        self.stop()
        shutil.rmtree(self.data)
        super().start(timeout)
        return "cloned again (its slot had lost WAL)"

    def _pg_dir(self) -> Path:
        base = self.cfg.dir / "pg"
        base.mkdir(parents=True, exist_ok=True)
        chown_postgres(base)
        return base

    def prepare(self) -> None:
        base = self._pg_dir()
        sockets = base / "sockets"
        sockets.mkdir(exist_ok=True)
        chown_postgres(sockets)
        if not (self.data / "PG_VERSION").exists():
            if self.primary is None:
                self._initdb(base)
            else:
                self._base_backup()
        # Our settings are copied in at every start so edits to db/ apply.
        for name in ("postgresql.conf", "pg_hba.conf"):
            target = self.data / ("paystream.conf" if name == "postgresql.conf" else name)
            shutil.copyfile(ROOT / "db" / name, target)
            chown_postgres(target)

    def _initdb(self, base: Path) -> None:
        pwfile = base / ".superpass"
        pwfile.write_text(self.cfg.pg_super_password + "\n")
        chown_postgres(pwfile)
        subprocess.run(as_postgres([str(self.cfg.pg_bin / "initdb"), "-D", str(self.data),
                                    "-U", "postgres", f"--pwfile={pwfile}", "-E", "UTF8",
                                    "--no-locale", "--auth-host=scram-sha-256"]),
                       check=True, stdout=subprocess.DEVNULL)
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\ninclude 'paystream.conf'\n")

    def _base_backup(self) -> None:
        assert self.primary is not None
        slot = self.slot
        conninfo = (f"host=127.0.0.1 port={self.primary.port} user=replicator "
                    f"password={self.cfg.replication_password} application_name={slot}")
        # A slot left from an earlier, removed replica would make -C fail.
        psql_admin(self.cfg, f"SELECT pg_drop_replication_slot('{slot}') FROM "
                   f"pg_replication_slots WHERE slot_name = '{slot}'", db="postgres")
        subprocess.run(as_postgres([str(self.cfg.pg_bin / "pg_basebackup"), "-d", conninfo,
                                    "-D", str(self.data), "-X", "stream", "-c", "fast",
                                    "-C", "-S", slot, "-R"]), check=True)
        # -R wrote standby.signal and a primary_conninfo; name the replica in it so
        # pg_stat_replication on the primary tells the two apart.
        with open(self.data / "postgresql.auto.conf", "a") as auto:
            auto.write(f"primary_conninfo = '{conninfo}'\nprimary_slot_name = '{slot}'\n")

    def launch(self) -> None:
        self.rotate_log()
        self.log.touch()
        chown_postgres(self.log)
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.cfg.dir / 'pg' / 'sockets'}")
        subprocess.run(as_postgres([str(self.cfg.pg_bin / "pg_ctl"), "-D", str(self.data),
                                    "-l", str(self.log), "-o", options, "-W", "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        wait_until(lambda: self.pid() is not None, 10)

    def stop(self, timeout: float = 60) -> str:
        if not procs.alive(self.pid()):
            if self.data.exists():
                self.clear_stale()
            return "not running"
        subprocess.run(as_postgres([str(self.cfg.pg_bin / "pg_ctl"), "-D", str(self.data),
                                    "-m", "fast", "-t", str(int(timeout)), "-w", "stop"]),
                       check=True, stdout=subprocess.DEVNULL)
        return "stopped"
