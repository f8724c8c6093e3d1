"""Registers a Debezium connector with Kafka Connect and waits until it runs.

Usage: python3 connectors/register.py [--connect-url URL] [--timeout S] FILE.json...

The connector is named after its file (connectors/payments.json ->
"paystream-payments"). Registration is `PUT /connectors/<name>/config`, which
creates or updates in place, so running it twice leaves one connector.
`register_config` does the same for a config built in code (testkit/cdc_feed.py),
and `unregister` removes a connector and what Connect keeps of it.
Standard library only: `make up` runs it before the virtualenv matters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONNECTOR_PREFIX = "paystream-"


class RegistrationError(RuntimeError):
    """Connect did not come up, refused the config, or the connector failed."""


def connector_name(path: Path) -> str:
    return CONNECTOR_PREFIX + path.stem


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        payload = err.read()
        try:
            return err.code, json.loads(payload)
        except ValueError:
            return err.code, payload.decode(errors="replace")
    except TimeoutError:
        # Connect holds a request until its worker has joined the group (up to
        # 90 s); a fresh three-broker cluster can take longer than this one
        # request's 10 s (seen on STACK_TOPOLOGY=ha's first start). Callers retry.
        return 0, "timed out"


def wait_for_connect(connect_url: str, deadline: float) -> None:
    while True:
        try:
            status, _ = _request("GET", f"{connect_url}/connector-plugins")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RegistrationError(f"Kafka Connect did not answer at {connect_url}")
        time.sleep(0.5)


def connector_state(connect_url: str, name: str) -> dict[str, Any]:
    status, body = _request("GET", f"{connect_url}/connectors/{name}/status")
    return body if status == 200 and isinstance(body, dict) else {}


def register(connect_url: str, path: Path, *, timeout: float = 120.0,
             restart_failed: bool = False) -> str:
    """PUT the file's config unless Connect has it already, then poll /status until it runs.

    With `restart_failed`, a connector or task found FAILED is restarted once
    before that counts as an error: Connect never restarts a failed task itself,
    and one that failed in an outage (Kafka or Postgres gone) runs again once the
    outage is over.
    """
    return register_config(connect_url, connector_name(path), json.loads(path.read_text()),
                           timeout=timeout, restart_failed=restart_failed)


def register_config(connect_url: str, name: str, config: dict[str, Any], *, timeout: float = 120.0,
                    restart_failed: bool = False) -> str:
    """`register` for a config dict and a name of the caller's choice."""
    deadline = time.monotonic() + timeout
    restarted_at = None if restart_failed else 0.0
    wait_for_connect(connect_url, deadline)
    status, current = _request("GET", f"{connect_url}/connectors/{name}/config")
    # Connect restarts a connector on every PUT, even an identical one; skipping
    # it keeps a second registration from disturbing a running connector.
    while not (status == 200 and current == {**config, "name": name}):
        # Connect answers 409 while its group rebalances, and may hold a request
        # past our timeout (0) while it joins: retry until the deadline.
        status, body = _request("PUT", f"{connect_url}/connectors/{name}/config", config)
        if status in (200, 201):
            break
        if status not in (0, 409) or time.monotonic() > deadline:
            raise RegistrationError(f"PUT {name} config: HTTP {status}: {body}")
        time.sleep(0.5)
    while True:
        state = connector_state(connect_url, name)
        connector = state.get("connector", {}).get("state")
        tasks = [t.get("state") for t in state.get("tasks", [])]
        if connector == "RUNNING" and tasks and all(t == "RUNNING" for t in tasks):
            return name
        # Paused or stopped through the REST API by someone (a benchmark, an operator):
        # registered, and left as they chose; a PUT of its config keeps that state.
        if connector in ("PAUSED", "STOPPED"):
            return name
        failed = [t for t in state.get("tasks", []) if t.get("state") == "FAILED"]
        if (connector == "FAILED" or failed) and restarted_at is None:
            restarted_at = time.monotonic()
            _request("POST", f"{connect_url}/connectors/{name}/restart"
                             "?includeTasks=true&onlyFailed=true")
        # A restart takes a moment to show in /status: FAILED right after it is old news.
        elif (connector == "FAILED" or failed) and time.monotonic() - (restarted_at or 0) > 15:
            trace = (failed[0] if failed else state["connector"]).get("trace", "")
            raise RegistrationError(f"{name} failed: {trace[:2000]}")
        if time.monotonic() > deadline:
            raise RegistrationError(f"{name} not RUNNING after {timeout:.0f}s: {state}")
        time.sleep(0.5)


def connector_names(connect_url: str) -> list[str]:
    """Every connector Connect has."""
    status, body = _request("GET", f"{connect_url}/connectors")
    if status != 200 or not isinstance(body, list):
        raise RegistrationError(f"GET /connectors: HTTP {status}: {body}")
    return [str(n) for n in body]


def _until(what: str, deadline: float, call: Callable[[], tuple[int, object]],
           done: Callable[[int, object], bool]) -> None:
    """Repeat call until done says so (Connect answers 409 while its group rebalances)."""
    while True:
        status, body = call()
        if done(status, body):
            return
        if time.monotonic() > deadline:
            raise RegistrationError(f"{what}: HTTP {status}: {body}")
        time.sleep(0.5)


def unregister(connect_url: str, name: str, *, timeout: float = 120.0) -> bool:
    """Stop the connector, reset its offsets, delete it; False if Connect did not have it.

    Stopping first ends its tasks (a Debezium task closes its replication
    session, so its slot can be dropped next) and is what Connect requires
    before it deletes a connector's offsets (KIP-875), so nothing of the
    connector stays behind in Connect's offsets topic.
    """
    deadline = time.monotonic() + timeout
    wait_for_connect(connect_url, deadline)
    url = f"{connect_url}/connectors/{name}"
    status, body = _request("GET", url)
    if status == 404:
        return False
    _until(f"stop {name}", deadline, lambda: _request("PUT", f"{url}/stop"),
           lambda status, _: status in (202, 204, 404))
    _until(f"{name} STOPPED", deadline, lambda: _request("GET", f"{url}/status"),
           lambda status, body: status == 404 or (
               isinstance(body, dict) and body.get("connector", {}).get("state") == "STOPPED"
               and not body.get("tasks")))
    _until(f"reset offsets of {name}", deadline,
           lambda: _request("DELETE", f"{url}/offsets"),
           lambda status, _: status in (200, 404))
    _until(f"delete {name}", deadline, lambda: _request("DELETE", url),
           lambda status, _: status in (204, 404))
    _until(f"{name} gone", deadline, lambda: _request("GET", url),
           lambda status, _: status == 404)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="connector config JSON files")
    parser.add_argument("--connect-url",
                        default=os.environ.get("CONNECT_URL", "http://127.0.0.1:8083"))
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for Connect and for RUNNING (default 120)")
    args = parser.parse_args(argv)
    try:
        for path in args.files:
            print(f"connector {register(args.connect_url, path, timeout=args.timeout)} RUNNING")
    except RegistrationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
