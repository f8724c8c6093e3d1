"""Merchant credentials: the API key is shown once and stored only as its sha256."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from paystream.domain.ids import new_id

INSERT_MERCHANT = (
    "INSERT INTO merchants (id, name, api_key_hash, webhook_url, webhook_secret) "
    "VALUES (%(id)s, %(name)s, %(api_key_hash)s, %(webhook_url)s, %(webhook_secret)s)"
)


def hash_api_key(api_key: str) -> str:
    """What the merchants table stores and looks keys up by."""
    # surrogateescape: a header with odd bytes still hashes (to nothing we know).
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()


def check_webhook_url(url: str | None) -> str | None:
    """The URL if it is an absolute http(s) URL, else ValueError."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"webhook URL must be an absolute http(s) URL, got {url!r}")
    return url


@dataclass(frozen=True)
class NewMerchant:
    """Fresh credentials for a merchant; ``api_key`` exists only in this object."""

    name: str
    webhook_url: str | None = None
    id: str = field(default_factory=lambda: new_id("acct"))
    api_key: str = field(default_factory=lambda: new_id("sk"), repr=False)
    webhook_secret: str = field(default_factory=lambda: new_id("whsec"), repr=False)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("merchant name must not be empty")
        check_webhook_url(self.webhook_url)

    def row(self) -> dict[str, str | None]:
        """Parameters for INSERT_MERCHANT (hash, not key)."""
        return {
            "id": self.id,
            "name": self.name,
            "api_key_hash": hash_api_key(self.api_key),
            "webhook_url": self.webhook_url,
            "webhook_secret": self.webhook_secret,
        }

    def credentials(self) -> dict[str, str]:
        """What `paystream merchant create` prints."""
        return {"id": self.id, "api_key": self.api_key, "webhook_secret": self.webhook_secret}
