"""Durable webhook records: each client's webhook, and the outbox of signing events to announce.

``client_webhooks`` holds at most one webhook per client: its URL and the shared secret the
portal signs with (HMAC needs the secret itself, so it is stored as it is, like every key the
portal signs with; it is printed once, when it is made). Removing the client removes it.

``webhook_deliveries`` is the outbox (docs/signing.md, "Webhooks"): one row per signing request
of a client with a webhook, written when the request is pushed, as an ``expired`` event due when
the request can no longer complete; completion or decline turns that same row into ``completed``
or ``declined``, due at once, with a conditional UPDATE, so a request is announced exactly once.
The dispatcher claims due rows (``sending``, with a lease), posts them, and marks them
``delivered``, ``pending`` again for a retry, or ``failed``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.store.database import Base

__all__ = ["ClientWebhook", "DeliveryStatus", "WebhookDelivery", "WebhookEvent"]


class WebhookEvent(enum.StrEnum):
    """What happened to a signing request; the payload's ``type`` is ``signing.<event>``."""

    COMPLETED = "completed"
    DECLINED = "declined"
    EXPIRED = "expired"


class DeliveryStatus(enum.StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"
    """Waiting for ``due_at``: the request's end (an ``expired`` event still open) or the next attempt."""
    SENDING = "sending"
    """Claimed by a dispatcher until ``due_at``; after that lease another dispatcher may claim it."""
    DELIVERED = "delivered"
    FAILED = "failed"
    """Every attempt failed, or the client no longer has a webhook."""


def _in(column: str, values: type[enum.StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(member.value) for member in values)})"


class ClientWebhook(Base):
    """A client's webhook: where signing events are posted, and the secret they are signed with."""

    __tablename__ = "client_webhooks"

    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("oidc_clients.client_id", ondelete="CASCADE"), primary_key=True,
    )
    url: Mapped[str] = mapped_column(Text)
    """https, or http on a loopback host; checked by ``idp.webhooks.registry.check_webhook_url``."""
    secret: Mapped[str] = mapped_column(Text)
    """The Standard Webhooks secret, ``whsec_`` and the base64 of 32 random bytes."""
    created_at: Mapped[datetime]
    """When this URL and secret were set (a change or rotation sets it again)."""


class WebhookDelivery(Base):
    """One signing request's announcement to its client's webhook."""

    __tablename__ = "webhook_deliveries"

    delivery_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    """``msg_`` and 32 hex digits; sent as ``webhook-id``, the same on every attempt."""
    request_id: Mapped[str] = mapped_column(String(32))
    """The signing request's random id (``signing_field``), one delivery per request."""
    client_id: Mapped[str] = mapped_column(String(64))
    """No foreign key: a removed client's deliveries stay for the operator, and fail."""
    request_uri: Mapped[str] = mapped_column(Text)
    """The PAR ``request_uri`` the client got back: how it recognises its request."""
    event: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime]
    """When to attempt next; while ``sending``, the end of the claim's lease."""
    expires_at: Mapped[datetime]
    """When the request can no longer complete (request_uri lifetime plus transaction lifetime)."""
    occurred_at: Mapped[datetime]
    """When the event happened: completion or decline, else ``expires_at``."""
    documents: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    """For ``completed``: each document's ``label`` and base64 SHA-256 ``hash``."""
    attempts: Mapped[int] = mapped_column(Integer)
    claim: Mapped[str | None] = mapped_column(String(32))
    """The random token of the dispatcher holding the row; only it records the attempt's outcome."""
    last_error: Mapped[str | None] = mapped_column(String(200))
    """Why the last attempt failed (``timeout``, ``connection``, ``http 500``, ``no_webhook``)."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint(_in("event", WebhookEvent), name="event"),
        CheckConstraint(_in("status", DeliveryStatus), name="status"),
        Index("ix_webhook_deliveries_request_id", "request_id", unique=True),
        Index("ix_webhook_deliveries_status_due_at", "status", "due_at"),
    )
