"""Prometheus metrics: what the portal counts, and the small typed API the rest of it counts with.

Modules that do a ceremony step call one function here next to their event's log line
(``metrics.ceremony_rejected(reason.value)`` beside ``login.rejected reason=...``); nothing else
touches prometheus_client. Label values are enum values or fixed words, never anything a request
chose, so every metric has a bounded number of series. Counting is always on and costs about a
microsecond; the ``ops.metrics`` setting switches the per-request timing and ``/metrics`` itself.

Under gunicorn the workers share their values through prometheus_client's multiprocess mode:
``config/gunicorn.conf.py`` gives them ``PROMETHEUS_MULTIPROC_DIR`` before this module is first
imported, and ``exposition`` then sums every worker's files. Without it (tests, one process) the
values are this process's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from idp.ops.health import CrlState

__all__ = [
    "CONTENT_TYPE",
    "CeremonyKind",
    "JlisCrlCollector",
    "ceremony_completed",
    "ceremony_rejected",
    "ceremony_started",
    "dependency_unavailable",
    "enrollment_completed",
    "exposition",
    "observe_request",
    "rate_limited",
    "signature_created",
    "token_granted",
    "token_rejected",
    "webhook_delivery",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

CeremonyKind = Literal["login", "enrollment", "signing"]
Outcome = Literal["approved", "declined"]
WebhookOutcome = Literal["delivered", "retrying", "failed"]

disable_created_metrics()  # type: ignore[no-untyped-call] # the *_created series double what is exposed and tell an operator nothing

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's metrics, exposed as they are when there is no multiprocess directory."""

_CEREMONIES_STARTED = Counter(
    "myna_ceremonies_started", "Ceremonies started: login pages shown, enrollments begun.",
    ["kind"], registry=REGISTRY,
)
_CEREMONIES_COMPLETED = Counter(
    "myna_ceremonies_completed", "Ceremonies the user finished on the phone, approved or declined.",
    ["kind", "outcome"], registry=REGISTRY,
)
_CEREMONIES_REJECTED = Counter(
    "myna_ceremonies_rejected", "Ceremony steps refused by a check, by private reason (docs/events.md).",
    ["kind", "reason"], registry=REGISTRY,
)
_ENROLLMENTS = Counter(
    "myna_enrollments", "Phones enrolled: smartphone certificate pairs issued.", registry=REGISTRY,
)
_TOKENS_GRANTED = Counter(
    "myna_token_grants", "Tokens issued at /token, by grant type.", ["grant_type"], registry=REGISTRY,
)
_TOKENS_REJECTED = Counter(
    "myna_token_rejections", "Replays refused at /token (the grant concerned is revoked), by reason.",
    ["reason"], registry=REGISTRY,
)
_RATE_LIMITED = Counter(
    "myna_rate_limited", "Requests refused by a rate limit, by limit.", ["limit"], registry=REGISTRY,
)
_UNAVAILABLE = Counter(
    "myna_dependency_unavailable", "Requests answered 503 because PostgreSQL or Redis could not be reached.",
    ["dependency"], registry=REGISTRY,
)
_SIGNATURES = Counter(
    "myna_signatures", "Document signatures completed, by kind (cades, pades).", ["kind"], registry=REGISTRY,
)
_WEBHOOKS = Counter(
    "myna_webhook_deliveries", "Webhook delivery attempts, by outcome (delivered, retrying, failed).",
    ["outcome"], registry=REGISTRY,
)
_REQUEST_SECONDS = Histogram(
    "myna_http_request_duration_seconds", "Time to answer a request, by Flask endpoint.",
    ["endpoint"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
_RESPONSES = Counter(
    "myna_http_responses", "Responses, by Flask endpoint and status code.", ["endpoint", "status"], registry=REGISTRY,
)
_OWN = (_CEREMONIES_STARTED, _CEREMONIES_COMPLETED, _CEREMONIES_REJECTED, _ENROLLMENTS, _TOKENS_GRANTED,
        _TOKENS_REJECTED, _RATE_LIMITED, _UNAVAILABLE, _SIGNATURES, _WEBHOOKS, _REQUEST_SECONDS, _RESPONSES)


def ceremony_started(kind: CeremonyKind) -> None:
    """A login page was shown (its transaction opened) or an enrollment begun."""
    _CEREMONIES_STARTED.labels(kind).inc()


def ceremony_completed(kind: CeremonyKind, *, outcome: Outcome = "approved") -> None:
    """The user finished the ceremony on the phone: approved (and every check passed) or declined."""
    _CEREMONIES_COMPLETED.labels(kind, outcome).inc()


def ceremony_rejected(reason: str, *, kind: CeremonyKind = "login") -> None:
    """A check refused a ceremony step; ``reason`` is the value of the module's Reason enum."""
    _CEREMONIES_REJECTED.labels(kind, reason).inc()


def enrollment_completed() -> None:
    """A phone was enrolled: counts the enrollment and completes its ceremony."""
    _ENROLLMENTS.inc()
    _CEREMONIES_COMPLETED.labels("enrollment", "approved").inc()


def token_granted(grant_type: str) -> None:
    """/token issued tokens; ``grant_type`` is one the server registered (so a bounded set)."""
    _TOKENS_GRANTED.labels(grant_type).inc()


def token_rejected(reason: str) -> None:
    """/token refused a replayed code or refresh token (``token.rejected``)."""
    _TOKENS_REJECTED.labels(reason).inc()


def rate_limited(limit: str) -> None:
    """A request was refused by the rate limit named ``limit`` (a fixed name per limit)."""
    _RATE_LIMITED.labels(limit).inc()


def dependency_unavailable(dependency: str) -> None:
    """A request was answered 503 because ``dependency`` (database, ephemeral_store) could not be reached."""
    _UNAVAILABLE.labels(dependency).inc()


def signature_created(kind: Literal["cades", "pades"]) -> None:
    """A document signature was assembled and its assertion issued."""
    _SIGNATURES.labels(kind).inc()


def webhook_delivery(outcome: WebhookOutcome) -> None:
    """A webhook attempt ended: delivered (2xx), retrying later, or failed for good."""
    _WEBHOOKS.labels(outcome).inc()


class _EndpointSeries:
    """The label children of one endpoint, looked up once: a request then costs two dict reads."""

    def __init__(self) -> None:
        self._durations: dict[str, Histogram] = {}
        self._responses: dict[tuple[str, int], Counter] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        duration = self._durations.get(endpoint)
        if duration is None:
            duration = self._durations.setdefault(endpoint, _REQUEST_SECONDS.labels(endpoint))
        duration.observe(seconds)
        responses = self._responses.get((endpoint, status))
        if responses is None:
            responses = self._responses.setdefault((endpoint, status), _RESPONSES.labels(endpoint, str(status)))
        responses.inc()


_SERIES = _EndpointSeries()


def observe_request(endpoint: str, status: int, seconds: float) -> None:
    """Count one response of ``endpoint`` (a Flask endpoint name, never a raw path)."""
    _SERIES.observe(endpoint, status, seconds)


class JlisCrlCollector(Collector):
    """The age of the revocation data, read from the database when Prometheus scrapes."""

    def __init__(self, states: Callable[[], list[CrlState]], now: Callable[[], datetime]) -> None:
        self._states = states
        self._now = now

    def collect(self) -> Iterator[Metric]:
        """One series per stored J-LIS CRL."""
        states, now = self._states(), self._now()
        age = GaugeMetricFamily(
            "myna_jlis_crl_age_seconds", "Seconds since the stored J-LIS CRL was fetched.", labels=["issuer"],
        )
        remaining = GaugeMetricFamily(
            "myna_jlis_crl_next_update_seconds",
            "Seconds until the stored J-LIS CRL's nextUpdate; negative once it is stale.", labels=["issuer"],
        )
        for state in states:
            age.add_metric([state.issuer], (now - state.fetched_at).total_seconds())
            remaining.add_metric([state.issuer], (state.next_update - now).total_seconds())
        yield age
        yield remaining


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text exposition of every worker's metrics (or this process's), plus ``extra``."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call] # prometheus_client leaves it unannotated
    else:
        for metric in _OWN:
            registry.register(metric)
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)
