"""Operator credentials for the console: a key shown once, stored as its sha256, revocable.

Operator keys live in their own table (db/migrations/008_operators.sql), so a
merchant key, however valid, is never an operator's. Keys are made and hashed
exactly as merchant keys are (api/merchants.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from api.merchants import hash_api_key
from paystream.domain.ids import new_id

ID_PREFIX = "op"
KEY_PREFIX = "opk"

INSERT_OPERATOR = (
    "INSERT INTO operators (id, name, key_hash) VALUES (%(id)s, %(name)s, %(key_hash)s)"
)
LIST_OPERATORS = (
    "SELECT id, name, created_at, revoked_at FROM operators ORDER BY created_at, id"
)
# By id or by name: names are unique among active operators, and no name looks like an id.
REVOKE_OPERATOR = (
    "UPDATE operators SET revoked_at = now() "
    "WHERE revoked_at IS NULL AND (id = %(who)s OR name = %(who)s) RETURNING id, name"
)
# A revoked operator's logins end with the key (the lookups check revoked_at too).
END_SESSIONS = "DELETE FROM operator_sessions WHERE operator_id = %(id)s"

BY_KEY = "SELECT id, name FROM operators WHERE key_hash = %s AND revoked_at IS NULL"
BY_SESSION = (
    "SELECT o.id, o.name FROM operator_sessions s JOIN operators o ON o.id = s.operator_id "
    "WHERE s.id_hash = %s AND s.expires_at > now() AND o.revoked_at IS NULL"
)
START_SESSION = (
    "INSERT INTO operator_sessions (id_hash, operator_id, expires_at) "
    "VALUES (%(id_hash)s, %(operator_id)s, now() + make_interval(secs => %(seconds)s))"
)
END_SESSION = "DELETE FROM operator_sessions WHERE id_hash = %s"
# Run at each login, so expired sessions never pile up.
FORGET_EXPIRED_SESSIONS = "DELETE FROM operator_sessions WHERE expires_at <= now()"


@dataclass(frozen=True)
class NewOperator:
    """Fresh credentials for an operator; ``key`` exists only in this object."""

    name: str
    id: str = field(default_factory=lambda: new_id(ID_PREFIX))
    key: str = field(default_factory=lambda: new_id(KEY_PREFIX), repr=False)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("operator name must not be empty")
        if self.name.startswith(f"{ID_PREFIX}_"):
            # `operator revoke` takes an id or a name: the two must never be confused.
            raise ValueError(f"operator name must not start with {ID_PREFIX}_")

    def row(self) -> dict[str, str]:
        """Parameters for INSERT_OPERATOR (hash, not key)."""
        return {"id": self.id, "name": self.name, "key_hash": hash_api_key(self.key)}

    def credentials(self) -> dict[str, str]:
        """What `paystream operator create` prints."""
        return {"id": self.id, "name": self.name, "operator_key": self.key}
