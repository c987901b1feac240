"""The portal's PKI over HTTP: CA certificates, CRLs (RFC 5280 §5) and OCSP (RFC 6960 Appendix A).

Mounted at ``/pki``::

    GET  /pki/ca/<name>.crt        the CA certificate, DER (application/pkix-cert, RFC 2585 §4.1)
    GET  /pki/crl/<name>.crl       its current CRL, DER (application/pkix-crl, RFC 2585 §4.2)
    POST /pki/ocsp                 an application/ocsp-request body (RFC 6960 A.1)
    GET  /pki/ocsp/<request>       the URL-encoded base64 request (RFC 6960 A.1)

Names are ``portal-root`` and ``smartphone-ca``. Client errors are RFC 9457 problems; an OCSP
request that cannot be read is answered, as RFC 6960 §2.3 says, with an OCSP malformedRequest
response and HTTP 200.
"""

from __future__ import annotations

import logging
import math

from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from flask import Blueprint, Response, request
from sqlalchemy.exc import SQLAlchemyError

from idp.ops.unavailable import note_unavailable, retry_headers, unavailable_dependency
from idp.pki.ocsp import MalformedOcspRequest, request_from_get
from idp.pki.service import PortalPki, UnknownAuthority
from idp.web.problems import (
    PROBLEM_BASE,
    NotFound,
    RequestTooLarge,
    UnsupportedMediaType,
    register_problem_handler,
)

__all__ = ["MAX_OCSP_REQUEST_BYTES", "UnknownCa", "create_blueprint"]

MAX_OCSP_REQUEST_BYTES = 8192
"""Largest OCSP request body read; one CertID with a nonce is about a hundred bytes."""
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
PKIX_CERT = "application/pkix-cert"
PKIX_CRL = "application/pkix-crl"
CA_CERTIFICATE_MAX_AGE = 86400

logger = logging.getLogger(__name__)


class UnknownCa(NotFound):
    """The URL names a CA the portal does not run."""

    type = PROBLEM_BASE + "unknown-ca"
    title = "The portal has no certificate authority of that name"


def create_blueprint(pki: PortalPki) -> Blueprint:
    """The ``/pki`` blueprint serving ``pki``'s certificates, CRLs and OCSP answers."""
    blueprint = Blueprint("pki", __name__)
    register_problem_handler(blueprint)

    @blueprint.get("/ca/<name>.crt")
    def ca_certificate(name: str) -> Response:
        try:
            der = pki.ca_certificate_der(name)
        except UnknownAuthority:
            raise UnknownCa(f"known names are {', '.join(sorted(_names(pki)))}") from None
        response = Response(der, mimetype=PKIX_CERT)
        response.headers["Cache-Control"] = f"public, max-age={CA_CERTIFICATE_MAX_AGE}"
        return response

    @blueprint.get("/crl/<name>.crl")
    def crl(name: str) -> Response:
        try:
            published = pki.published_crl(name)
        except UnknownAuthority:
            raise UnknownCa(f"known names are {', '.join(sorted(_names(pki)))}") from None
        # A cache may keep the CRL until its nextUpdate, never longer (RFC 5280 §5.1.2.5).
        seconds = max(0, math.floor((published.next_update - pki.clock.now()).total_seconds()))
        response = Response(published.der, mimetype=PKIX_CRL)
        response.headers["Cache-Control"] = f"public, max-age={seconds}"
        response.last_modified = published.this_update
        response.expires = published.next_update
        return response

    @blueprint.post("/ocsp")
    def ocsp_post() -> Response:
        # RFC 6960 A.1.1: "Content-Type: application/ocsp-request".
        if request.mimetype != OCSP_REQUEST:
            raise UnsupportedMediaType(f"send the DER OCSP request as {OCSP_REQUEST}")
        return _ocsp_answer(pki, _read_body())

    @blueprint.get("/ocsp/<path:encoded>", merge_slashes=False)
    def ocsp_get(encoded: str) -> Response:
        try:
            request_der = request_from_get(encoded)
        except MalformedOcspRequest:
            return _ocsp(_malformed())
        response = _ocsp_answer(pki, request_der)
        # RFC 5019 §5: a GET answer may be cached, for no longer than the response is fresh.
        response.headers["Cache-Control"] = f"public, max-age={math.floor(pki.ocsp_lifetime.total_seconds())}"
        return response

    return blueprint


def _names(pki: PortalPki) -> list[str]:
    return [authority.name for authority in pki.authorities]


def _read_body() -> bytes:
    """The request body, refusing one larger than ``MAX_OCSP_REQUEST_BYTES`` before reading it all."""
    too_large = RequestTooLarge(f"an OCSP request is at most {MAX_OCSP_REQUEST_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_OCSP_REQUEST_BYTES:
        raise too_large
    body = request.stream.read(MAX_OCSP_REQUEST_BYTES + 1)
    if len(body) > MAX_OCSP_REQUEST_BYTES:
        raise too_large
    return body


def _ocsp_answer(pki: PortalPki, request_der: bytes) -> Response:
    try:
        return _ocsp(pki.ocsp_response(request_der))
    except SQLAlchemyError as exc:
        dependency = unavailable_dependency(exc)
        if dependency is not None:
            # RFC 6960 §2.3 tryLater: the responder is "temporarily unable to respond".
            note_unavailable(dependency, exc)
            response = _ocsp(_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER))
            response.headers.update(retry_headers())
            return response
        # RFC 6960 §2.3 internalError: an OCSP client reads an OCSP answer, never an HTTP error page.
        logger.exception("the OCSP responder cannot read the certificate records")
        return _ocsp(_unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR))


def _ocsp(der: bytes) -> Response:
    return Response(der, mimetype=OCSP_RESPONSE)


def _malformed() -> bytes:
    return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
