"""Device API: login transactions as the phone sees them (``/device/v1/transactions``).

``POST /device/v1/transactions/lookup``  {"qr": ...} or {"transaction_id": ..., "token": ...},
                                         and "credential_id" (base64url) to sign documents
``POST /device/v1/transactions/<id>/approve``  {"assertion": AuthenticationResponseJSON,
                                                "consent_signature": base64url | null,
                                                "document_signatures": [base64url, ...]}
``POST /device/v1/transactions/<id>/decline``

Errors are RFC 9457 problems with a stable ``type`` each (``docs/device-api.md``). A refused
approval says only that it was refused; the reason is logged (``login.rejected``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.wrappers import Response as WerkzeugResponse

from idp.ceremonies.approval import ApprovalService, AssertionReplayed, SignatureKeyRenewalRequired, TransactionClosed
from idp.ceremonies.login import LoginRejected
from idp.ceremonies.problems import DeviceProblem, InvalidDeviceRequest, ServiceUnavailable, VerificationRefused
from idp.ceremonies.qr import QrRejected
from idp.ceremonies.transactions import LoginTransaction, TransactionStatus, UnknownTransaction
from idp.ops.rate_limits import RateLimited, too_many_requests
from idp.ops.rate_limits import problem_for as rate_limit_problem
from idp.signing.errors import Reason as SigningReason
from idp.signing.errors import SigningRejected
from idp.signing.flow import LookupRequired
from idp.web.problems import PROBLEM_BASE, Problem, problem_response, register_problem_handler

__all__ = ["APPROVAL_EXTENSION", "SignatureKeyRenewal", "create_blueprint"]

APPROVAL_EXTENSION = "myna.approval"


class InvalidCode(DeviceProblem):
    """The scanned QR code or same-device link is forged, stale or not ours."""

    type = f"{PROBLEM_BASE}invalid-transaction-code"
    title = "The scanned code is not valid now; scan the code on the screen again"
    status = 400


class TransactionNotFound(DeviceProblem):
    """No live transaction has that id."""

    type = f"{PROBLEM_BASE}transaction-not-found"
    title = "There is no such transaction"
    status = 404


class TransactionExpired(DeviceProblem):
    """The transaction ran out of time."""

    type = f"{PROBLEM_BASE}transaction-expired"
    title = "The transaction has expired"
    status = 410


class TransactionDecided(DeviceProblem):
    """Someone already approved, declined or cancelled it."""

    type = f"{PROBLEM_BASE}transaction-closed"
    title = "The transaction was already approved, declined or cancelled"
    status = 409


class TransactionLookupRequired(DeviceProblem):
    """The documents were prepared for the phone's previous signature certificate: it renewed its
    signature key since the lookup. Look the transaction up again (the code scanned then is still
    accepted from this phone) and sign what it lists now; not counted as a failed approval."""

    type = f"{PROBLEM_BASE}transaction-lookup-required"
    title = "The documents were prepared for another signature certificate; look the transaction up again"
    status = 409


class AssertionRejected(VerificationRefused):
    """The signed approval was not accepted (the reason is logged, not sent)."""

    type = f"{PROBLEM_BASE}assertion-rejected"
    title = "The signed approval was not accepted"
    status = 403


class SignatureKeyRenewal(VerificationRefused):
    """The approval's assertion verified, but the phone's signature certificate is not good.

    After a move (``affiliationChanged``), when a found phone was resumed (``superseded``), or
    when it expired. The phone enrolls a new signature key with the card
    (``POST /device/v1/signature-keys``) and approves again: the transaction stays open. The
    extension member ``signature_certificate`` (RFC 9457 §3.2) says why, so the phone can tell
    the person ("your address changed"); the phone could read the same from its certificate list.
    """

    type = f"{PROBLEM_BASE}signature-key-renewal-required"
    title = "The signature certificate is no longer valid; enroll a new signature key with the card"
    status = 403

    def __init__(self, *, status: str, reason: str | None) -> None:
        super().__init__()
        self.certificate_status = status
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        """The problem details, with ``signature_certificate``: ``{"status": ..., "reason": ...}``."""
        return super().to_dict() | {"signature_certificate": {"status": self.certificate_status,
                                                              "reason": self.reason}}


class ApprovalReplayed(DeviceProblem):
    """The same signed approval was sent before."""

    type = f"{PROBLEM_BASE}assertion-replayed"
    title = "This signed approval was already used"
    status = 409


class DocumentSignatureRejected(VerificationRefused):
    """A document signature was not accepted (the reason is logged, not sent)."""

    type = f"{PROBLEM_BASE}document-signature-rejected"
    title = "The document signature was not accepted"
    status = 403


def _service() -> ApprovalService:
    service: ApprovalService = current_app.extensions[APPROVAL_EXTENSION]
    return service


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidDeviceRequest("send a JSON object with Content-Type: application/json")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidDeviceRequest(f"{name} must be a non-empty string")
    return value


def _view(transaction: LoginTransaction, service: ApprovalService) -> dict[str, Any]:
    """What the phone shows, and the WebAuthn request options it signs (WebAuthn L3 §5.5)."""
    return {
        "transaction_id": transaction.id,
        "kind": "login",
        "rp_name": transaction.rp_name,
        "client_id": transaction.request.client_id,
        "verification_code": transaction.verification_code,
        "requested_attributes": list(transaction.request.requested_attributes),
        "expires_at": transaction.expires_at.isoformat(),
        "public_key": {
            "challenge": base64.urlsafe_b64encode(transaction.challenge).rstrip(b"=").decode(),
            "rpId": service.settings.rp_id,
            "userVerification": "required",
            "allowCredentials": [],
            "timeout": int((transaction.expires_at - transaction.created_at).total_seconds() * 1000),
        },
    }


_DOMAIN_ERRORS = (
    UnknownTransaction, TransactionClosed, QrRejected, LoginRejected, AssertionReplayed, RateLimited, SigningRejected,
    SignatureKeyRenewalRequired, LookupRequired,
)
"""An unreachable store is not among them: ``register_problem_handler`` answers it (idp.ops.unavailable)."""


def _problem_for(error: Exception) -> Problem:  # noqa: C901, PLR0911 - one answer per domain error
    """The device-API problem a domain error is answered with."""
    match error:
        case UnknownTransaction():
            return TransactionNotFound()
        case TransactionClosed(status=TransactionStatus.EXPIRED):
            return TransactionExpired()
        case TransactionClosed(status=status):
            return TransactionDecided(f"the transaction is {status.value}")
        case QrRejected():
            return InvalidCode()
        case LoginRejected():
            return AssertionRejected()
        case SignatureKeyRenewalRequired():
            return SignatureKeyRenewal(status=error.status, reason=error.reason)
        case AssertionReplayed():
            return ApprovalReplayed()
        case LookupRequired():
            return TransactionLookupRequired()
        case RateLimited():
            return rate_limit_problem(error)
        case SigningRejected(reason=SigningReason.MALFORMED):
            return InvalidDeviceRequest("look the transaction up with credential_id, then send one document "
                                        "signature per document it listed, in its order")
        case SigningRejected():
            return DocumentSignatureRejected()
        case _:
            return ServiceUnavailable()


def _answer(error: Exception) -> WerkzeugResponse:
    if isinstance(error, RateLimited):
        return too_many_requests(error)  # counted and logged as every 429
    return problem_response(_problem_for(error))


def create_blueprint() -> Blueprint:
    """The transaction endpoints of the device API."""
    blueprint = Blueprint("device_transactions", __name__, url_prefix="/device/v1/transactions")
    register_problem_handler(blueprint)

    for domain_error in _DOMAIN_ERRORS:
        blueprint.register_error_handler(domain_error, _answer)

    @blueprint.post("/lookup")
    def lookup() -> Response:
        body = _body()
        service = _service()
        sent = body.get("credential_id")  # the phone a signing request was prepared for may look it up again
        credential = _b64url(sent, "credential_id") if isinstance(sent, str) and sent else None
        if "qr" in body:
            transaction = service.from_qr(_text(body, "qr"), credential_id=credential)
        else:
            transaction = service.from_link(_text(body, "transaction_id"), _text(body, "token"),
                                            credential_id=credential)
        view = _view(transaction, service)
        if transaction.request.signing is not None:  # RFC 9396 signing request: prepared for this phone
            if credential is None:
                raise InvalidDeviceRequest("credential_id must be a non-empty string")
            view["kind"] = "signing"
            view["documents"] = service.prepare_signing(transaction, credential_id=credential)
        return jsonify(view)

    @blueprint.post("/<transaction_id>/approve")
    def approve(transaction_id: str) -> Response:
        body = _body()
        assertion = body.get("assertion")
        if not isinstance(assertion, dict):
            raise InvalidDeviceRequest("assertion must be a WebAuthn AuthenticationResponseJSON object")
        signature = body.get("consent_signature")
        if signature is not None and not isinstance(signature, str):
            raise InvalidDeviceRequest("consent_signature must be base64url or null")
        outcome = _service().approve(transaction_id, assertion=assertion,
                                     consent_signature=None if signature is None else _b64url(signature),
                                     document_signatures=_document_signatures(body))
        return jsonify({"status": outcome.kind.value})

    @blueprint.post("/<transaction_id>/decline")
    def decline(transaction_id: str) -> Response:
        _service().decline(transaction_id)
        return jsonify({"status": "declined"})

    return blueprint


def _document_signatures(body: dict[str, Any]) -> list[bytes]:
    """The phone's signatures over the documents' ``to_be_signed``, in the lookup's order."""
    signatures = body.get("document_signatures", [])
    if not isinstance(signatures, list) or not all(isinstance(item, str) for item in signatures):
        raise InvalidDeviceRequest("document_signatures must be an array of base64url signatures")
    return [_b64url(item, "document_signatures") for item in signatures]


def _b64url(text: str, name: str = "consent_signature") -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidDeviceRequest(f"{name} must be base64url") from exc
