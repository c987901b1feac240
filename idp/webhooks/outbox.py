"""The webhook outbox: one durable row per signing request, turned into exactly one event.

A signing request of a client with a webhook gets its row when it is pushed (``schedule``): an
``expired`` event, due when the request can no longer complete. Completion (``complete``, in the
transaction that stores the results) or decline (``decline``) turns that row into ``completed``
or ``declined``, due at once, with one conditional UPDATE that matches only a row still
``expired``, still ``pending`` (no dispatcher has claimed it) and not yet past its expiry. So of
completion, decline and expiry exactly one wins, on SQLite (one writer) as on PostgreSQL (the
UPDATE waits for a claim's row lock, then re-reads the row); the loser gets ``RequestEnded``,
naming the event that won, and its transaction rolls back: no results are stored for a request
announced as expired or declined.

Dispatchers ``claim`` due rows (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so several run side by
side), post them outside any transaction, and ``record`` the outcome under their claim token.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from idp.webhooks.records import ClientWebhook, DeliveryStatus, WebhookDelivery, WebhookEvent

if TYPE_CHECKING:
    from idp.settings import Settings

__all__ = ["LEASE", "Claimed", "RequestEnded", "WebhookOutbox"]

LEASE = timedelta(seconds=60)
"""How long a claim holds a row: well over one attempt (``delivery.TIMEOUT``, 5 s, a wall-clock
deadline that ``HttpSender`` requires to be shorter than this); then another dispatcher may take
it (the first one crashed)."""


class RequestEnded(Exception):
    """The signing request was already announced as another event; nothing was written."""

    def __init__(self, event: WebhookEvent) -> None:
        super().__init__(event.value)
        self.event = event


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A delivery a dispatcher holds: what to post, and the token to record the outcome with."""

    delivery_id: str
    client_id: str
    request_uri: str
    event: WebhookEvent
    occurred_at: datetime
    documents: tuple[dict[str, str], ...]
    attempt: int
    """1 for the first attempt."""
    claim: str


class WebhookOutbox:
    """The ``webhook_deliveries`` rows: written with the signing flow, read by the dispatchers."""

    def __init__(self, sessions: sessionmaker[Session], *, request_lifetime: timedelta) -> None:
        """``request_lifetime``: from the push to when the request can no longer complete."""
        self._sessions = sessions
        self._lifetime = request_lifetime

    @classmethod
    def of(cls, sessions: sessionmaker[Session], settings: Settings) -> WebhookOutbox:
        """The outbox of a portal: a pushed request can complete until its request_uri and then its
        login transaction have run out."""
        return cls(sessions, request_lifetime=settings.oidc.request_uri_ttl + settings.login.transaction_ttl)

    def __repr__(self) -> str:
        return f"WebhookOutbox(request_lifetime={self._lifetime})"

    def schedule(self, *, request_id: str, client_id: str, request_uri: str, now: datetime) -> bool:
        """At the push: an ``expired`` event due at the request's end, if the client has a webhook.

        Whether a row was written.
        """
        expires_at = now + self._lifetime
        with self._sessions.begin() as session:
            if session.get(ClientWebhook, client_id) is None:
                return False
            session.add(WebhookDelivery(
                delivery_id="msg_" + secrets.token_hex(16), request_id=request_id, client_id=client_id,
                request_uri=request_uri, event=WebhookEvent.EXPIRED.value, status=DeliveryStatus.PENDING.value,
                due_at=expires_at, expires_at=expires_at, occurred_at=expires_at, documents=None, attempts=0,
                claim=None, last_error=None, created_at=now, updated_at=now,
            ))
        return True

    def complete(
        self, session: Session, *, request_id: str, client_id: str, documents: Sequence[dict[str, str]],
        now: datetime, deadline: datetime | None = None,
    ) -> None:
        """In the results' transaction: announce the request as ``completed``, due now.

        ``documents``: each one's ``label`` and base64 SHA-256 ``hash``; ``deadline``: the end of
        the login transaction, when it comes before the request's (a completion after it could
        never be redeemed). Raises RequestEnded when the request was already announced otherwise,
        or is past ``deadline`` (the caller's transaction must roll back).
        """
        self._settle(session, request_id=request_id, client_id=client_id, event=WebhookEvent.COMPLETED,
                     documents=[dict(document) for document in documents], now=now, deadline=deadline)

    def decline(self, *, request_id: str, client_id: str, now: datetime) -> None:
        """The user declined: announce the request as ``declined``, due now. Raises RequestEnded."""
        with self._sessions.begin() as session:
            self._settle(session, request_id=request_id, client_id=client_id, event=WebhookEvent.DECLINED,
                         documents=None, now=now)

    def _settle(
        self, session: Session, *, request_id: str, client_id: str, event: WebhookEvent,
        documents: list[dict[str, str]] | None, now: datetime, deadline: datetime | None = None,
    ) -> None:
        if deadline is not None and now >= deadline:  # the row stays: it will be announced as expired
            if self._exists(session, request_id=request_id, client_id=client_id):
                raise RequestEnded(WebhookEvent.EXPIRED)
            return
        settled = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.request_id == request_id, WebhookDelivery.client_id == client_id,
                   WebhookDelivery.event == WebhookEvent.EXPIRED.value,
                   WebhookDelivery.status == DeliveryStatus.PENDING.value,
                   WebhookDelivery.expires_at > now)
            .values(event=event.value, due_at=now, occurred_at=now, documents=documents, updated_at=now),
        )
        if settled.rowcount:  # type: ignore[attr-defined] # a CursorResult for an UPDATE
            return
        won = session.scalar(select(WebhookDelivery.event).where(
            WebhookDelivery.request_id == request_id, WebhookDelivery.client_id == client_id,
        ))
        if won is not None:  # no row: the client had no webhook when the request was pushed
            raise RequestEnded(WebhookEvent(won))

    @staticmethod
    def _exists(session: Session, *, request_id: str, client_id: str) -> bool:
        return session.scalar(select(WebhookDelivery.delivery_id).where(
            WebhookDelivery.request_id == request_id, WebhookDelivery.client_id == client_id,
        )) is not None

    def claim(self, *, now: datetime, limit: int = 1) -> list[Claimed]:
        """Take up to ``limit`` due deliveries for ``LEASE``: pending ones whose time has come, and
        claims whose lease ran out. Each claim counts as an attempt."""
        token = secrets.token_hex(16)
        with self._sessions.begin() as session:
            rows = session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.status.in_((DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value)),
                       WebhookDelivery.due_at <= now)
                .order_by(WebhookDelivery.due_at)
                .limit(limit)
                .with_for_update(skip_locked=True),  # PostgreSQL; SQLite has one writer at a time
            ).all()
            for row in rows:
                row.status, row.claim, row.due_at = DeliveryStatus.SENDING.value, token, now + LEASE
                row.attempts += 1
                row.updated_at = now
            return [
                Claimed(delivery_id=row.delivery_id, client_id=row.client_id, request_uri=row.request_uri,
                        event=WebhookEvent(row.event), occurred_at=row.occurred_at,
                        documents=tuple(row.documents or ()), attempt=row.attempts, claim=token)
                for row in rows
            ]

    def delivered(self, claimed: Claimed, *, now: datetime) -> bool:
        """Mark a claimed delivery delivered; False if the claim was lost (its lease ran out)."""
        return self._record(claimed, status=DeliveryStatus.DELIVERED, due_at=now, error=None, now=now)

    def retry(self, claimed: Claimed, *, at: datetime, error: str, now: datetime) -> bool:
        """Put a claimed delivery back, due ``at``; False if the claim was lost."""
        return self._record(claimed, status=DeliveryStatus.PENDING, due_at=at, error=error, now=now)

    def failed(self, claimed: Claimed, *, error: str, now: datetime) -> bool:
        """Give a claimed delivery up; False if the claim was lost."""
        return self._record(claimed, status=DeliveryStatus.FAILED, due_at=now, error=error, now=now)

    def _record(
        self, claimed: Claimed, *, status: DeliveryStatus, due_at: datetime, error: str | None, now: datetime,
    ) -> bool:
        with self._sessions.begin() as session:
            result = session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.delivery_id == claimed.delivery_id, WebhookDelivery.claim == claimed.claim,
                       WebhookDelivery.status == DeliveryStatus.SENDING.value)
                .values(status=status.value, due_at=due_at, claim=None,
                        last_error=None if error is None else error[:200], updated_at=now),
            )
            return bool(result.rowcount)  # type: ignore[attr-defined] # a CursorResult for an UPDATE

    def purge_delivered(self, *, before: datetime) -> int:
        """Delete the deliveries delivered before ``before``; how many. Undelivered rows stay."""
        with self._sessions.begin() as session:
            result = session.execute(
                delete(WebhookDelivery)
                # a delivered row's due_at is when it was delivered: the (status, due_at) index finds them
                .where(WebhookDelivery.status == DeliveryStatus.DELIVERED.value, WebhookDelivery.due_at < before),
            )
            return int(result.rowcount)  # type: ignore[attr-defined] # a CursorResult for a DELETE

    def requeue(self, delivery_id: str, *, now: datetime) -> bool:
        """An operator retries a failed delivery now, with a fresh schedule; False if it is not failed."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.delivery_id == delivery_id,
                       WebhookDelivery.status == DeliveryStatus.FAILED.value)
                .values(status=DeliveryStatus.PENDING.value, due_at=now, attempts=0, updated_at=now),
            )
            return bool(result.rowcount)  # type: ignore[attr-defined] # a CursorResult for an UPDATE

    def undelivered(self) -> list[dict[str, Any]]:
        """Every delivery not yet delivered (pending, sending, failed), oldest due first; no secret."""
        with self._sessions() as session:
            rows = session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.status != DeliveryStatus.DELIVERED.value)
                .order_by(WebhookDelivery.due_at, WebhookDelivery.delivery_id),
            ).all()
            return [
                {"delivery_id": row.delivery_id, "client_id": row.client_id, "type": f"signing.{row.event}",
                 "status": row.status, "attempts": row.attempts, "due_at": row.due_at.isoformat(),
                 "last_error": row.last_error}
                for row in rows
            ]
