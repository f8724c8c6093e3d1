"""How much of a payment may still be refunded, and whether a refund request fits."""

from __future__ import annotations

from .errors import DomainError, ValidationError
from .money import parse_amount
from .status import PaymentStatus


def refundable_amount(captured: int, already_refunded: int) -> int:
    """What is left to refund of a captured amount."""
    if captured < 0 or already_refunded < 0 or already_refunded > captured:
        # Stored totals that break this are corrupt data, not a bad request.
        raise DomainError(
            f"inconsistent refund totals: captured={captured}, refunded={already_refunded}"
        )
    return captured - already_refunded


def check_refund(
    amount: int | None,
    *,
    captured: int,
    already_refunded: int,
    payment_status: PaymentStatus,
) -> int:
    """The amount to refund (default: all that is left), or ValidationError."""
    if payment_status is not PaymentStatus.SUCCEEDED:
        raise ValidationError(
            f"Payment is {payment_status.value}; only succeeded payments can be refunded.",
            param="payment",
            code="charge_not_refundable",
        )
    rest = refundable_amount(captured, already_refunded)
    if rest == 0:
        raise ValidationError(
            "Payment has already been refunded in full.",
            param="payment",
            code="charge_already_refunded",
        )
    if amount is None:
        return rest
    requested = parse_amount(amount)
    if requested > rest:
        raise ValidationError(
            f"Refund amount ({requested}) is greater than the unrefunded amount ({rest}).",
            param="amount",
            code="amount_too_large",
        )
    return requested
