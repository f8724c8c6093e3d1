"""The stack's Debezium connectors (connectors/*.json) and, for each, a way to look at its
CDC and a repairer (stack/cdc.py), asking the primary as the superuser."""

from __future__ import annotations

import functools
import json
import subprocess
import urllib.request
from collections.abc import Callable

from connectors import register
from stack import cdc
from stack.config import ROOT, Config
from stack.postgres import psql_admin


def primary_sql(cfg: Config) -> Callable[[str], str]:
    """psql_admin for stack/cdc.py, which wants a RuntimeError when the primary does not answer."""
    def run(sql: str) -> str:
        try:
            return psql_admin(cfg, sql, timeout=10)
        except subprocess.CalledProcessError as err:
            raise RuntimeError(err.stderr.strip() or f"psql exited {err.returncode}") from err
        except subprocess.TimeoutExpired as err:
            raise RuntimeError("psql timed out") from err
    return run


def cdc_connectors() -> list[cdc.Connector]:
    """The Debezium connectors of connectors/*.json and the slot and user each streams with."""
    found = []
    for path in sorted((ROOT / "connectors").glob("*.json")):
        config = json.loads(path.read_text())
        if "database.user" in config:
            found.append(cdc.Connector(register.connector_name(path),
                                       config.get("slot.name", "debezium"),
                                       config["database.user"]))
    return found


def live_connect_url(cfg: Config) -> str:
    """The REST API of the first Connect worker that answers (the first one when none does):
    in the ha topology any worker speaks for the group."""
    urls = [f"http://127.0.0.1:{rest}" for rest, _ in cfg.connect_workers()]
    for url in urls:
        try:
            with urllib.request.urlopen(f"{url}/connectors", timeout=2):
                return url
        except OSError:
            continue
    return urls[0]


def cdc_watch(cfg: Config, *, connect_url: str | None = None,
              ) -> list[tuple[Callable[[], cdc.State], cdc.Repairer]]:
    """For each connector, a way to look at its CDC and a repairer, through `connect_url`
    (by default the first Connect worker that answers)."""
    url, sql = connect_url or live_connect_url(cfg), primary_sql(cfg)
    return [(functools.partial(cdc.read, conn, connect_url=url, sql=sql),
             cdc.Repairer(conn, connect_url=url, sql=sql)) for conn in cdc_connectors()]
