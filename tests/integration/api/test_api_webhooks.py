"""Stripe webhook: signature checks, once-only application, guarded transitions."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import psycopg
import pytest

from api.merchants import NewMerchant
from paystream.domain.ids import new_id
from paystream.settings import Settings
from tests.integration.api.api_helpers import (
    Api,
    deliver,
    payment_body,
    payment_intent,
    payment_row,
    start_api,
    stripe_event,
    stripe_signature,
)

pytestmark = pytest.mark.own_database


def secret(api: Api) -> str:
    return api.settings.stripe_webhook_secrets[0]


async def event_outcome(db: psycopg.AsyncConnection, event_id: str) -> str | None:
    cur = await db.execute("SELECT outcome FROM stripe_events WHERE id = %s", (event_id,))
    row = await cur.fetchone()
    return None if row is None else row[0]


async def test_event_delivered_three_times_is_applied_once(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key)
    event_id = new_id("evt")
    pi = payment_intent(payment["id"], "succeeded")
    payload = stripe_event("payment_intent.succeeded", pi, event_id=event_id)

    outcomes = []
    for _ in range(3):
        status, body = await deliver(api, payload, stripe_signature(payload, secret(api)))
        assert status == 200
        outcomes.append(body["outcome"])
    assert outcomes == ["applied", "duplicate", "duplicate"]
    row = await payment_row(db, payment["id"])
    assert row["status"] == "succeeded"
    assert row["stripe_payment_intent_id"] == pi["id"]
    assert await event_outcome(db, event_id) == "applied"


async def test_concurrent_redeliveries_apply_once(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key)
    payload = stripe_event("payment_intent.succeeded", payment_intent(payment["id"], "succeeded"))
    signature = stripe_signature(payload, secret(api))
    results = await asyncio.gather(*(deliver(api, payload, signature) for _ in range(3)))
    assert sorted(body["outcome"] for _, body in results) == ["applied", "duplicate", "duplicate"]


def _tampered(payload: bytes) -> bytes:
    event = json.loads(payload)
    event["data"]["object"]["status"] = "succeeded"
    event["type"] = "payment_intent.succeeded"
    return json.dumps(event).encode()


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "stale", "missing", "garbage",
                                  "no_v1", "future_garbage_ts"])
async def test_bad_signatures_are_400_and_change_nothing(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection, case: str
) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key)
    event_id = new_id("evt")
    payload = stripe_event("payment_intent.payment_failed",
                           payment_intent(payment["id"], "requires_payment_method"),
                           event_id=event_id)
    good = stripe_signature(payload, secret(api))
    if case == "tampered":
        body, signature = _tampered(payload), good
    elif case == "wrong_secret":
        body, signature = payload, stripe_signature(payload, "whsec_not_ours")
    elif case == "stale":
        body, signature = payload, stripe_signature(payload, secret(api), int(time.time()) - 301)
    elif case == "missing":
        body, signature = payload, None
    elif case == "garbage":
        body, signature = payload, "this is not a signature"
    elif case == "no_v1":
        body, signature = payload, good.replace("v1=", "v0=")
    else:
        body, signature = payload, "t=" + "9" * 5000 + ",v1=abc"
    status, answer = await deliver(api, body, signature)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error"
    assert (await payment_row(db, payment["id"]))["status"] == "pending"
    assert await event_outcome(db, event_id) is None


async def test_several_v1_signatures_and_secret_rotation(
    merchant: NewMerchant, db: psycopg.AsyncConnection, settings: Settings
) -> None:
    rotated = dataclasses.replace(settings, stripe_webhook_secrets=("whsec_old", "whsec_new"))
    client, app = await start_api(rotated)
    try:
        api = Api(client, app, rotated)
        for signing_secret in ("whsec_old", "whsec_new"):
            _, payment, _ = await api.create_payment(merchant.api_key)
            payload = stripe_event("payment_intent.succeeded",
                                   payment_intent(payment["id"], "succeeded"))
            status, body = await deliver(api, payload, stripe_signature(payload, signing_secret))
            assert (status, body["outcome"]) == (200, "applied")
        # Stripe sends one v1 per active secret during a roll; any match will do.
        _, payment, _ = await api.create_payment(merchant.api_key)
        payload = stripe_event("payment_intent.succeeded",
                               payment_intent(payment["id"], "succeeded"))
        now = int(time.time())
        unknown = stripe_signature(payload, "whsec_unknown", now).split("v1=")[1]
        header = stripe_signature(payload, "whsec_new", now) + f",v1={unknown}"
        status, body = await deliver(api, payload, header)
        assert (status, body["outcome"]) == (200, "applied")
    finally:
        await client.close()


async def test_payment_failed_records_the_failure(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key)
    pi = payment_intent(
        payment["id"],
        "requires_payment_method",
        last_payment_error={"code": "card_declined", "decline_code": "generic_decline",
                            "message": "Your card was declined."},
    )
    payload = stripe_event("payment_intent.payment_failed", pi)
    status, body = await deliver(api, payload, stripe_signature(payload, secret(api)))
    assert (status, body["outcome"]) == (200, "applied")
    row = await payment_row(db, payment["id"])
    assert (row["status"], row["failure_code"], row["failure_message"]) == (
        "failed", "card_declined", "Your card was declined.")


async def test_out_of_order_and_late_events_are_noops(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key)
    pi_id = new_id("pi")

    async def send(kind: str, status: str) -> str:
        payload = stripe_event(kind, payment_intent(payment["id"], status, id=pi_id))
        code, body = await deliver(api, payload, stripe_signature(payload, secret(api)))
        assert code == 200
        return body["outcome"]

    assert await send("payment_intent.processing", "processing") == "applied"
    assert await send("payment_intent.succeeded", "succeeded") == "applied"
    # Stripe does not promise order: these arrive after the outcome.
    assert await send("payment_intent.processing", "processing") == "noop"
    assert await send("payment_intent.requires_action", "requires_action") == "noop"
    assert await send("payment_intent.payment_failed", "requires_payment_method") == "noop"
    assert await send("payment_intent.canceled", "canceled") == "noop"
    assert (await payment_row(db, payment["id"]))["status"] == "succeeded"


async def test_found_by_payment_intent_id_without_metadata(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key)
    pi_id = new_id("pi")
    # As the worker's write-back would have stored it.
    await db.execute("UPDATE payments SET stripe_payment_intent_id = %s WHERE id = %s",
                     (pi_id, payment["id"]))
    obj = {"id": pi_id, "object": "payment_intent", "status": "requires_action", "metadata": {}}
    payload = stripe_event("payment_intent.requires_action", obj)
    status, body = await deliver(api, payload, stripe_signature(payload, secret(api)))
    assert (status, body["outcome"]) == (200, "applied")
    assert (await payment_row(db, payment["id"]))["status"] == "requires_action"


async def test_metadata_pointing_at_a_payment_of_another_intent_is_unmatched(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key)
    await db.execute("UPDATE payments SET stripe_payment_intent_id = %s WHERE id = %s",
                     (new_id("pi"), payment["id"]))
    payload = stripe_event("payment_intent.succeeded", payment_intent(payment["id"], "succeeded"))
    status, body = await deliver(api, payload, stripe_signature(payload, secret(api)))
    assert (status, body["outcome"]) == (200, "unmatched")
    assert (await payment_row(db, payment["id"]))["status"] == "pending"


async def test_unknown_types_and_unknown_intents_are_acknowledged(api: Api) -> None:
    payload = stripe_event("customer.created", {"id": "cus_1", "object": "customer"})
    status, body = await deliver(api, payload, stripe_signature(payload, secret(api)))
    assert (status, body["outcome"]) == (200, "ignored")
    payload = stripe_event("payment_intent.succeeded",
                           {"id": new_id("pi"), "object": "payment_intent", "metadata": {}})
    status, body = await deliver(api, payload, stripe_signature(payload, secret(api)))
    assert (status, body["outcome"]) == (200, "unmatched")


async def test_signed_but_malformed_events_are_400(api: Api) -> None:
    for payload in (b"[]", b"not json", json.dumps({"type": "x"}).encode(),
                    json.dumps({"id": "evt_1", "type": "payment_intent.succeeded",
                                "data": {}}).encode()):
        status, body = await deliver(api, payload, stripe_signature(payload, secret(api)))
        assert status == 400, payload
        assert body["error"]["param"] == "body"


async def test_refund_events_move_refunds(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    from tests.integration.api.api_helpers import succeed_payment

    _, payment, _ = await api.create_payment(merchant.api_key, payment_body(amount=3000))
    await succeed_payment(api, payment["id"])
    refund_ids = []
    for amount in (1000, 1000):
        resp = await api.client.post(
            "/v1/refunds", data=json.dumps({"payment": payment["id"], "amount": amount}),
            headers=api.headers(merchant.api_key))
        assert resp.status == 201
        refund_ids.append((await resp.json())["id"])

    ok = {"id": new_id("re"), "object": "refund", "status": "succeeded",
          "metadata": {"refund_id": refund_ids[0]}}
    failed = {"id": new_id("re"), "object": "refund", "status": "failed",
              "failure_reason": "expired_or_canceled_card",
              "metadata": {"refund_id": refund_ids[1]}}
    for kind, obj, expected in [("refund.updated", ok, "applied"),
                                ("refund.failed", failed, "applied"),
                                ("refund.updated", {**ok, "status": "pending"}, "noop"),
                                ("charge.refund.updated", {**failed, "status": "succeeded"},
                                 "noop")]:
        payload = stripe_event(kind, obj)
        status, body = await deliver(api, payload, stripe_signature(payload, secret(api)))
        assert (status, body["outcome"]) == (200, expected), (kind, obj)
    cur = await db.execute(
        "SELECT id, status, failure_code FROM refunds WHERE payment_id = %s ORDER BY id",
        (payment["id"],))
    rows = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
    assert rows == {refund_ids[0]: ("succeeded", None),
                    refund_ids[1]: ("failed", "expired_or_canceled_card")}
