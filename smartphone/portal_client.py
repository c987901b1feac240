"""The phone app's side of the device API: enrollment over HTTP, as ``docs/device-api.md`` describes it.

An outside client of the portal: it speaks only the documented JSON (``requests``), and computes
the card-binding digest from the published formula, never from the portal's code::

    SHA-256("myna-enrollment-v1" || card_challenge || SHA-256(auth SPKI DER) || SHA-256(sign SPKI DER))

The order matters for the card: both PINs are used only after the SE has made both keys, and
nothing is sent to the portal until the card has signed with both.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smartphone.card import CardKey, MyNumberCard
from smartphone.secure_element import KeyPurpose, SecureElement
from smartphone.webauthn_data import b64url, b64url_decode

__all__ = [
    "BINDING_LABEL",
    "SIGNATURE_KEY_RENEWAL",
    "Enrollment",
    "PortalClient",
    "PortalError",
    "approve",
    "binding_digest",
    "consent_digest",
    "device_certificates",
    "enroll",
    "phone_life_digest",
    "reenroll_signature_key",
    "resume_phone",
    "revoke_device",
    "suspend_phone",
]

BINDING_LABEL = b"myna-enrollment-v1"
ENROLLMENTS = "/device/v1/enrollments"
TRANSACTIONS = "/device/v1/transactions"
DEVICES = "/device/v1/devices"
CONSENT_PURPOSE = "myna-consent-v1"
PHONES = "/device/v1/phones"
SIGNATURE_KEYS = "/device/v1/signature-keys"
PHONE_LIFE_LABEL = b"myna-phone-life-v1"
SIGNATURE_KEY_RENEWAL = "https://id.myna.example/problems/signature-key-renewal-required"
"""The problem ``type`` of an approval refused until the phone enrolls a new signature key (docs/device-api.md)."""


class PortalError(Exception):
    """The portal answered with an RFC 9457 problem (or could not be reached: ``status`` 0)."""

    def __init__(self, status: int, problem_type: str, title: str, detail: str | None = None,
                 members: dict[str, Any] | None = None) -> None:
        """``members``: the whole problem document, extension members included (RFC 9457 §3.2)."""
        super().__init__(f"{title} ({status} {problem_type})" + (f": {detail}" if detail else ""))
        self.status = status
        self.type = problem_type
        self.title = title
        self.detail = detail
        self.members = dict(members or {})

    @property
    def signature_key_renewal(self) -> str | None:
        """Why the phone must enroll a new signature key (``affiliationChanged`` after a move,
        ``superseded``, ``expired``, ...), or None when this is not that problem."""
        if self.type != SIGNATURE_KEY_RENEWAL:
            return None
        certificate = self.members.get("signature_certificate")
        certificate = certificate if isinstance(certificate, dict) else {}
        return str(certificate.get("reason") or certificate.get("status") or "unknown")


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrollment:
    """What the portal returned for a completed enrollment, as the phone keeps it."""

    portal: str
    device_id: str
    auth_credential_id: bytes
    sign_credential_id: bytes
    auth_certificate: x509.Certificate
    sign_certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def binding_digest(*, challenge: bytes, auth_public_key: ec.EllipticCurvePublicKey,
                   sign_public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The digest both card keys sign (docs/device-api.md, "The card binding")."""
    def spki_hash(key: ec.EllipticCurvePublicKey) -> bytes:
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).digest()
    return hashlib.sha256(BINDING_LABEL + challenge + spki_hash(auth_public_key) + spki_hash(sign_public_key)).digest()


class PortalClient:
    """The device API at ``base_url`` (the portal's issuer URL)."""

    def __init__(self, base_url: str, *, session: requests.Session | None = None, timeout: float = 30.0) -> None:
        """``timeout`` per request: approving a signing request waits while the portal assembles,
        timestamps and checks every document's signature (seconds on a busy 2-core machine)."""
        self.base_url = base_url.rstrip("/")
        self._session = session or requests.Session()
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"PortalClient({self.base_url!r})"

    def start_enrollment(self) -> dict[str, Any]:
        """``POST /device/v1/enrollments``: the creation options and the card challenge."""
        return self._post(ENROLLMENTS, {})

    def complete_enrollment(self, enrollment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /device/v1/enrollments/{id}``: the certificates. Raises PortalError."""
        return self._post(f"{ENROLLMENTS}/{enrollment_id}", body)

    def lookup_transaction(
        self, *, qr: str | None = None, link: str | None = None, credential_id: bytes | None = None,
    ) -> dict[str, Any]:
        """``POST /device/v1/transactions/lookup`` with a scanned QR payload or a same-device link.

        ``credential_id``: the phone's authentication credential, which a signing request needs
        to prepare the documents for this phone's signature certificate.
        """
        if (qr is None) == (link is None):
            raise ValueError("give either the scanned QR payload or the same-device link")
        body: dict[str, Any]
        if qr is not None:
            body = {"qr": qr}
        else:
            query = parse_qs(urlsplit(link or "").query)
            body = {"transaction_id": query.get("id", [""])[0], "token": query.get("token", [""])[0]}
        if credential_id is not None:
            body["credential_id"] = b64url(credential_id)
        return self._post(f"{TRANSACTIONS}/lookup", body, expect=200)

    def approve_transaction(
        self, transaction_id: str, *, assertion: dict[str, Any], consent_signature: bytes | None,
        document_signatures: list[bytes] | None = None,
    ) -> dict[str, Any]:
        """``POST /device/v1/transactions/{id}/approve``. Raises PortalError."""
        body: dict[str, Any] = {
            "assertion": assertion,
            "consent_signature": None if consent_signature is None else b64url(consent_signature),
        }
        if document_signatures is not None:
            body["document_signatures"] = [b64url(signature) for signature in document_signatures]
        return self._post(f"{TRANSACTIONS}/{transaction_id}/approve", body, expect=200)

    def decline_transaction(self, transaction_id: str) -> dict[str, Any]:
        """``POST /device/v1/transactions/{id}/decline``. Raises PortalError."""
        return self._post(f"{TRANSACTIONS}/{transaction_id}/decline", {}, expect=200)

    def device_challenge(self) -> dict[str, Any]:
        """``POST /device/v1/devices/challenges``: a one-time challenge and its WebAuthn request options."""
        return self._post(f"{DEVICES}/challenges", {})

    def device_certificates(self, *, challenge_id: str, assertion: dict[str, Any]) -> dict[str, Any]:
        """``POST /device/v1/devices/self/certificates``: the asserting device's certificates. Raises PortalError."""
        return self._post(f"{DEVICES}/self/certificates", {"challenge_id": challenge_id, "assertion": assertion},
                          expect=200)

    def revoke_device(self, *, challenge_id: str, assertion: dict[str, Any], reason: str) -> dict[str, Any]:
        """``POST /device/v1/devices/self/revoke``: revoke the asserting device. Raises PortalError."""
        body = {"challenge_id": challenge_id, "assertion": assertion, "reason": reason}
        return self._post(f"{DEVICES}/self/revoke", body, expect=200)

    def phone_challenge(self) -> dict[str, Any]:
        """``POST /device/v1/phones/challenges``: a one-time challenge for the card to sign."""
        return self._post(f"{PHONES}/challenges", {})

    def phone_event(self, device_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /device/v1/phones/{device_id}/{suspend|resume}``, card-signed. Raises PortalError."""
        return self._post(f"{PHONES}/{device_id}/{action}", body, expect=200)

    def start_signature_key(self) -> dict[str, Any]:
        """``POST /device/v1/signature-keys``: open a signature-key re-enrollment."""
        return self._post(SIGNATURE_KEYS, {})

    def complete_signature_key(self, rekey_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /device/v1/signature-keys/{id}``. Raises PortalError."""
        return self._post(f"{SIGNATURE_KEYS}/{rekey_id}", body)

    def _post(self, path: str, body: dict[str, Any], *, expect: int = 201) -> dict[str, Any]:
        try:
            response = self._session.post(self.base_url + path, json=body, timeout=self._timeout)
        except requests.RequestException as exc:
            raise PortalError(0, "about:blank", f"the portal at {self.base_url} cannot be reached") from exc
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code != expect or not isinstance(document, dict):
            problem = document if isinstance(document, dict) else {}
            raise PortalError(
                response.status_code, str(problem.get("type", "about:blank")),
                str(problem.get("title", response.reason)), problem.get("detail"), problem,
            )
        return document


def enroll(
    *,
    client: PortalClient,
    element: SecureElement,
    card: MyNumberCard,
    auth_pin: str,
    sign_pin: str,
) -> Enrollment:
    """Run a whole enrollment: start, make both SE keys, have the card sign the binding, complete.

    The WebAuthn origin is the portal's URL. Raises PortalError, the SE's errors
    (UserVerificationFailed) and the card's (WrongPin, PinLocked): a card error comes before
    the completion is sent, so nothing is enrolled then.
    """
    started = client.start_enrollment()
    origin = client.base_url
    responses = {}
    for purpose, options in ((KeyPurpose.AUTH, started["auth_options"]), (KeyPurpose.SIGN, started["sign_options"])):
        responses[purpose] = element.make_credential(
            rp_id=options["rp"]["id"], challenge=b64url_decode(options["challenge"]), origin=origin, purpose=purpose,
        )
    auth_id = b64url_decode(responses[KeyPurpose.AUTH]["rawId"])
    sign_id = b64url_decode(responses[KeyPurpose.SIGN]["rawId"])
    digest = binding_digest(
        challenge=b64url_decode(started["card_challenge"]),
        auth_public_key=element.public_key(auth_id),
        sign_public_key=element.public_key(sign_id),
    )
    auth_signature = card.sign_digest(CardKey.AUTH, digest, pin=auth_pin)
    sign_signature = card.sign_digest(CardKey.SIGN, digest, pin=sign_pin)
    certificates = card.certificates
    completed = client.complete_enrollment(started["enrollment_id"], {
        "auth_credential": responses[KeyPurpose.AUTH],
        "sign_credential": responses[KeyPurpose.SIGN],
        "card": {
            "auth_certificate": _der_b64(certificates.auth),
            "sign_certificate": _der_b64(certificates.sign),
            "auth_signature": b64url(auth_signature),
            "sign_signature": b64url(sign_signature),
        },
    })
    return Enrollment(
        portal=client.base_url,
        device_id=str(completed["device_id"]),
        auth_credential_id=auth_id,
        sign_credential_id=sign_id,
        auth_certificate=_certificate(completed["auth_certificate"]),
        sign_certificate=_certificate(completed["sign_certificate"]),
        chain=tuple(_certificate(item) for item in completed["chain"]),
    )


def consent_digest(*, transaction: dict[str, Any], client_id: str) -> bytes:
    """The digest the signature key signs to release the requested attributes (docs/device-api.md).

    SHA-256 of the canonical JSON (sorted keys, no spaces) of the attributes (sorted), the
    WebAuthn challenge (base64url as sent), the RP's client id, the purpose and the transaction id.
    """
    document = {
        "attributes": sorted(transaction["requested_attributes"]),
        "challenge": transaction["public_key"]["challenge"],
        "client_id": client_id,
        "purpose": CONSENT_PURPOSE,
        "transaction": transaction["transaction_id"],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).digest()


def approve(
    *,
    client: PortalClient,
    element: SecureElement,
    enrollment: Enrollment,
    transaction: dict[str, Any],
    presence_only: bool = False,
) -> dict[str, Any]:
    """Approve a looked-up transaction: a login assertion by the authentication key and, when
    attributes are asked for, a consent signature by the signature key; for a signing request,
    each document's ``to_be_signed`` digest signed by the signature key. Raises PortalError and
    the SE's errors (UserVerificationFailed: the fingerprint did not match)."""
    options = transaction["public_key"]
    assertion = element.get_assertion(
        credential_id=enrollment.auth_credential_id, rp_id=options["rpId"],
        challenge=b64url_decode(options["challenge"]), origin=client.base_url, presence_only=presence_only,
    )
    consent = None
    if transaction["requested_attributes"]:
        consent = element.sign_digest(
            credential_id=enrollment.sign_credential_id,
            digest=consent_digest(transaction=transaction, client_id=transaction["client_id"]),
        )
    signatures = None
    if transaction.get("kind") == "signing":
        signatures = [
            element.sign_digest(credential_id=enrollment.sign_credential_id,
                                digest=b64url_decode(document["to_be_signed"]))
            for document in transaction["documents"]
        ]
    return client.approve_transaction(transaction["transaction_id"], assertion=assertion, consent_signature=consent,
                                      document_signatures=signatures)


def _der_b64(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _certificate(text: object) -> x509.Certificate:
    if not isinstance(text, str):
        raise PortalError(201, "about:blank", "the portal returned a malformed certificate")
    return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))


def _device_assertion(
    *, client: PortalClient, element: SecureElement, enrollment: Enrollment,
) -> tuple[str, dict[str, Any]]:
    """A fresh device-management challenge, signed by the authentication key (user verified)."""
    started = client.device_challenge()
    options = started["public_key"]
    assertion = element.get_assertion(
        credential_id=enrollment.auth_credential_id, rp_id=options["rpId"],
        challenge=b64url_decode(options["challenge"]), origin=client.base_url,
    )
    return str(started["challenge_id"]), assertion


def device_certificates(*, client: PortalClient, element: SecureElement, enrollment: Enrollment) -> dict[str, Any]:
    """This phone's smartphone certificates and their status, authenticated by an assertion.

    Raises PortalError and the SE's errors (UserVerificationFailed)."""
    challenge_id, assertion = _device_assertion(client=client, element=element, enrollment=enrollment)
    return client.device_certificates(challenge_id=challenge_id, assertion=assertion)


def revoke_device(
    *, client: PortalClient, element: SecureElement, enrollment: Enrollment, reason: str = "cessationOfOperation",
) -> dict[str, Any]:
    """Revoke this phone at the portal: both its certificates, and the device. Raises PortalError and
    the SE's errors."""
    challenge_id, assertion = _device_assertion(client=client, element=element, enrollment=enrollment)
    return client.revoke_device(challenge_id=challenge_id, assertion=assertion, reason=reason)


def phone_life_digest(*, action: str, device_id: str, challenge: bytes) -> bytes:
    """SHA-256("myna-phone-life-v1" || 0 || action || 0 || device id || 0 || challenge) (docs/device-api.md)."""
    return hashlib.sha256(b"\0".join((PHONE_LIFE_LABEL, action.encode(), device_id.encode(), challenge))).digest()


def _card_phone_event(*, client: PortalClient, card: MyNumberCard, auth_pin: str, device_id: str,
                      action: str) -> dict[str, Any]:
    started = client.phone_challenge()
    digest = phone_life_digest(action=action, device_id=device_id, challenge=b64url_decode(started["card_challenge"]))
    signature = card.sign_digest(CardKey.AUTH, digest, pin=auth_pin)
    return client.phone_event(device_id, action, {
        "challenge_id": started["challenge_id"],
        "card": {"auth_certificate": _der_b64(card.certificates.auth), "auth_signature": b64url(signature)},
    })


def suspend_phone(*, client: PortalClient, card: MyNumberCard, auth_pin: str, device_id: str) -> dict[str, Any]:
    """Suspend a lost phone from any device by tapping the card (user-authentication PIN): both its
    certificates go on hold. Raises PortalError and the card's errors (WrongPin, PinLocked)."""
    return _card_phone_event(client=client, card=card, auth_pin=auth_pin, device_id=device_id, action="suspend")


def resume_phone(*, client: PortalClient, card: MyNumberCard, auth_pin: str, device_id: str) -> dict[str, Any]:
    """Resume a found phone by tapping the card: its user-authentication certificate is good again;
    its signature key must be enrolled anew. Raises PortalError and the card's errors."""
    return _card_phone_event(client=client, card=card, auth_pin=auth_pin, device_id=device_id, action="resume")


def reenroll_signature_key(
    *, client: PortalClient, element: SecureElement, enrollment: Enrollment, card: MyNumberCard, sign_pin: str,
) -> Enrollment:
    """Enroll a new signature key (after a move, or when a lost phone was found): the SE makes an
    attested key, the authentication key asserts which phone this is, and the card's signature key
    signs the binding over both SE keys. Returns the enrollment with the new key and certificate.

    Raises PortalError, the SE's errors and the card's (WrongPin, PinLocked).
    """
    started = client.start_signature_key()
    origin = client.base_url
    options = started["sign_options"]
    created = element.make_credential(rp_id=options["rp"]["id"], challenge=b64url_decode(options["challenge"]),
                                      origin=origin, purpose=KeyPurpose.SIGN)
    sign_id = b64url_decode(created["rawId"])
    request = started["public_key"]
    assertion = element.get_assertion(credential_id=enrollment.auth_credential_id, rp_id=request["rpId"],
                                      challenge=b64url_decode(request["challenge"]), origin=origin)
    digest = binding_digest(challenge=b64url_decode(started["card_challenge"]),
                            auth_public_key=element.public_key(enrollment.auth_credential_id),
                            sign_public_key=element.public_key(sign_id))
    signature = card.sign_digest(CardKey.SIGN, digest, pin=sign_pin)
    completed = client.complete_signature_key(started["rekey_id"], {
        "assertion": assertion,
        "sign_credential": created,
        "card": {"auth_certificate": _der_b64(card.certificates.auth),
                 "sign_certificate": _der_b64(card.certificates.sign), "sign_signature": b64url(signature)},
    })
    return dataclasses.replace(enrollment, sign_credential_id=sign_id,
                               sign_certificate=_certificate(completed["sign_certificate"]))
