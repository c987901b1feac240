"""The simulated J-LIS over HTTP: CA certificates, CRLs (RFC 5280), OCSP (RFC 6960) and linking data.

``GET /ca/<name>.crt`` and ``GET /crl/<name>.crl`` serve DER; ``POST /ocsp`` (body
``application/ocsp-request``) and ``GET /ocsp/<base64 request>`` (RFC 6960 Appendix A.1) answer
OCSP. ``GET /linking?since=<n>&limit=<m>`` answers one linking-data feed page, a compact JWS
(``application/jose``) holding the links after sequence number ``n`` (``docs/linking.md``).
The registries are read on every request, so a ``smartphone card revoke`` shows at once.
Errors are RFC 9457 problem JSON, never an HTML page or a traceback; an unreadable OCSP request
gets an OCSP malformedRequest response, as RFC 6960 §2.3 says.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from flask import Flask, Response, request
from werkzeug.exceptions import BadRequest, HTTPException, NotFound, UnsupportedMediaType

from idp.pki.ocsp import MalformedOcspRequest, request_from_get
from smartphone.jlis import JLis, UnknownAuthority
from smartphone.jlis_linking import MAX_PAGE_SIZE
from smartphone.state import State, read_passphrase

__all__ = ["MAX_OCSP_REQUEST_BYTES", "Clock", "create_jlis_app"]

MAX_OCSP_REQUEST_BYTES = 16 * 1024
"""A single-certificate OCSP request is under 200 bytes; anything past this is refused (413)."""

OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"

log = logging.getLogger(__name__)


class Clock(Protocol):
    """Tells the current time, timezone-aware UTC (``idp.clock.FixedClock`` fits)."""

    def now(self) -> datetime: ...


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def _problem(status: int, title: str, detail: str | None = None) -> Response:
    """An RFC 9457 problem document."""
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return Response(json.dumps(body), status=status, mimetype="application/problem+json")


class _Views:
    """The J-LIS endpoints over one loaded J-LIS and a clock."""

    def __init__(self, jlis: JLis, clock: Clock) -> None:
        self.jlis = jlis
        self.clock = clock

    def ca_certificate(self, name: str) -> Response:
        try:
            certificate = self.jlis.authority(name).certificate
        except UnknownAuthority as exc:
            raise NotFound(str(exc)) from exc
        return Response(certificate.public_bytes(serialization.Encoding.DER), mimetype="application/pkix-cert")

    def crl(self, name: str) -> Response:
        try:
            revocation_list = self.jlis.crl(name, now=self.clock.now())
        except UnknownAuthority as exc:
            raise NotFound(str(exc)) from exc
        return Response(revocation_list.public_bytes(serialization.Encoding.DER), mimetype="application/pkix-crl")

    def linking(self) -> Response:
        since = _whole_number("since", request.args.get("since", "0"), maximum=None)
        limit = _whole_number("limit", request.args.get("limit", str(MAX_PAGE_SIZE)), maximum=MAX_PAGE_SIZE)
        if limit == 0:
            raise BadRequest(f"limit must be 1 to {MAX_PAGE_SIZE}")
        page = self.jlis.linking_page(since=since, limit=limit, now=self.clock.now())
        return Response(page, mimetype="application/jose")

    def ocsp_post(self) -> Response:
        if request.mimetype != OCSP_REQUEST:
            raise UnsupportedMediaType(f"an OCSP request is sent as {OCSP_REQUEST}")
        return Response(self.jlis.ocsp(request.get_data(cache=False), now=self.clock.now()), mimetype=OCSP_RESPONSE)

    def ocsp_get(self, encoded: str) -> Response:
        try:
            request_der = request_from_get(encoded)
        except MalformedOcspRequest:
            # RFC 6960 §2.3: an unreadable request gets the OCSP status malformedRequest.
            malformed = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
            return Response(malformed.public_bytes(serialization.Encoding.DER), mimetype=OCSP_RESPONSE)
        return Response(self.jlis.ocsp(request_der, now=self.clock.now()), mimetype=OCSP_RESPONSE)


def _whole_number(name: str, text: str, *, maximum: int | None) -> int:
    """``text`` as a whole number of at most ``maximum``; BadRequest (problem JSON) otherwise."""
    if not text.isascii() or not text.isdigit() or len(text) > 18:  # noqa: PLR2004 - fits a BIGINT
        raise BadRequest(f"{name} must be a whole number")
    value = int(text)
    if maximum is not None and value > maximum:
        raise BadRequest(f"{name} must be at most {maximum}")
    return value


def _http_error(error: HTTPException) -> Response:
    status = error.code or HTTPStatus.INTERNAL_SERVER_ERROR
    detail = error.description if status < HTTPStatus.INTERNAL_SERVER_ERROR else None
    return _problem(status, error.name, detail)


def _unexpected(error: Exception) -> Response:
    log.error("jlis.server_error %s", type(error).__name__, exc_info=error)
    return _problem(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error")


def create_jlis_app(jlis_state_dir: Path, clock: Clock | None = None, *, passphrase: bytes | None = None) -> Flask:
    """A Flask app serving the J-LIS kept in the state directory ``jlis_state_dir``.

    The CA keys are decrypted once, here, with ``passphrase`` (default: ``$SMARTPHONE_PASSPHRASE``).
    Raises StateError (no J-LIS, no or a wrong passphrase) before any request is served.
    """
    jlis = State(jlis_state_dir, passphrase or read_passphrase(None)).load_jlis()
    views = _Views(jlis, clock or _SystemClock())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_OCSP_REQUEST_BYTES
    app.add_url_rule("/ca/<name>.crt", view_func=views.ca_certificate, methods=["GET"])
    app.add_url_rule("/crl/<name>.crl", view_func=views.crl, methods=["GET"])
    app.add_url_rule("/linking", view_func=views.linking, methods=["GET"])
    app.add_url_rule("/ocsp", view_func=views.ocsp_post, methods=["POST"])
    app.add_url_rule("/ocsp/<path:encoded>", view_func=views.ocsp_get, methods=["GET"])
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    return app
