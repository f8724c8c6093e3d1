"""What follows a component's start, each step safe to repeat: migrations on the primary,
connectors in Connect, the API's webhook in localstripe, the demo merchant and operator."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable

from connectors import register
from stack.config import ROOT, Config
from stack.errors import StackError


def setup_database(cfg: Config) -> None:
    """Roles, database and migrations on the primary (db/setup.sh, also used by compose)."""
    result = subprocess.run(["bash", str(ROOT / "db" / "setup.sh")], capture_output=True, text=True,
                            env={**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(cfg.pg_port),
                                 "PGSUPERPASSWORD": cfg.pg_super_password,
                                 "PAYSTREAM_DB_PASSWORD": cfg.app_password,
                                 "REPLICATION_PASSWORD": cfg.replication_password,
                                 "DEBEZIUM_DB_PASSWORD": cfg.debezium_password,
                                 "PATH": f"{cfg.pg_bin}:{os.environ['PATH']}"})
    for line in result.stdout.splitlines():
        print(f"  {line}")
    if result.returncode != 0:
        raise StackError("migrations", result.stderr.strip() or "db/setup.sh failed")


def register_connectors(cfg: Config) -> list[str]:
    url = f"http://127.0.0.1:{cfg.connect_port}"
    try:
        return [register.register(url, path, timeout=120, restart_failed=True)
                for path in sorted((ROOT / "connectors").glob("*.json"))]
    except register.RegistrationError as err:
        raise StackError("connect", str(err), log=cfg.logs / "connect.log") from err


def register_stripe_webhook(cfg: Config) -> None:
    """Points localstripe's webhooks at our API, so Stripe events flow locally too."""
    form = urllib.parse.urlencode({
        "url": f"http://127.0.0.1:{cfg.api_port}/v1/webhooks/stripe",
        "secret": cfg.stripe_webhook_secret,
    }).encode()
    url = f"http://127.0.0.1:{cfg.stripe_port}/_config/webhooks/paystream"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=10):
            pass
    except OSError as err:
        raise StackError("localstripe", f"webhook registration failed: {err}") from err


def _remembered(cfg: Config, name: str, command: list[str],
                before: list[str] | None = None) -> dict[str, str]:
    """What `paystream COMMAND` printed (JSON) the first time, kept in the stack folder
    (mode 600: it holds a key shown once)."""
    saved = cfg.dir / f"{name}.json"
    if not saved.exists():
        paystream, env = str(ROOT / ".venv" / "bin" / "paystream"), {**os.environ,
                                                                      **cfg.endpoints()}
        if before:
            subprocess.run([paystream, *before], capture_output=True, cwd=ROOT, env=env,
                           check=False)
        made = subprocess.run([paystream, *command], capture_output=True, text=True, cwd=ROOT,
                              env=env, check=False)
        if made.returncode != 0:
            raise StackError("api", f"creating the {name} failed: {made.stderr.strip()}")
        saved.write_text(made.stdout)
        saved.chmod(0o600)
    remembered: dict[str, str] = json.loads(saved.read_text())
    return remembered


def demo_merchant(cfg: Config) -> dict[str, str]:
    """The merchant `make up` prints a key for."""
    return _remembered(cfg, "demo-merchant", ["merchant", "create", "Demo Merchant"])


def demo_operator(cfg: Config) -> dict[str, str]:
    """The operator `make up` prints a console key for. A lost file leaves the old row,
    whose name would be taken: it is revoked first."""
    return _remembered(cfg, "demo-operator", ["operator", "create", "--name", "Demo Operator"],
                       before=["operator", "revoke", "Demo Operator"])


def after_api(cfg: Config) -> None:
    register_stripe_webhook(cfg)
    demo_merchant(cfg)
    demo_operator(cfg)


# Steps that follow a component's start, each safe to repeat.
AFTER_START: dict[str, Callable[[Config], object]] = {
    "postgres-primary": setup_database,
    "connect": register_connectors,
    # localstripe keeps its webhook endpoints in memory only: a restarted one
    # must be told again where to send events.
    "localstripe": register_stripe_webhook,
    "api": after_api,
}
