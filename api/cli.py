"""`paystream api` (serve the API), `paystream merchant create` and `paystream operator ...`
(issue and revoke credentials)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from paystream.settings import Settings, SettingsError

if TYPE_CHECKING:
    import psycopg


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = sub.add_parser("api", help="serve the HTTP API in the foreground (SIGTERM stops it)")
    api.add_argument("--host", help="listen address (default: API_HOST or 127.0.0.1)")
    api.add_argument("--port", type=int, help="listen port (default: API_PORT or 8080)")
    api.add_argument("--workers", type=int,
                     help="processes sharing the port (default: API_WORKERS or 1)")
    api.add_argument("--access-log", action="store_true",
                     help="log every request (off by default: /metrics counts them)")
    api.set_defaults(func=serve)

    merchant = sub.add_parser("merchant", help="manage merchants")
    actions = merchant.add_subparsers(dest="merchant_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", help='create a merchant; prints {"id", "api_key", "webhook_secret"} as JSON'
    )
    create.add_argument("name")
    create.add_argument("--webhook-url", help="where the merchant's payment events are sent")
    create.set_defaults(func=merchant_create)

    operator = sub.add_parser("operator", help="manage who may open the operator console")
    actions = operator.add_subparsers(dest="operator_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", help='create an operator; prints {"id", "name", "operator_key"} as JSON '
                       "(the key is shown this once)")
    create.add_argument("--name", required=True, help="who the operator is, e.g. an email")
    create.set_defaults(func=operator_create)
    listing = actions.add_parser("list", help="every operator, revoked ones included")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=operator_list)
    revoke = actions.add_parser(
        "revoke", help="revoke an operator's key and end its console sessions at once")
    revoke.add_argument("operator", help="the operator's id (op_...) or name")
    revoke.set_defaults(func=operator_revoke)


def _settings() -> Settings | None:
    try:
        return Settings.from_env()
    except SettingsError as err:
        print(f"paystream: {err}", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    from api.server import serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = _settings()
    if settings is None:
        return 2
    workers = args.workers or settings.api_workers
    if workers < 1:
        print("paystream: --workers must be at least 1", file=sys.stderr)
        return 2
    return run(settings, args.host or settings.api_host, args.port or settings.api_port,
               workers=workers, access_log=args.access_log)


def merchant_create(args: argparse.Namespace) -> int:
    import psycopg

    from api.merchants import INSERT_MERCHANT, NewMerchant

    settings = _settings()
    if settings is None:
        return 2
    try:
        merchant = NewMerchant(name=args.name, webhook_url=args.webhook_url)
    except ValueError as err:
        print(f"paystream: {err}", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
            conn.execute(INSERT_MERCHANT, merchant.row())
    except psycopg.Error as err:
        print(f"paystream: could not create the merchant: {type(err).__name__}: {err}",
              file=sys.stderr)
        return 1
    print(json.dumps(merchant.credentials()))
    return 0


def _database(what: str, run: Callable[[psycopg.Connection[Any]], int]) -> int:
    """Run ``run`` on a connection to the primary; a database error is a message and 1."""
    import psycopg

    settings = _settings()
    if settings is None:
        return 2
    try:
        with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
            return run(conn)
    except psycopg.Error as err:
        print(f"paystream: could not {what}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def operator_create(args: argparse.Namespace) -> int:
    from api.operators import INSERT_OPERATOR, NewOperator

    try:
        operator = NewOperator(name=args.name)
    except ValueError as err:
        print(f"paystream: {err}", file=sys.stderr)
        return 2

    def create(conn: psycopg.Connection[Any]) -> int:
        conn.execute(INSERT_OPERATOR, operator.row())
        print(json.dumps(operator.credentials()))
        return 0

    return _database("create the operator", create)


def operator_list(args: argparse.Namespace) -> int:
    from api.operators import LIST_OPERATORS

    def show(conn: psycopg.Connection[Any]) -> int:
        rows = conn.execute(LIST_OPERATORS).fetchall()
        if args.json:
            for id_, name, created, revoked in rows:
                print(json.dumps({"id": id_, "name": name, "created_at": created.isoformat(),
                                  "revoked_at": revoked and revoked.isoformat()}))
            return 0
        print(f"{'ID':<28}{'CREATED':<22}{'STATUS':<20}NAME")
        for id_, name, created, revoked in rows:
            status = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
            print(f"{id_:<28}{created:%Y-%m-%d %H:%M %Z}  {status:<20}{name}")
        return 0

    return _database("list the operators", show)


def operator_revoke(args: argparse.Namespace) -> int:
    from api.operators import END_SESSIONS, REVOKE_OPERATOR

    def revoke(conn: psycopg.Connection[Any]) -> int:
        with conn.transaction():
            revoked = conn.execute(REVOKE_OPERATOR, {"who": args.operator}).fetchall()
            for id_, _ in revoked:
                conn.execute(END_SESSIONS, {"id": id_})
        if not revoked:
            print(f"paystream: no active operator {args.operator!r} "
                  "(`paystream operator list` shows them)", file=sys.stderr)
            return 1
        for id_, name in revoked:
            print(f"revoked {id_} ({name})")
        return 0

    return _database("revoke the operator", revoke)
