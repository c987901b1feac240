"""``/healthz``, ``/readyz`` and ``/metrics``, and the request hooks that feed them.

``register_ops(app)`` is the one call ``create_app`` makes: it wraps the app in the request-id
middleware, times each request per Flask endpoint when ``ops.metrics`` is on, and serves:

- ``GET /healthz``: 200 while the process can answer at all; touches nothing else.
- ``GET /readyz``: 200 when every dependency answers, else 503; the JSON body names each check.
- ``GET /metrics``: the Prometheus text exposition, only to the source networks of
  ``ops.metrics_networks``, never through the reverse proxy, and with ``ops.metrics_token`` as a
  bearer token when one is set.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, jsonify, request

from idp.ops import health, metrics
from idp.ops.request_id import RequestIdMiddleware

if TYPE_CHECKING:
    from idp.app import Services
    from idp.settings import OpsSettings

__all__ = ["metrics_refusal", "register_ops"]

_START = "myna.ops.start"
"""The environ key holding ``time.perf_counter()`` when the request reached the app."""
_PROXY_HEADERS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR")


def register_ops(app: Flask, services: Services) -> None:
    """Wire request ids, request timing (``ops.metrics``) and the three endpoints into ``app``."""
    settings = services.settings.ops
    app.register_blueprint(_blueprint(services))
    if settings.metrics:
        app.before_request(_start_timer)
        app.after_request(_observe)
    app.wsgi_app = RequestIdMiddleware(app.wsgi_app)  # type: ignore[method-assign]


def _start_timer() -> None:
    request.environ[_START] = time.perf_counter()


def _observe(response: Response) -> Response:
    started = request.environ.get(_START)
    if started is not None:
        metrics.observe_request(request.endpoint or "unmatched", response.status_code, time.perf_counter() - started)
    return response


def metrics_refusal(settings: OpsSettings, environ: dict[str, object], authorization: str | None) -> int | None:
    """Why a /metrics request may not read the metrics, as its HTTP status; None when it may.

    404 when metrics are off; 403 from outside ``metrics_networks`` or through the reverse proxy
    (the public reaches the portal only that way); 401 without the configured bearer token.
    """
    if not settings.metrics:
        return 404
    if any(header in environ for header in _PROXY_HEADERS):
        return 403
    try:
        source = ipaddress.ip_address(str(environ.get("REMOTE_ADDR", "")))
    except ValueError:
        return 403
    if not any(source in ipaddress.ip_network(network, strict=False) for network in settings.metrics_networks):
        return 403
    if settings.metrics_token:
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), settings.metrics_token.encode()):
            return 401
    return None


_REFUSALS = {
    401: "the metrics need a bearer token",
    403: "the metrics are not served to this source",
    404: "not found",
}


def _blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("ops", __name__)
    settings = services.settings
    clock = services.clock
    checks: dict[str, health.Check] = {
        "database": health.database_check(services.sessions),
        "ephemeral_store": health.ephemeral_check(services.ephemeral),
        # Late: the property loads the keys; jwks() reloads a rotated manifest.
        "signing_keys": health.signing_keys_check(lambda: services.oidc.keys.jwks()),  # noqa: PLW0108
        "ca_keys": health.ca_keys_check(lambda: services.pki.authorities, now=clock.now),
        "jlis_crls": health.jlis_crls_check(services.sessions, configured=bool(settings.pki.jlis_roots),
                                            now=clock.now),
    }
    crl_collector = metrics.JlisCrlCollector(lambda: health.crl_states(services.sessions), clock.now)

    @blueprint.get("/healthz")
    def healthz() -> Response:
        return _no_store(jsonify(status="alive"))

    @blueprint.get("/readyz")
    def readyz() -> tuple[Response, int]:
        ready, body = health.readiness(checks)
        return _no_store(jsonify(body)), 200 if ready else 503

    @blueprint.get("/metrics")
    def metrics_endpoint() -> Response:
        refusal = metrics_refusal(settings.ops, request.environ, request.headers.get("Authorization"))
        if refusal is not None:
            response = Response(_REFUSALS[refusal] + "\n", status=refusal, mimetype="text/plain")
            if refusal == 401:  # noqa: PLR2004 - HTTP Unauthorized
                response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return _no_store(response)
        return _no_store(Response(metrics.exposition([crl_collector]), content_type=metrics.CONTENT_TYPE))

    return blueprint


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response
