"""Rate limits in the ephemeral store: per source address, per client, and a lock per person.

Fixed windows aligned to the clock (``rl:<limit>:<key>:<window number>``, one INCRBY per counted
request, expiring with its window): every worker and host counts in the same place, and
``Retry-After`` is the time to the window's end. What is counted (``LimitsSettings``):

- ``authorize``: login pages opened, per source address;
- ``token_address``: token requests per source address, before client authentication;
- ``par_address``: pushed authorization requests per source address, before client authentication;
- ``token_client`` / ``par_client``: token and pushed requests per authenticated client;
- ``device``: device API requests per source address;
- the person lock: ``failed_approvals`` refused approvals for one person within
  ``failure_window`` refuse that person's approvals for ``person_lock`` (``PersonLocked``), so a
  stolen phone or a scripted attack cannot keep trying against the person's pending logins.

Over a limit the answer is HTTP 429 with ``Retry-After``, in the shape of the endpoint: OAuth
error JSON at /token and /par, problem JSON (RFC 9457) under /device/v1, an HTML page elsewhere;
the ``myna_rate_limited`` metric counts it by limit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, jsonify, request
from werkzeug.wrappers import Response

from idp.ops import metrics
from idp.web.problems import PROBLEM_BASE, Problem, problem_response

if TYPE_CHECKING:
    from idp.clock import Clock
    from idp.settings import LimitsSettings
    from idp.store.ephemeral import EphemeralStore

__all__ = ["PersonLocked", "RateLimited", "RateLimiter", "problem_for", "register_rate_limits", "too_many_requests"]

logger = logging.getLogger("idp.limits")
EXTENSION = "myna.limits"
DEVICE_PREFIX = "/device/v1/"


class RateLimited(Exception):
    """A request over the limit ``limit``; it may be retried after ``retry_after`` seconds."""

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(f"rate limit {limit} reached; retry after {retry_after} s")
        self.limit = limit
        self.retry_after = retry_after


class PersonLocked(RateLimited):
    """Too many refused approvals for one person: their approvals wait until the lock expires."""


@dataclass(frozen=True, slots=True)
class _Window:
    number: int
    retry_after: int


class RateLimiter:
    """Counts requests against ``LimitsSettings`` in the ephemeral store."""

    def __init__(self, settings: LimitsSettings, store: EphemeralStore, clock: Clock) -> None:
        self.settings = settings
        self._store = store
        self._clock = clock

    def __repr__(self) -> str:
        return f"RateLimiter(enabled={self.settings.enabled})"

    def count(self, limit: str, key: str, allowed: int) -> None:
        """Count one request of ``key`` against ``limit``. Raises RateLimited over ``allowed``."""
        if not self.settings.enabled:
            return
        window = self._window()
        counted = self._store.increment(f"rl:{limit}:{key}:{window.number}", ttl=self.settings.window)
        if counted > allowed:
            raise RateLimited(limit, window.retry_after)

    def client(self, limit: str, client_id: str) -> None:
        """Count a request of an authenticated client (``token_client`` or ``par_client``)."""
        allowed = self.settings.token_per_client if limit == "token_client" else self.settings.par_per_client
        self.count(limit, client_id, allowed)

    def check_person(self, person_id: str) -> None:
        """Raises PersonLocked while the person's approvals are locked."""
        if not self.settings.enabled:
            return
        until = self._store.get(f"person-lock:{person_id}")
        remaining = 0.0 if until is None else float(until) - self._clock.now().timestamp()
        if remaining > 0:
            raise PersonLocked("person", math.ceil(remaining))

    def approval_failed(self, person_id: str) -> None:
        """Count a refused approval for the person; lock their approvals at the threshold."""
        if not self.settings.enabled:
            return
        failures = self._store.increment(f"approval-failures:{person_id}", ttl=self.settings.failure_window)
        if failures == self.settings.failed_approvals:
            until = self._clock.now() + self.settings.person_lock
            self._store.put(f"person-lock:{person_id}", str(until.timestamp()).encode(), ttl=self.settings.person_lock)
            logger.warning("limits.person_locked person=%s failures=%d", person_id, failures)

    def source_address(self) -> str:
        """The client's address: the TCP peer, or the X-Forwarded-For entry ``proxy_hops`` from the right."""
        hops = self.settings.proxy_hops
        if hops:
            forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
            if len(forwarded) >= hops:
                return forwarded[-hops]
        return request.remote_addr or "unknown"

    def _window(self) -> _Window:
        length = self.settings.window.total_seconds()
        now = self._clock.now().timestamp()
        number = int(now // length)
        return _Window(number=number, retry_after=max(1, math.ceil((number + 1) * length - now)))


def register_rate_limits(app: Flask, rate_limiter: RateLimiter) -> None:
    """Count the per-address limits before each request; over one, answer 429 at once."""
    app.extensions[EXTENSION] = rate_limiter
    settings = rate_limiter.settings
    by_path = {"/authorize": ("authorize", settings.authorize_per_address),
               "/token": ("token_address", settings.token_per_address),
               "/par": ("par_address", settings.par_per_address)}

    @app.before_request
    def _count_address() -> Response | None:
        path = request.path
        counted = ("device", settings.device_per_address) if path.startswith(DEVICE_PREFIX) else by_path.get(path)
        if counted is None or not settings.enabled:
            return None
        try:
            rate_limiter.count(counted[0], rate_limiter.source_address(), counted[1])
        except RateLimited as refused:
            return too_many_requests(refused)
        return None


def too_many_requests(refused: RateLimited) -> Response:
    """429 with Retry-After, in the shape the endpoint speaks; counted and logged."""
    metrics.rate_limited(refused.limit)
    logger.info("limits.refused limit=%s retry_after=%d", refused.limit, refused.retry_after)
    path = request.path
    response: Response
    if path.startswith(DEVICE_PREFIX):
        response = problem_response(problem_for(refused))
    elif path in {"/token", "/par"}:
        response = jsonify({"error": "temporarily_unavailable",
                            "error_description": f"too many requests: retry after {refused.retry_after} s"})
    else:
        from idp.web.login import error_page  # noqa: PLC0415 - the login page's renderer, for this answer only

        response = error_page("temporarily_unavailable", f"Too many requests: try again in {refused.retry_after} s.",
                              status=429)
    response.status_code = 429
    response.headers["Retry-After"] = str(refused.retry_after)
    response.headers["Cache-Control"] = "no-store"
    return response


class TooManyRequests(Problem):
    """Problem JSON for a device API request over its limit."""

    type = PROBLEM_BASE + "rate-limited"
    title = "Too many requests; try again later"
    status = 429


class ApprovalsLocked(Problem):
    """Problem JSON for an approval of a person whose approvals are locked after refusals."""

    type = PROBLEM_BASE + "approvals-locked"
    title = "Too many refused approvals; try again later"
    status = 429


def problem_for(refused: RateLimited) -> Problem:
    """The device API's problem for a refusal, with its Retry-After."""
    kind = ApprovalsLocked if isinstance(refused, PersonLocked) else TooManyRequests
    return kind(f"try again in {refused.retry_after} s", headers={"Retry-After": str(refused.retry_after)})
