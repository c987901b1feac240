"""The device API (``/device/v1``): what the phone app speaks, JSON in and out, RFC 9457 problems on error.

Described by ``openapi.json`` beside this module (served at ``/device/v1/openapi.json``) and by
``docs/device-api.md``::

    GET  /device/v1/openapi.json          the OpenAPI 3.1 description
    POST /device/v1/enrollments           start an enrollment             201
    POST /device/v1/enrollments/{id}      complete it                     201

Bytes travel as base64url without padding (WebAuthn values, card signatures) or standard base64
(DER certificates, as PEM bodies are). A request body is parsed completely before the pending
enrollment is consumed, so a malformed request can be corrected and sent again.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
from importlib import resources
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Response, jsonify, request, url_for
from webauthn.helpers import parse_attestation_object, parse_client_data_json, parse_registration_credential_json
from webauthn.helpers.structs import RegistrationCredential

from idp.ceremonies.enrollment_errors import (
    EnrollmentAlreadyUsed,
    EnrollmentNotFound,
    EnrollmentRejected,
    EnrollmentTimedOut,
)
from idp.ceremonies.enrollment_service import CompletedEnrollment, EnrollmentService
from idp.ceremonies.problems import (
    EnrollmentExpired,
    EnrollmentReplayed,
    InvalidDeviceRequest,
    UnknownEnrollment,
    problem_for,
)
from idp.ops import metrics
from idp.web.problems import UnsupportedMediaType, register_problem_handler

__all__ = ["PREFIX", "create_blueprint", "openapi_document"]

PREFIX = "/device/v1"
_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

logger = logging.getLogger(__name__)


def openapi_document() -> bytes:
    """The OpenAPI 3.1 description shipped with the package."""
    return resources.files("idp.ceremonies").joinpath("openapi.json").read_bytes()


def create_blueprint(enrollments: EnrollmentService) -> Blueprint:
    """The ``/device/v1`` blueprint over ``enrollments``."""
    blueprint = Blueprint("device", __name__)
    register_problem_handler(blueprint)  # an unreachable store is a 503 problem (idp.ops.unavailable)

    @blueprint.get("/openapi.json")
    def openapi() -> Response:
        return Response(openapi_document(), mimetype="application/json")

    @blueprint.post("/enrollments")
    def start() -> tuple[Response, int, dict[str, str]]:
        pending = enrollments.start()
        metrics.ceremony_started("enrollment")
        body = {
            "enrollment_id": pending.id,
            "auth_options": pending.auth_options,
            "sign_options": pending.sign_options,
            "card_challenge": _b64url(pending.card_challenge),
            "expires_at": pending.expires_at.isoformat().replace("+00:00", "Z"),
        }
        location = url_for(".complete", enrollment_id=pending.id)
        return jsonify(body), 201, {"Location": location, "Cache-Control": "no-store"}

    @blueprint.post("/enrollments/<enrollment_id>")
    def complete(enrollment_id: str) -> tuple[Response, int, dict[str, str]]:
        if _ID.fullmatch(enrollment_id) is None:
            raise UnknownEnrollment
        parsed = _completion(_json_object())
        try:
            completed = enrollments.complete(enrollment_id=enrollment_id, **parsed)
        except EnrollmentNotFound:
            raise UnknownEnrollment from None
        except EnrollmentAlreadyUsed:
            raise EnrollmentReplayed from None
        except EnrollmentTimedOut:
            raise EnrollmentExpired from None
        except EnrollmentRejected as rejected:
            # Public words, private reason: the phone gets the class of check, the log gets why.
            logger.warning(
                "enrollment.rejected reason=%s subject=%r request_id=%s",
                rejected.reason.value, rejected.subject, _request_id(),
            )
            metrics.ceremony_rejected(rejected.reason.value, kind="enrollment")
            raise problem_for(rejected) from None
        logger.info("enrollment.completed device_id=%s request_id=%s", completed.device_id, _request_id())
        metrics.enrollment_completed()
        return jsonify(_completed(completed)), 201, {"Cache-Control": "no-store"}

    return blueprint


def _request_id() -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


def _json_object() -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidDeviceRequest("the body must be a JSON object")
    return body


def _member(container: dict[str, Any], name: str, kind: type, where: str = "") -> Any:
    value = container.get(name)
    if not isinstance(value, kind):
        raise InvalidDeviceRequest(f"{where}{name} must be a JSON {'object' if kind is dict else 'string'}")
    return value


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    """The completion request as parsed values (still unverified: ``verify_enrollment`` judges them)."""
    card = _member(body, "card", dict)
    return {
        "auth_attestation": _credential(_member(body, "auth_credential", dict), "auth_credential"),
        "sign_attestation": _credential(_member(body, "sign_credential", dict), "sign_credential"),
        "card_auth_certificate": _certificate(_member(card, "auth_certificate", str, "card."), "card.auth_certificate"),
        "card_sign_certificate": _certificate(_member(card, "sign_certificate", str, "card."), "card.sign_certificate"),
        "card_auth_signature": _b64url_decode(_member(card, "auth_signature", str, "card."), "card.auth_signature"),
        "card_sign_signature": _b64url_decode(_member(card, "sign_signature", str, "card."), "card.sign_signature"),
    }


def _credential(value: dict[str, Any], name: str) -> RegistrationCredential:
    """A RegistrationResponseJSON (WebAuthn L3 §5.1.10), parsed as far as its structure."""
    try:
        credential = parse_registration_credential_json(value)
        parse_client_data_json(bytes(credential.response.client_data_json))
        parse_attestation_object(bytes(credential.response.attestation_object))
    except Exception as exc:  # py_webauthn lets any JSON, base64, CBOR or struct error through
        raise InvalidDeviceRequest(
            f"{name} must be a RegistrationResponseJSON with base64url clientDataJSON and attestationObject",
        ) from exc
    return credential


def _certificate(value: str, name: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise InvalidDeviceRequest(f"{name} must be a DER certificate in base64") from exc


def _b64url_decode(value: str, name: str) -> bytes:
    if _BASE64URL.fullmatch(value) is None:
        raise InvalidDeviceRequest(f"{name} must be base64url")
    unpadded = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidDeviceRequest(f"{name} must be base64url") from exc


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _der_b64(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _completed(completed: CompletedEnrollment) -> dict[str, Any]:
    return {
        "device_id": completed.device_id,
        "auth_certificate": _der_b64(completed.auth_certificate),
        "sign_certificate": _der_b64(completed.sign_certificate),
        "chain": [_der_b64(certificate) for certificate in completed.chain],
    }
