"""Each client's webhook: its URL, checked like a redirect URI, and a secret made here.

The operator sets a webhook with ``idp clients add --webhook-url`` or ``idp clients webhook``;
every change makes a new secret (Standard Webhooks format, ``whsec_`` and the base64 of 32 random
bytes), printed once. The portal keeps the secret itself, since an HMAC key cannot be hashed.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from idp.urls import UnacceptableUrl, check_tls_url
from idp.webhooks.records import ClientWebhook

__all__ = [
    "MAX_URL_LENGTH",
    "SECRET_PREFIX",
    "InvalidWebhookUrl",
    "WebhookRegistry",
    "check_webhook_url",
    "new_secret",
    "secret_key",
]

MAX_URL_LENGTH = 2000
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
"""Standard Webhooks: a secret is shown with this prefix; the key is the base64 after it."""
_SECRET_BYTES = 32
"""Standard Webhooks: secrets are between 24 and 64 bytes."""


class InvalidWebhookUrl(ValueError):
    """The webhook URL is unacceptable; the message says what to fix."""


def check_webhook_url(url: str) -> str:
    """The URL, if it follows the portal's rule for URLs it sends to (``idp.urls.check_tls_url``:
    https, or http on a loopback host; no fragment or user information). Raises InvalidWebhookUrl."""
    if isinstance(url, str) and len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"the webhook URL must be at most {MAX_URL_LENGTH} characters")
    try:
        return check_tls_url(url, noun="URL")
    except UnacceptableUrl as exc:
        raise InvalidWebhookUrl(str(exc)) from None


def new_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret made by ``new_secret``."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


class WebhookRegistry:
    """Sets, reads and removes clients' webhooks; each method is one short transaction."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __repr__(self) -> str:
        return "WebhookRegistry()"

    def set(self, client_id: str, url: str, *, now: datetime) -> str | None:
        """Give the client ``url`` and a new secret (replacing any); the secret, or None when
        there is no such client. Raises InvalidWebhookUrl, having written nothing."""
        checked = check_webhook_url(url)
        secret = new_secret()
        with self._sessions.begin() as session:
            if not _client_exists(session, client_id):
                return None
            put_in(session, client_id, checked, secret, now=now)
        return secret

    def remove(self, client_id: str) -> bool:
        """Remove the client's webhook; False when it had none."""
        with self._sessions.begin() as session:
            removed = session.execute(
                delete(ClientWebhook).where(ClientWebhook.client_id == client_id).returning(ClientWebhook.client_id),
            ).first()
        return removed is not None

    def get(self, client_id: str) -> ClientWebhook | None:
        """The client's webhook (URL and secret), or None."""
        with self._sessions() as session:
            return session.get(ClientWebhook, client_id)

    def urls(self) -> dict[str, str]:
        """Every client's webhook URL, by client id (no secrets)."""
        with self._sessions() as session:
            found = session.execute(select(ClientWebhook.client_id, ClientWebhook.url))
            return {row.client_id: row.url for row in found}


def put_in(session: Session, client_id: str, url: str, secret: str, *, now: datetime) -> None:
    """Store the client's webhook in ``session``'s transaction (the registration's, or ``set``'s).

    ``url`` must have passed ``check_webhook_url``.
    """
    existing = session.get(ClientWebhook, client_id)
    if existing is None:
        session.add(ClientWebhook(client_id=client_id, url=url, secret=secret, created_at=now))
        return
    existing.url, existing.secret, existing.created_at = url, secret, now


def _client_exists(session: Session, client_id: str) -> bool:
    from idp.oidc.records import Client  # noqa: PLC0415 - the registry's table, read by name only here

    return session.get(Client, client_id) is not None
