"""The webhook dispatcher: claims due deliveries, posts them, retries with back-off, gives up.

``idp webhooks run`` runs ``Dispatcher.run`` (a loop; ``--once`` is one ``run_once``). Any number
may run against one database: each claims one delivery at a time (``WebhookOutbox.claim``).

Retries: after a failed attempt the next is due ``RETRY_DELAYS[attempt - 1]`` later, plus up to
a fifth more at random (jitter, so that a receiver coming back is not hit by every delivery at
once): 30 s, 2 min, 10 min, 1 h, 6 h. The sixth failure marks the delivery ``failed``;
``idp webhooks retry`` puts a failed one back.

Each round first deletes the deliveries delivered more than ``DELIVERED_RETENTION`` ago; failed
ones stay until an operator retries them.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from idp.clock import Clock
from idp.webhooks.delivery import Message, Sender, payload, sign
from idp.webhooks.outbox import Claimed, WebhookOutbox
from idp.webhooks.registry import WebhookRegistry, secret_key

if TYPE_CHECKING:
    from idp.ops.metrics import WebhookOutcome

__all__ = ["DELIVERED_RETENTION", "RETRY_DELAYS", "Dispatcher", "Tally", "jittered"]

log = logging.getLogger("idp.webhooks")

RETRY_DELAYS = (
    timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10), timedelta(hours=1), timedelta(hours=6),
)
"""The wait after each failed attempt; after the last one fails too, the delivery has failed."""
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
JITTER_FRACTION = 5
"""Up to 1/5 of the delay is added at random."""
DELIVERED_RETENTION = timedelta(days=30)
"""How long a delivered event's row is kept (for ``webhook-id`` questions from an RP) before a round deletes it."""


def jittered(delay: timedelta) -> timedelta:
    """``delay`` plus up to a fifth of it, at random (to the millisecond)."""
    spread = int(delay.total_seconds() * 1000) // JITTER_FRACTION
    return delay + timedelta(milliseconds=secrets.randbelow(spread + 1))


@dataclass(slots=True)
class Tally:
    """What one ``run_once`` did."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    purged: int = 0
    """Delivered rows older than ``DELIVERED_RETENTION``, deleted."""


class Dispatcher:
    """Delivers the outbox's due events to the clients' webhooks."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        outbox: WebhookOutbox,
        sender: Sender,
        clock: Clock,
        jitter: Callable[[timedelta], timedelta] = jittered,
    ) -> None:
        self._webhooks = WebhookRegistry(sessions)
        self._outbox = outbox
        self._sender = sender
        self._clock = clock
        self._jitter = jitter

    def __repr__(self) -> str:
        return f"Dispatcher({self._sender!r})"

    def run_once(self, *, limit: int = 1000) -> Tally:
        """Deliver what is due now, one delivery at a time, at most ``limit`` attempts."""
        tally = Tally(purged=self._outbox.purge_delivered(before=self._clock.now() - DELIVERED_RETENTION))
        for _ in range(limit):
            claimed = self._outbox.claim(now=self._clock.now())
            if not claimed:
                break
            for delivery in claimed:
                self._attempt(delivery, tally)
        return tally

    def run(self, *, interval: timedelta, stop: threading.Event) -> None:
        """``run_once`` every ``interval`` until ``stop`` is set; a failed round is logged, not fatal."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - the database is down: try again next round
                log.warning("webhook.dispatch_failed error=%s", type(exc).__name__)
            stop.wait(interval.total_seconds())

    def _attempt(self, claimed: Claimed, tally: Tally) -> None:
        kind = f"signing.{claimed.event.value}"
        webhook = self._webhooks.get(claimed.client_id)
        if webhook is None:  # removed (or its client removed) since the request was pushed
            self._outbox.failed(claimed, error="no_webhook", now=self._clock.now())
            log.warning("webhook.failed delivery=%s client=%s type=%s attempts=%d reason=no_webhook",
                        claimed.delivery_id, claimed.client_id, kind, claimed.attempt)
            _count("failed")
            tally.failed += 1
            return
        body = payload(claimed)
        headers = sign(key=secret_key(webhook.secret), message_id=claimed.delivery_id,
                       timestamp=self._clock.now(), body=body)
        result = self._sender.send(Message(url=webhook.url, body=body, headers=headers))
        now = self._clock.now()
        if result.delivered:
            self._outbox.delivered(claimed, now=now)
            log.info("webhook.delivered delivery=%s client=%s type=%s attempt=%d status=%d",
                     claimed.delivery_id, claimed.client_id, kind, claimed.attempt, result.status)
            _count("delivered")
            tally.delivered += 1
        elif claimed.attempt >= MAX_ATTEMPTS:
            self._outbox.failed(claimed, error=result.reason, now=now)
            log.warning("webhook.failed delivery=%s client=%s type=%s attempts=%d reason=%s",
                        claimed.delivery_id, claimed.client_id, kind, claimed.attempt, result.reason)
            _count("failed")
            tally.failed += 1
        else:
            delay = self._jitter(RETRY_DELAYS[claimed.attempt - 1])
            self._outbox.retry(claimed, at=now + delay, error=result.reason, now=now)
            log.info("webhook.retrying delivery=%s client=%s type=%s attempt=%d reason=%s next_in=%ds",
                     claimed.delivery_id, claimed.client_id, kind, claimed.attempt, result.reason,
                     int(delay.total_seconds()))
            _count("retrying")
            tally.retrying += 1


def _count(outcome: WebhookOutcome) -> None:
    """Count a delivery attempt. prometheus_client is imported here, not with this module: the
    portal imports the webhook registry (``idp.oidc.clients``) before gunicorn's configuration has
    named the metrics directory, and prometheus_client picks its kind of values when first imported."""
    from idp.ops import metrics  # noqa: PLC0415

    metrics.webhook_delivery(outcome)
