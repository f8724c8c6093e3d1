"""One settings object, read from the environment once per entrypoint."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from paystream.domain.fraud import FraudConfig


class SettingsError(ValueError):
    """An environment variable holds something unusable; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    """A duration or rate: a finite number, not negative (``nan`` would pass every
    comparison the cross-checks below make)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{name}={raw!r} must be a finite number, 0 or more")
    return value


def fraud_config_from_env(env: Mapping[str, str]) -> FraudConfig:
    """The fraud rules' thresholds from FRAUD_* (listed in paystream/domain/fraud.py)."""
    base = FraudConfig()
    limits = dict(base.amount_limits)
    for item in _csv(env.get("FRAUD_AMOUNT_LIMITS", "")):
        code, sep, value = item.partition("=")
        if not sep or not code.strip():
            raise SettingsError(f"FRAUD_AMOUNT_LIMITS: expected code=limit, got {item!r}")
        limits[code.strip().lower()] = _positive("FRAUD_AMOUNT_LIMITS", value)
    return FraudConfig(
        velocity_window_seconds=_int(env, "FRAUD_VELOCITY_WINDOW_SECONDS",
                                     base.velocity_window_seconds, minimum=1),
        max_payments_per_customer=_int(env, "FRAUD_MAX_PAYMENTS_PER_CUSTOMER",
                                       base.max_payments_per_customer, minimum=1),
        max_amount_per_customer=_int(env, "FRAUD_MAX_AMOUNT_PER_CUSTOMER",
                                     base.max_amount_per_customer, minimum=1),
        max_payments_per_payment_method=_int(env, "FRAUD_MAX_PAYMENTS_PER_PAYMENT_METHOD",
                                             base.max_payments_per_payment_method, minimum=1),
        amount_limits=MappingProxyType(limits),
        default_amount_limit=_int(env, "FRAUD_DEFAULT_AMOUNT_LIMIT", base.default_amount_limit,
                                  minimum=1),
        blocked_customers=frozenset(_csv(env.get("FRAUD_BLOCKED_CUSTOMERS", ""))),
        blocked_payment_methods=frozenset(_csv(env.get("FRAUD_BLOCKED_PAYMENT_METHODS", ""))),
    )


def _csv(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _positive(name: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}: expected a positive integer, got {raw!r}") from None
    if value < 1:
        raise SettingsError(f"{name}: expected a positive integer, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Every knob of the API and the worker. Defaults match `make up`'s local stack."""

    database_url: str = "postgresql://paystream:paystream@127.0.0.1:5432/paystream"
    database_read_url: str = "postgresql://paystream:paystream@127.0.0.1:5439/paystream"
    redis_url: str = "redis://127.0.0.1:6379/0"
    kafka_bootstrap: str = "127.0.0.1:9092"
    stripe_api_base: str = "http://127.0.0.1:8420"
    stripe_api_key: str = field(default="sk_test_paystream", repr=False)
    # Several secrets, comma separated, are all accepted while one is rotated out.
    stripe_webhook_secrets: tuple[str, ...] = field(default=("whsec_paystream_local",), repr=False)
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # API processes sharing the port (SO_REUSEPORT): one asyncio process is
    # CPU-bound on one core long before Postgres is busy.
    api_workers: int = 1
    faust_web_port: int = 6066
    faust_web_host: str = "127.0.0.1"
    faust_data_dir: str = ".stack/faust"
    faust_store: str = "rocksdb://"
    faust_app_id: str = "paystream"
    topic_partitions: int = 4
    # Copies of each topic the worker creates (its own, Faust's changelogs and
    # the CDC topics it may make first): 1 on one broker; 3 on a cluster of
    # three, where the brokers' min.insync.replicas=2 lets one of them die.
    topic_replication_factor: int = 1
    # Faust's standby copies of each table on other workers (its default, 1): a
    # partition that moves finds its tables ready, at the cost of every changelog
    # message being read and stored once more per copy.
    table_standby_replicas: int = 1
    cdc_topic_prefix: str = "paystream"
    dlq_topic: str = "paystream.dlq"
    idempotency_ttl_seconds: int = 24 * 3600
    rate_limit_per_second: int = 100
    # How long a read carrying a consistency token waits for a replica before
    # it falls back to the primary.
    read_your_writes_wait_ms: int = 200
    max_body_bytes: int = 64 * 1024
    # Where the operator console (/console/) reads its charts and alerts.
    prometheus_url: str = "http://127.0.0.1:9090"
    # How long an operator's console login lasts; `paystream operator revoke` ends it sooner.
    console_session_seconds: int = 8 * 3600
    poll_interval_seconds: float = 600.0
    stripe_requests_per_second: int = 20
    # Objects in the Stripe sequence at once: at least the request rate times
    # Stripe's slowest answers (100/s x 2 s), or the rate cannot be used.
    stripe_concurrency: int = 256
    stripe_timeout_seconds: float = 10.0
    circuit_failure_threshold: int = 5
    circuit_reset_seconds: float = 10.0
    # How long a new payment or refund waits out a Stripe outage (the breaker's
    # trial call, then its turn) before it is left to the poller: a short outage
    # then costs seconds, not a poll interval.
    stripe_outage_patience_seconds: float = 45.0
    # The worker's watchdog: stalled with messages waiting this long is unhealthy
    # (/health/ 503), unhealthy this long stops the worker so it is restarted.
    watchdog_stall_seconds: float = 60.0
    watchdog_exit_after_seconds: float = 15.0
    # Deadlines on what Faust/aiokafka can wait on for ever (streams/deadline.py):
    # a commit (producer flush + offset commit), and a stop. Past one the worker
    # exits hard (70) to be restarted.
    worker_commit_deadline_seconds: float = 60.0
    worker_stop_deadline_seconds: float = 25.0
    # The worker's own reconciliation (leader only): how often, over how long a window.
    reconcile_interval_seconds: float = 600.0
    reconcile_window_seconds: float = 24 * 3600.0
    notify_max_attempts: int = 6
    notify_base_delay_seconds: float = 1.0
    fraud: FraudConfig = field(default_factory=FraudConfig)

    @property
    def broker_url(self) -> str:
        # Faust takes several brokers as URLs separated by ";" (KAFKA_BOOTSTRAP
        # lists them as host:port separated by ",", as Kafka's clients do).
        return ";".join(f"kafka://{server.strip()}"
                        for server in self.kafka_bootstrap.split(",") if server.strip())

    @property
    def payments_topic(self) -> str:
        return f"{self.cdc_topic_prefix}.public.payments"

    @property
    def refunds_topic(self) -> str:
        return f"{self.cdc_topic_prefix}.public.refunds"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        secrets = env.get("STRIPE_WEBHOOK_SECRET", ",".join(d.stripe_webhook_secrets))
        bootstrap = env.get("KAFKA_BOOTSTRAP") or ",".join(
            url.strip().removeprefix("kafka://")
            for url in env.get("BROKER_URL", d.kafka_bootstrap).split(";"))
        settings = cls(
            database_url=env.get("DATABASE_URL", d.database_url),
            database_read_url=env.get("DATABASE_READ_URL", d.database_read_url),
            redis_url=env.get("REDIS_URL", d.redis_url),
            kafka_bootstrap=bootstrap,
            stripe_api_base=env.get("STRIPE_API_BASE", d.stripe_api_base).rstrip("/"),
            stripe_api_key=env.get("STRIPE_API_KEY", d.stripe_api_key),
            stripe_webhook_secrets=tuple(s.strip() for s in secrets.split(",") if s.strip()),
            api_host=env.get("API_HOST", d.api_host),
            api_port=_int(env, "API_PORT", d.api_port, minimum=1),
            api_workers=_int(env, "API_WORKERS", d.api_workers, minimum=1),
            faust_web_port=_int(env, "FAUST_WEB_PORT", d.faust_web_port, minimum=1),
            faust_web_host=env.get("FAUST_WEB_HOST", d.faust_web_host),
            faust_data_dir=env.get("FAUST_DATA_DIR", d.faust_data_dir),
            faust_store=env.get("FAUST_STORE", d.faust_store),
            faust_app_id=env.get("FAUST_APP_ID", d.faust_app_id),
            topic_partitions=_int(env, "TOPIC_PARTITIONS", d.topic_partitions, minimum=1),
            topic_replication_factor=_int(env, "TOPIC_REPLICATION_FACTOR",
                                          d.topic_replication_factor, minimum=1),
            table_standby_replicas=_int(env, "TABLE_STANDBY_REPLICAS",
                                        d.table_standby_replicas, minimum=0),
            cdc_topic_prefix=env.get("CDC_TOPIC_PREFIX", d.cdc_topic_prefix),
            dlq_topic=env.get("DLQ_TOPIC", d.dlq_topic),
            idempotency_ttl_seconds=_int(env, "IDEMPOTENCY_TTL_SECONDS",
                                         d.idempotency_ttl_seconds, minimum=1),
            rate_limit_per_second=_int(env, "RATE_LIMIT_PER_SECOND", d.rate_limit_per_second,
                                       minimum=1),
            read_your_writes_wait_ms=_int(env, "READ_YOUR_WRITES_WAIT_MS",
                                          d.read_your_writes_wait_ms),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", d.max_body_bytes, minimum=1),
            prometheus_url=env.get("PROMETHEUS_URL", d.prometheus_url).rstrip("/"),
            console_session_seconds=_int(env, "CONSOLE_SESSION_SECONDS",
                                         d.console_session_seconds, minimum=60),
            poll_interval_seconds=_float(env, "POLL_INTERVAL_SECONDS", d.poll_interval_seconds),
            stripe_requests_per_second=_int(env, "STRIPE_REQUESTS_PER_SECOND",
                                            d.stripe_requests_per_second, minimum=1),
            stripe_concurrency=_int(env, "STRIPE_CONCURRENCY", d.stripe_concurrency, minimum=1),
            stripe_timeout_seconds=_float(env, "STRIPE_TIMEOUT_SECONDS", d.stripe_timeout_seconds),
            circuit_failure_threshold=_int(env, "CIRCUIT_FAILURE_THRESHOLD",
                                           d.circuit_failure_threshold, minimum=1),
            circuit_reset_seconds=_float(env, "CIRCUIT_RESET_SECONDS", d.circuit_reset_seconds),
            stripe_outage_patience_seconds=_float(env, "STRIPE_OUTAGE_PATIENCE_SECONDS",
                                                  d.stripe_outage_patience_seconds),
            watchdog_stall_seconds=_float(env, "WATCHDOG_STALL_SECONDS",
                                          d.watchdog_stall_seconds),
            watchdog_exit_after_seconds=_float(env, "WATCHDOG_EXIT_AFTER_SECONDS",
                                               d.watchdog_exit_after_seconds),
            worker_commit_deadline_seconds=_float(env, "WORKER_COMMIT_DEADLINE_SECONDS",
                                                  d.worker_commit_deadline_seconds),
            worker_stop_deadline_seconds=_float(env, "WORKER_STOP_DEADLINE_SECONDS",
                                                d.worker_stop_deadline_seconds),
            reconcile_interval_seconds=_float(env, "RECONCILE_INTERVAL_SECONDS",
                                              d.reconcile_interval_seconds),
            reconcile_window_seconds=_float(env, "RECONCILE_WINDOW_SECONDS",
                                            d.reconcile_window_seconds),
            notify_max_attempts=_int(env, "NOTIFY_MAX_ATTEMPTS", d.notify_max_attempts,
                                     minimum=1),
            notify_base_delay_seconds=_float(env, "NOTIFY_BASE_DELAY_SECONDS",
                                             d.notify_base_delay_seconds),
            fraud=fraud_config_from_env(env),
        )
        if settings.stripe_outage_patience_seconds >= settings.watchdog_stall_seconds:
            # Payments waiting out an outage fill the submit window; that must not
            # read as a stalled stage and restart a healthy worker.
            raise SettingsError(
                "STRIPE_OUTAGE_PATIENCE_SECONDS must be below WATCHDOG_STALL_SECONDS "
                f"({settings.stripe_outage_patience_seconds:g} >= "
                f"{settings.watchdog_stall_seconds:g})")
        _check_deadlines(settings)
        return settings


def _check_deadlines(settings: Settings) -> None:
    for name, value in (("WATCHDOG_STALL_SECONDS", settings.watchdog_stall_seconds),
                        ("WATCHDOG_EXIT_AFTER_SECONDS", settings.watchdog_exit_after_seconds),
                        ("WORKER_COMMIT_DEADLINE_SECONDS",
                         settings.worker_commit_deadline_seconds),
                        ("WORKER_STOP_DEADLINE_SECONDS", settings.worker_stop_deadline_seconds)):
        if value <= 0:
            raise SettingsError(f"{name}={value:g} must be above 0")
    if settings.worker_stop_deadline_seconds <= settings.stripe_timeout_seconds:
        # The stop gives Stripe calls in flight one call's timeout to answer.
        raise SettingsError(
            "WORKER_STOP_DEADLINE_SECONDS must be above STRIPE_TIMEOUT_SECONDS "
            f"({settings.worker_stop_deadline_seconds:g} <= "
            f"{settings.stripe_timeout_seconds:g})")
