"""The payment and refund objects merchants see, in one shape for the API and the webhooks.

A merchant gets the same object from ``GET /v1/payments/{id}`` as in the
``data.object`` of a merchant event, so both are rendered here, from a row's
columns with ``created`` in whole unix seconds (other keys are ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .status import PaymentStatus, RefundStatus


def payment_object(row: Mapping[str, Any], *, as_created: bool = False) -> dict[str, Any]:
    """The payment object.

    ``as_created`` renders it as the create call first answered it (an
    idempotent replay repeats that answer even if the workers have moved it on).
    """
    obj = {
        "id": row["id"],
        "object": "payment",
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "customer": row["customer"],
        "payment_method": row["payment_method"],
        "description": row["description"],
        "metadata": row["metadata"] or {},
        "amount_refunded": row["amount_refunded"],
        "failure_code": row["failure_code"],
        "failure_message": row["failure_message"],
        "created": row["created"],
    }
    if as_created:
        obj.update(status=PaymentStatus.PENDING.value, amount_refunded=0, failure_code=None,
                   failure_message=None)
    return obj


def refund_object(row: Mapping[str, Any], *, as_created: bool = False) -> dict[str, Any]:
    """The refund object; ``as_created`` as the create call first answered it."""
    obj = {
        "id": row["id"],
        "object": "refund",
        "amount": row["amount"],
        "currency": row["currency"],
        "payment": row["payment_id"],
        "status": row["status"],
        "failure_code": row["failure_code"],
        "failure_message": row["failure_message"],
        "created": row["created"],
    }
    if as_created:
        obj.update(status=RefundStatus.PENDING.value, failure_code=None, failure_message=None)
    return obj
