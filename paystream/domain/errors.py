"""Exceptions raised by the domain.

    DomainError                 a rule of the domain was broken
    ├── ValidationError         bad input; carries a Stripe-style ``param`` and ``code``
    └── InvalidTransition       a status change the state machine does not allow

The API maps these to Stripe-shaped JSON in one middleware; the stream agents
dead-letter them with ``str(error)`` as the reason.
"""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the domain was broken."""


class ValidationError(DomainError):
    """Input that the domain refuses, named by the parameter it came from."""

    def __init__(self, message: str, *, param: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidTransition(DomainError):
    """A move between two statuses that the transition table forbids."""

    def __init__(self, *, entity: str, current: str, target: str) -> None:
        super().__init__(f"{entity} cannot move from {current!s} to {target!s}")
        self.entity = entity
        self.current = current
        self.target = target
