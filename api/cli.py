"""`paystream api` (serve the API) and `paystream merchant create` (issue credentials)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from paystream.settings import Settings, SettingsError


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
