"""The journal a change event implies: posted by the ledger agent, replayed by ledger rebuild."""

from __future__ import annotations

from paystream.domain import Journal, journal_for_payment, journal_for_refund
from streams.adapters.cdc import Change
from streams.rows import PaymentRow, RefundRow


def journal_for_change(change: Change | None, *, payment: bool) -> Journal | None:
    """The journal of a change that moves a payment (``payment``) or a refund into
    succeeded; None for any other change."""
    if change is None or not change.entered("succeeded"):
        return None
    if payment:
        p = PaymentRow.parse(change.row)
        return journal_for_payment(p.id, p.merchant_id, p.amount, p.currency)
    r = RefundRow.parse(change.row)
    return journal_for_refund(r.id, r.payment_id, r.merchant_id, r.amount, r.currency)
