"""State machine tables, transition checks, the SQL guard and Stripe status mapping."""

from __future__ import annotations

import pytest

from paystream.domain.errors import InvalidTransition, ValidationError
from paystream.domain.status import (
    PAYMENT_TRANSITIONS,
    REFUND_TRANSITIONS,
    PaymentStatus,
    RefundStatus,
    allowed_predecessors,
    check_transition,
    guard_params,
    guarded_update_sql,
    map_stripe_payment_intent_status,
    map_stripe_refund_status,
    predecessors_for,
)

P = PaymentStatus
R = RefundStatus

TERMINAL_PAYMENTS = {P.SUCCEEDED, P.FAILED, P.CANCELED, P.BLOCKED}
TERMINAL_REFUNDS = {R.SUCCEEDED, R.FAILED}


@pytest.mark.parametrize("status", list(PaymentStatus))
def test_every_payment_status_is_classified(status: PaymentStatus) -> None:
    # A new member the property forgets returns None instead of a bool.
    assert status.is_terminal is (status in TERMINAL_PAYMENTS)
    assert status in PAYMENT_TRANSITIONS


@pytest.mark.parametrize("status", list(RefundStatus))
def test_every_refund_status_is_classified(status: RefundStatus) -> None:
    assert status.is_terminal is (status in TERMINAL_REFUNDS)
    assert status in REFUND_TRANSITIONS


def test_tables_name_exactly_the_enum_members() -> None:
    assert set(PAYMENT_TRANSITIONS) == set(PaymentStatus)
    assert set(REFUND_TRANSITIONS) == set(RefundStatus)
    for targets in PAYMENT_TRANSITIONS.values():
        assert all(isinstance(t, PaymentStatus) for t in targets)
    for refund_targets in REFUND_TRANSITIONS.values():
        assert all(isinstance(t, RefundStatus) for t in refund_targets)


def test_terminal_means_no_way_out() -> None:
    for status, targets in PAYMENT_TRANSITIONS.items():
        assert (not targets) is status.is_terminal, status
    for refund_status, refund_targets in REFUND_TRANSITIONS.items():
        assert (not refund_targets) is refund_status.is_terminal, refund_status


def test_no_status_moves_to_itself() -> None:
    for status, targets in PAYMENT_TRANSITIONS.items():
        assert status not in targets
    for refund_status, refund_targets in REFUND_TRANSITIONS.items():
        assert refund_status not in refund_targets


def test_payment_transitions() -> None:
    assert PAYMENT_TRANSITIONS[P.PENDING] == {
        P.PROCESSING,
        P.REQUIRES_ACTION,
        P.SUCCEEDED,
        P.FAILED,
        P.CANCELED,
        P.BLOCKED,
    }
    assert PAYMENT_TRANSITIONS[P.PROCESSING] == {
        P.REQUIRES_ACTION,
        P.SUCCEEDED,
        P.FAILED,
        P.CANCELED,
    }
    assert PAYMENT_TRANSITIONS[P.REQUIRES_ACTION] == {
        P.PROCESSING,
        P.SUCCEEDED,
        P.FAILED,
        P.CANCELED,
    }


def test_tables_cannot_be_mutated() -> None:
    with pytest.raises(TypeError):
        PAYMENT_TRANSITIONS[P.SUCCEEDED] = frozenset({P.FAILED})  # type: ignore[index]


def test_check_transition_raises_with_context() -> None:
    check_transition(P.PROCESSING, P.SUCCEEDED)
    with pytest.raises(InvalidTransition) as caught:
        check_transition(P.SUCCEEDED, P.FAILED)
    assert (caught.value.entity, caught.value.current, caught.value.target) == (
        "payment",
        "succeeded",
        "failed",
    )
    assert str(caught.value) == "payment cannot move from succeeded to failed"
    with pytest.raises(InvalidTransition) as refund_caught:
        check_transition(R.SUCCEEDED, R.PENDING)
    assert refund_caught.value.entity == "refund"


def test_mixing_payment_and_refund_statuses_is_a_bug() -> None:
    # The two enums share string values, so a silent comparison would pass.
    with pytest.raises(TypeError):
        check_transition(P.PENDING, R.SUCCEEDED)  # type: ignore[call-overload]


def test_predecessors_are_sorted_and_derived_from_the_table() -> None:
    assert allowed_predecessors(P.SUCCEEDED) == (P.PENDING, P.PROCESSING, P.REQUIRES_ACTION)
    assert allowed_predecessors(P.BLOCKED) == (P.PENDING,)
    assert allowed_predecessors(P.PENDING) == ()
    assert allowed_predecessors(R.FAILED) == (R.PENDING,)
    assert predecessors_for(P.PROCESSING) == ["pending", "requires_action"]
    for target in PaymentStatus:
        assert predecessors_for(target) == sorted(
            s.value for s in PaymentStatus if target in PAYMENT_TRANSITIONS[s]
        )


def test_guarded_update_sql() -> None:
    sql = guarded_update_sql("payments", P.SUCCEEDED, ["stripe_payment_intent_id", "last_error"])
    assert sql == (
        "UPDATE payments SET status = %(status)s, "
        "stripe_payment_intent_id = %(stripe_payment_intent_id)s, "
        "last_error = %(last_error)s, updated_at = now() "
        "WHERE id = %(id)s AND status = ANY(%(allowed)s) RETURNING *"
    )
    assert guarded_update_sql("refunds", R.FAILED, ()) == (
        "UPDATE refunds SET status = %(status)s, updated_at = now() "
        "WHERE id = %(id)s AND status = ANY(%(allowed)s) RETURNING *"
    )


def test_guard_params() -> None:
    assert guard_params(P.SUCCEEDED) == {
        "status": "succeeded",
        "allowed": ["pending", "processing", "requires_action"],
    }
    assert guard_params(R.SUCCEEDED) == {"status": "succeeded", "allowed": ["pending"]}


@pytest.mark.parametrize(
    "table",
    [
        "payments; DROP TABLE payments",
        "Payments",
        "public.payments",
        "1payments",
        "pay ments",
        "payments\n",
        "",
        "payments--",
    ],
)
def test_guard_rejects_bad_table_names(table: str) -> None:
    with pytest.raises(ValueError):
        guarded_update_sql(table, P.SUCCEEDED, [])


@pytest.mark.parametrize(
    "column",
    [
        "x = 1, status",
        "amount; --",
        "Amount",
        "a b",
        "col\n",
        "",
        "status",
        "id",
        "updated_at",
        "allowed",
    ],
)
def test_guard_rejects_bad_or_reserved_columns(column: str) -> None:
    with pytest.raises(ValueError):
        guarded_update_sql("payments", P.SUCCEEDED, [column])


def test_guard_rejects_a_bare_string_duplicates_and_unreachable_targets() -> None:
    with pytest.raises(TypeError):
        guarded_update_sql("payments", P.SUCCEEDED, "stripe_id")
    with pytest.raises(ValueError):
        guarded_update_sql("payments", P.SUCCEEDED, ["stripe_id", "stripe_id"])
    with pytest.raises(ValueError):
        guarded_update_sql("payments", P.PENDING, [])


@pytest.mark.parametrize(
    ("stripe", "ours"),
    [
        ("requires_payment_method", P.FAILED),
        ("requires_confirmation", P.PROCESSING),
        ("processing", P.PROCESSING),
        ("requires_action", P.REQUIRES_ACTION),
        ("requires_capture", P.PROCESSING),
        ("succeeded", P.SUCCEEDED),
        ("canceled", P.CANCELED),
    ],
)
def test_map_stripe_payment_intent_status(stripe: str, ours: PaymentStatus) -> None:
    assert map_stripe_payment_intent_status(stripe) is ours


@pytest.mark.parametrize(
    ("stripe", "ours"),
    [
        ("pending", R.PENDING),
        ("requires_action", R.PENDING),
        ("succeeded", R.SUCCEEDED),
        ("failed", R.FAILED),
        ("canceled", R.FAILED),
    ],
)
def test_map_stripe_refund_status(stripe: str, ours: RefundStatus) -> None:
    assert map_stripe_refund_status(stripe) is ours


@pytest.mark.parametrize("bad", ["SUCCEEDED", "blocked", "", None])
def test_unknown_stripe_status_is_a_validation_error(bad: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        map_stripe_payment_intent_status(bad)  # type: ignore[arg-type]
    assert caught.value.code == "unknown_stripe_status"
    with pytest.raises(ValidationError):
        map_stripe_refund_status(bad)  # type: ignore[arg-type]
