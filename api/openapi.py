"""The OpenAPI 3.1 document served at /openapi.json, describing every endpoint."""

from __future__ import annotations

from functools import cache
from typing import Any

from api.idempotency import REPLAYED_HEADER, TOKEN_HEADER
from api.validation import (
    MAX_DESCRIPTION_LENGTH,
    MAX_LIST_LIMIT,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_TEXT_LENGTH,
)
from paystream.domain.ids import MAX_IDEMPOTENCY_KEY
from paystream.domain.money import CURRENCIES, MAX_AMOUNT
from paystream.domain.status import PaymentStatus, RefundStatus
from paystream.domain.trace import Step as TraceStep

ERROR_TYPES = [
    "invalid_request_error",
    "authentication_error",
    "idempotency_error",
    "rate_limit_error",
    "api_error",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json(_ref("Error"))}
    if retry_after:
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying.",
                            "schema": {"type": "string"}}
        }
    return response


def _authenticated(responses: dict[str, Any], *, body: bool = False) -> dict[str, Any]:
    """Add the answers every authenticated endpoint may give."""
    common = {
        "400": _error("Invalid parameters (`param` names the culprit)."),
        "401": _error("Missing or invalid API key."),
        "429": _error("Rate limit for this API key exceeded.", retry_after=True),
        "503": _error("The primary database is unavailable.", retry_after=True),
    }
    if body:
        common["413"] = _error("Request body larger than the limit (64 KiB by default).")
    return {**common, **responses}


_WRITTEN = {
    TOKEN_HEADER: {
        "description": "Commit LSN of this write; send it back on reads for read-your-writes.",
        "required": True,
        "schema": {"type": "string"},
    },
}
_REPLAYABLE = {
    **_WRITTEN,
    REPLAYED_HEADER: {
        "description": "`true` when this answer replays an earlier request with the same "
        "Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}

_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes the request safe to retry: the same key and body replay the first "
    "answer; the same key with another body is refused (400); while the first request runs, "
    "a duplicate gets 409. Keys are scoped to the merchant and expire after 24 h.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
}
_CONSISTENCY_TOKEN = {
    "name": TOKEN_HEADER,
    "in": "header",
    "required": False,
    "description": "A token from an earlier write: the read waits briefly for a replica that "
    "has replayed it, otherwise reads the primary.",
    "schema": {"type": "string", "pattern": "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"},
}
_PAYMENT_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A payment id (`pay_...`).",
}

_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH}


def _schemas() -> dict[str, Any]:
    metadata = {
        # null is accepted as "no metadata".
        "type": ["object", "null"],
        "maxProperties": MAX_METADATA_KEYS,
        "propertyNames": {"minLength": 1, "maxLength": MAX_METADATA_KEY_LENGTH},
        "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE_LENGTH},
        "description": f"Up to {MAX_METADATA_KEYS} string keys (at most "
        f"{MAX_METADATA_KEY_LENGTH} characters) with string values (at most "
        f"{MAX_METADATA_VALUE_LENGTH}).",
    }
    amount = {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_AMOUNT,
        "description": "Minor units of the currency (cents for usd, yen for jpy, fils for kwd). "
        "Never a decimal.",
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["type", "code", "message", "param"],
                    "properties": {
                        "type": {"type": "string", "enum": ERROR_TYPES},
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "Payment": {
            "type": "object",
            "required": [
                "id", "object", "amount", "currency", "status", "customer", "payment_method",
                "description", "metadata", "amount_refunded", "failure_code",
                "failure_message", "created",
            ],
            "properties": {
                "id": {"type": "string", "pattern": "^pay_[0-9A-Za-z]{24}$"},
                "object": {"type": "string", "enum": ["payment"]},
                "amount": amount,
                "currency": {"type": "string", "enum": sorted(CURRENCIES)},
                "status": {"type": "string", "enum": [s.value for s in PaymentStatus]},
                "customer": {"type": "string"},
                "payment_method": {"type": "string"},
                "description": {"type": ["string", "null"]},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "amount_refunded": {"type": "integer", "minimum": 0},
                "failure_code": {"type": ["string", "null"]},
                "failure_message": {"type": ["string", "null"]},
                "created": {"type": "integer", "description": "Unix seconds."},
            },
        },
        "PaymentTrace": {
            "type": "object",
            "description": "One payment's story from its rows: the timeline in time order, "
            "the path's steps with the time between them, and what it waits for.",
            "required": ["object", "payment_id", "status", "terminal", "start", "where",
                         "waiting_for", "path", "timeline", "sources", "facts"],
            "properties": {
                "object": {"type": "string", "enum": ["payment_trace"]},
                "payment_id": {"type": "string"},
                "status": {"type": "string", "enum": [s.value for s in PaymentStatus]},
                "terminal": {"type": "boolean"},
                "start": {"type": "string", "format": "date-time"},
                "where": {"type": "string"},
                "waiting_for": {"type": "array", "items": {"type": "string"}},
                "path": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["step", "at", "since_previous_ms", "note"],
                        "properties": {
                            "step": {"type": "string", "enum": [s.value for s in TraceStep]},
                            "at": {"type": ["string", "null"], "format": "date-time"},
                            "since_previous_ms": {"type": ["integer", "null"]},
                            "note": {"type": "string"},
                        },
                    },
                },
                "timeline": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["at", "since_start_ms", "since_previous_ms", "source",
                                     "what", "detail"],
                        "properties": {
                            "at": {"type": "string", "format": "date-time"},
                            "since_start_ms": {"type": "integer"},
                            "since_previous_ms": {"type": "integer"},
                            "source": {"type": "string"},
                            "what": {"type": "string"},
                            "detail": {"type": "string"},
                        },
                    },
                },
                "sources": {
                    "type": "object",
                    "description": "What each source said; the API reads only Postgres.",
                    "additionalProperties": {"type": "string"},
                },
                "facts": {
                    "type": "object",
                    "description": "The rows the trace was made of: the payment, its fraud "
                    "decision, Stripe submissions, refunds, ledger journals with their entries, "
                    "merchant notifications and the Stripe webhooks that touched it.",
                    "required": ["payment", "fraud_decision", "stripe_submissions", "refunds",
                                 "journals", "merchant_notifications", "stripe_webhooks"],
                    "properties": {
                        "payment": {"type": "object"},
                        "fraud_decision": {"type": ["object", "null"]},
                        **{name: {"type": "array", "items": {"type": "object"}}
                           for name in ("stripe_submissions", "refunds", "journals",
                                        "merchant_notifications", "stripe_webhooks")},
                    },
                },
            },
        },
        "PaymentList": {
            "type": "object",
            "required": ["object", "url", "has_more", "data"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "url": {"type": "string"},
                "has_more": {"type": "boolean"},
                "data": {"type": "array", "items": _ref("Payment")},
            },
        },
        "CreatePayment": {
            "type": "object",
            "required": ["amount", "currency", "customer", "payment_method"],
            "additionalProperties": False,
            "properties": {
                "amount": amount,
                "currency": {
                    "type": "string",
                    "enum": sorted(CURRENCIES),
                    "description": "ISO 4217 code (case-insensitive; answered in lower case).",
                },
                "customer": {**_TEXT, "description": "Your customer's id."},
                "payment_method": {**_TEXT, "description": "e.g. `pm_card_visa`."},
                "description": {"type": ["string", "null"], "maxLength": MAX_DESCRIPTION_LENGTH},
                "metadata": metadata,
            },
        },
        "Refund": {
            "type": "object",
            "required": [
                "id", "object", "amount", "currency", "payment", "status", "failure_code",
                "failure_message", "created",
            ],
            "properties": {
                "id": {"type": "string", "pattern": "^re_[0-9A-Za-z]{24}$"},
                "object": {"type": "string", "enum": ["refund"]},
                "amount": amount,
                "currency": {"type": "string"},
                "payment": {"type": "string"},
                "status": {"type": "string", "enum": [s.value for s in RefundStatus]},
                "failure_code": {"type": ["string", "null"]},
                "failure_message": {"type": ["string", "null"]},
                "created": {"type": "integer"},
            },
        },
        "CreateRefund": {
            "type": "object",
            "required": ["payment"],
            "additionalProperties": False,
            "properties": {
                "payment": {"type": "string", "description": "The succeeded payment's id."},
                "amount": {
                    **amount,
                    "description": "Defaults to everything not yet refunded (pending "
                    "refunds count as refunded).",
                },
            },
        },
        "Balance": {
            "type": "object",
            "required": ["object", "available", "accounts"],
            "description": "Sums of the merchant's ledger entries. `accounts` follows the "
            "ledger's sign convention: debits positive, credits negative, so the "
            "merchant_available liability reads negative. `available` is the "
            "merchant-friendly view: what we owe the merchant per currency, i.e. minus the "
            "merchant_available balance.",
            "properties": {
                "object": {"type": "string", "enum": ["balance"]},
                "available": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["currency", "amount"],
                        "properties": {
                            "currency": {"type": "string"},
                            "amount": {"type": "integer"},
                        },
                    },
                },
                "accounts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["account", "currency", "balance"],
                        "properties": {
                            "account": {"type": "string"},
                            "currency": {"type": "string"},
                            "balance": {"type": "integer"},
                        },
                    },
                },
            },
        },
        "WebhookReceipt": {
            "type": "object",
            "required": ["received", "outcome"],
            "properties": {
                "received": {"type": "boolean"},
                "outcome": {
                    "type": "string",
                    "enum": ["applied", "noop", "unmatched", "ignored", "duplicate"],
                },
            },
        },
        "Status": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"type": "string", "enum": ["ready", "unavailable"]},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    }


def _paths() -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    return {
        "/v1/payments": {
            "post": {
                "operationId": "createPayment",
                "summary": "Create a payment (stored as pending; the workers submit it).",
                "security": bearer,
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {"required": True, "content": _json(_ref("CreatePayment"))},
                "responses": _authenticated(
                    {
                        "201": {"description": "Created, or replayed for a repeated key.",
                                "headers": _REPLAYABLE,
                                "content": _json(_ref("Payment"))},
                        "400": _error("Invalid parameters, or the Idempotency-Key was used "
                                      "with other parameters (`idempotency_error`)."),
                        "409": _error("A request with this Idempotency-Key is in flight."),
                    },
                    body=True,
                ),
            },
            "get": {
                "operationId": "listPayments",
                "summary": "List payments, newest first (Stripe-style cursor pagination).",
                "security": bearer,
                "parameters": [
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT,
                                "default": 10}},
                    {"name": "starting_after", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": "^pay_[0-9A-Za-z]{24}$"},
                     "description": "The last id of the previous page; an id that is not "
                     "one of yours is refused (400, `resource_missing`)."},
                    {"name": "status", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": [s.value for s in PaymentStatus]}},
                    _CONSISTENCY_TOKEN,
                ],
                "responses": _authenticated(
                    {"200": {"description": "A page of payments.",
                             "content": _json(_ref("PaymentList"))}}
                ),
            },
        },
        "/v1/payments/{id}": {
            "get": {
                "operationId": "retrievePayment",
                "summary": "Retrieve one of your payments (read from a replica).",
                "security": bearer,
                "parameters": [_PAYMENT_ID, _CONSISTENCY_TOKEN],
                "responses": _authenticated(
                    {
                        "200": {"description": "The payment.", "content": _json(_ref("Payment"))},
                        "404": _error("No such payment for this merchant."),
                    }
                ),
            }
        },
        "/v1/payments/{id}/trace": {
            "get": {
                "operationId": "tracePayment",
                "summary": "What happened to one of your payments: its rows in time order, "
                "the time between its steps (fraud decision, Stripe, status, ledger, your "
                "webhook) and what it waits for (read from a replica).",
                "security": bearer,
                "parameters": [_PAYMENT_ID, _CONSISTENCY_TOKEN],
                "responses": _authenticated(
                    {
                        "200": {"description": "The payment's trace.",
                                "content": _json(_ref("PaymentTrace"))},
                        "404": _error("No such payment for this merchant."),
                    }
                ),
            }
        },
        "/v1/payments/{id}/cancel": {
            "post": {
                "operationId": "cancelPayment",
                "summary": "Cancel a payment that is still pending; canceling twice is a "
                "no-op that answers the canceled payment.",
                "security": bearer,
                "parameters": [_PAYMENT_ID],
                "requestBody": {
                    "required": False,
                    "content": _json(
                        {"type": "object", "additionalProperties": False, "properties": {}}
                    ),
                },
                "responses": _authenticated(
                    {
                        "200": {"description": "The canceled payment.", "headers": _WRITTEN,
                                "content": _json(_ref("Payment"))},
                        "400": _error("Not pending any more (`payment_unexpected_state`)."),
                        "404": _error("No such payment for this merchant."),
                    },
                    body=True,
                ),
            }
        },
        "/v1/refunds": {
            "post": {
                "operationId": "createRefund",
                "summary": "Refund a succeeded payment, in full or in part (stored as pending).",
                "security": bearer,
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {"required": True, "content": _json(_ref("CreateRefund"))},
                "responses": _authenticated(
                    {
                        "201": {"description": "Created, or replayed for a repeated key.",
                                "headers": _REPLAYABLE, "content": _json(_ref("Refund"))},
                        "400": _error("Invalid parameters, not refundable, more than what is "
                                      "left, or an Idempotency-Key reused."),
                        "404": _error("No such payment for this merchant."),
                        "409": _error("A request with this Idempotency-Key is in flight."),
                    },
                    body=True,
                ),
            }
        },
        "/v1/balances": {
            "get": {
                "operationId": "retrieveBalances",
                "summary": "Ledger balances per account and currency (from the replicas).",
                "security": bearer,
                "parameters": [_CONSISTENCY_TOKEN],
                "responses": _authenticated(
                    {"200": {"description": "The balances.", "content": _json(_ref("Balance"))}}
                ),
            }
        },
        "/v1/webhooks/stripe": {
            "post": {
                "operationId": "stripeWebhook",
                "summary": "Stripe events (signed with Stripe-Signature; 300 s tolerance). "
                "Each event id is applied once; unknown types are acknowledged and ignored.",
                "security": [],
                "parameters": [
                    {"name": "Stripe-Signature", "in": "header", "required": True,
                     "schema": {"type": "string"}}
                ],
                "requestBody": {"required": True, "content": _json({"type": "object"})},
                "responses": {
                    "200": {"description": "Received (see `outcome`).",
                            "content": _json(_ref("WebhookReceipt"))},
                    "400": _error("Missing, malformed, wrong or stale signature; or not an "
                                  "event."),
                    "413": _error("Body too large."),
                    "503": _error("The primary database is unavailable.", retry_after=True),
                },
            }
        },
        "/health": _probe("healthCheck", "The API process is serving."),
        "/live": _probe("liveness", "The process is alive."),
        "/ready": {
            "get": {
                "operationId": "readiness",
                "summary": "Ready when the primary and Redis answer (replicas are reported).",
                "security": [],
                "responses": {
                    "200": {"description": "Ready.", "content": _json(_ref("Readiness"))},
                    "503": {"description": "A dependency is down.",
                            "content": _json(_ref("Readiness"))},
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics: requests by route and status, latency, "
                "idempotent replays, webhook outcomes.",
                "security": [],
                "responses": {
                    "200": {"description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "security": [],
                "responses": {
                    "200": {"description": "OpenAPI 3.1.",
                            "content": _json({"type": "object"})}
                },
            }
        },
        **_console_paths(),
    }


def _probe(operation: str, summary: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation,
            "summary": summary,
            "security": [],
            "responses": {"200": {"description": "OK.", "content": _json(_ref("Status"))}},
        }
    }


def _console_paths() -> dict[str, Any]:
    """The operator console (api/console.py): a page for operators, not a merchant API.

    Every path but the login form needs an operator key or the session its login
    sets (api/console_auth.py); a merchant key is answered 401.
    """
    html = {"text/html": {"schema": {"type": "string"}}}
    # Prometheus' own answer, passed through: {"status": "success"|"error", ...}.
    answer = {"type": "object", "required": ["status"],
              "properties": {"status": {"enum": ["success", "error"]}}}
    prometheus = _json(answer)
    text = {"type": "string"}
    operator: list[dict[str, list[str]]] = [{"operatorKey": []}, {"operatorSession": []}]
    guarded = {
        "401": _error("No operator key or session (a merchant key is not one)."),
        "503": _error("The primary database is unavailable.", retry_after=True),
    }
    page = {**guarded, "302": {"description": "A browser (Accept: text/html) without an "
                                              "operator session: to /console/login."}}
    return {
        "/console/login": {
            "get": {
                "operationId": "consoleLoginForm", "summary": "The console's login form.",
                "security": [],
                "responses": {"200": {"description": "The form.", "content": html}},
            },
            "post": {
                "operationId": "consoleLogin",
                "summary": "Log in with an operator key: sets the session cookie "
                "(HttpOnly, SameSite=Strict) and redirects into the console.",
                "security": [],
                "parameters": [{"name": "next", "in": "query", "required": False,
                                "schema": text}],
                "requestBody": {"required": True, "content": {
                    "application/x-www-form-urlencoded": {"schema": {
                        "type": "object", "properties": {"key": text}}}}},
                "responses": {
                    "303": {"description": "Logged in: to `next` if it is a console page."},
                    "400": _error("Not a form (application/x-www-form-urlencoded)."),
                    "401": {"description": "Not an operator key: the form again.",
                            "content": html},
                    "403": _error("Posted from another site."),
                    "413": _error("Request body larger than the limit."),
                    "503": _error("The primary database is unavailable.", retry_after=True),
                },
            },
        },
        "/console/logout": {"post": {
            "operationId": "consoleLogout", "summary": "End the console session.",
            "security": [],
            "responses": {"303": {"description": "Logged out: to /console/login."},
                          "403": _error("Posted from another site."),
                          "503": _error("The primary database is unavailable.",
                                        retry_after=True)},
        }},
        "/console": {"get": {
            "operationId": "consoleRedirect", "summary": "Redirects to /console/.",
            "security": operator,
            "responses": {**page, "200": {"description": "The console (redirect followed).",
                                          "content": html}},
        }},
        "/console/": {"get": {
            "operationId": "console",
            "summary": "The operator console: charts and alerts from Prometheus.",
            "security": operator,
            "responses": {**page, "200": {"description": "The page.", "content": html}},
        }},
        "/console/{name}": {"get": {
            "operationId": "consoleFile", "summary": "The console's script, style and panels.",
            "security": operator,
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string",
                                       "enum": ["console.js", "payment.js", "console.css",
                                                "panels.json"]}}],
            "responses": {
                **page,
                "200": {"description": "The file.",
                        "content": {"text/javascript": {"schema": text},
                                    "text/css": {"schema": text},
                                    "application/json": {"schema": {"type": "object"}}}},
                "404": _error("No such file."),
            },
        }},
        "/console/payments": {"get": {
            "operationId": "consolePaymentSearch",
            "summary": "The console's search box: redirects to the page of the payment `id` "
            "(to /console/ without one).",
            "security": operator,
            "parameters": [{"name": "id", "in": "query", "required": False, "schema": text}],
            "responses": {**page, "302": {"description": "To /console/payments/{id}, or to "
                                          "/console/login without an operator session."}},
        }},
        "/console/payments/{id}": {"get": {
            "operationId": "consolePayment",
            "summary": "One payment's page: its path as a timeline, its rows, where it is "
            "and what it waits for (any merchant's payment; an unknown id says so).",
            "security": operator,
            "parameters": [_PAYMENT_ID],
            "responses": {**page, "200": {"description": "The page.", "content": html}},
        }},
        "/console/api/payments/{id}/trace": {"get": {
            "operationId": "consolePaymentTrace",
            "summary": "GET /v1/payments/{id}/trace for any merchant's payment: the "
            "document the console's payment page draws.",
            "security": operator,
            "parameters": [_PAYMENT_ID, _CONSISTENCY_TOKEN],
            "responses": {
                **guarded,
                "200": {"description": "The payment's trace.",
                        "content": _json(_ref("PaymentTrace"))},
                "400": _error("Invalid consistency token."),
                "404": _error("No such payment."),
            },
        }},
        "/console/api/v1/{endpoint}": {"get": {
            "operationId": "consolePrometheus",
            "summary": "Prometheus' query API (query, query_range, alerts), proxied for the "
            "console's own panels' queries (api/console/panels.json) only.",
            "security": operator,
            "parameters": [
                {"name": "endpoint", "in": "path", "required": True,
                 "schema": {"type": "string", "enum": ["query", "query_range", "alerts"]}},
                *({"name": name, "in": "query", "required": False, "schema": text}
                  for name in ("query", "time", "start", "end", "step")),
            ],
            "responses": {
                **guarded,
                "200": {"description": "Prometheus' answer.", "content": prometheus},
                "404": _error("Not one of the proxied endpoints."),
                "400": {"description": "Prometheus refused the query, or it is too long.",
                        "content": prometheus},
                "403": {"description": "Not one of the console's queries, or a range it "
                        "would never ask for.", "content": prometheus},
                "422": {"description": "The query could not be executed.",
                        "content": prometheus},
                "502": {"description": "Prometheus does not answer.", "content": prometheus},
                "503": {"description": "Prometheus timed out or is overloaded, or the "
                        "primary database (which knows the operators) is unavailable.",
                        "content": _json({"anyOf": [answer, _ref("Error")]})},
            },
        }},
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The document; built once (it only depends on code)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PayStream API",
            "version": "1.0.0",
            "description": "Payments in integer minor units. Errors are Stripe-shaped: "
            '`{"error": {"type", "code", "message", "param"}}`. Writes answer a '
            f"`{TOKEN_HEADER}` for read-your-writes on the replica-backed reads.",
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                # The console's: operator keys are not merchant keys (api/operators.py).
                "operatorKey": {"type": "http", "scheme": "bearer"},
                "operatorSession": {"type": "apiKey", "in": "cookie",
                                    "name": "paystream_console"},
            },
            "schemas": _schemas(),
        },
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
    }
