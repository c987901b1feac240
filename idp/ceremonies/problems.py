"""The device API's problems (RFC 9457): one class, one stable ``type`` URI, per failure a phone app handles.

A malformed request says exactly what to fix. A refused verification says only which class of
check failed, as much as a phone developer needs (the attestation, user verification, the card
certificate, the card signature): the exact ``Reason`` goes to the log (``enrollment.rejected``),
never to the phone.
"""

from __future__ import annotations

from idp.ceremonies.enrollment_errors import EnrollmentRejected, Reason
from idp.web.problems import PROBLEM_BASE, Problem

__all__ = [
    "AttestationRejected",
    "CardCertificateRejected",
    "CardSignatureRejected",
    "ClientDataMismatch",
    "DeviceBoundKeyRequired",
    "DeviceProblem",
    "EnrollmentExpired",
    "EnrollmentReplayed",
    "InvalidDeviceRequest",
    "ServiceUnavailable",
    "UnknownEnrollment",
    "UserVerificationRequired",
    "VerificationRefused",
    "problem_for",
]


class DeviceProblem(Problem):
    """A problem on the device API (``/device/v1``)."""


class InvalidDeviceRequest(DeviceProblem):
    """The body is not JSON, or a member is missing or has the wrong form; ``detail`` names it."""

    type = PROBLEM_BASE + "invalid-device-request"
    title = "The request is malformed"
    status = 400


class UnknownEnrollment(DeviceProblem):
    """No enrollment has that id."""

    type = PROBLEM_BASE + "unknown-enrollment"
    title = "No such enrollment"
    status = 404


class EnrollmentReplayed(DeviceProblem):
    """The enrollment was already completed, or refused: each is used once. Start a new one."""

    type = PROBLEM_BASE + "enrollment-already-used"
    title = "This enrollment has already been used"
    status = 409


class EnrollmentExpired(DeviceProblem):
    """The enrollment's time ran out before it was completed. Start a new one."""

    type = PROBLEM_BASE + "enrollment-expired"
    title = "This enrollment has expired"
    status = 410


class ServiceUnavailable(DeviceProblem):
    """A store the portal needs cannot be reached now; retry later."""

    type = PROBLEM_BASE + "service-unavailable"
    title = "The service is unavailable; try again later"
    status = 503

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "5"})


class VerificationRefused(DeviceProblem):
    """A verification failed; the subclass says which class of check."""

    status = 403


class ClientDataMismatch(VerificationRefused):
    """A credential was not made for this enrollment: its challenge, origin, RP ID or ceremony type."""

    type = PROBLEM_BASE + "credential-not-for-this-enrollment"
    title = "A credential was not created with this enrollment's options"


class UserVerificationRequired(VerificationRefused):
    """The SE did not verify the user (UV flag clear), or the user was not present."""

    type = PROBLEM_BASE + "user-verification-required"
    title = "The secure element must verify the user"


class DeviceBoundKeyRequired(VerificationRefused):
    """A key may be backed up or synced (BE flag set); only device-bound keys are enrolled."""

    type = PROBLEM_BASE + "device-bound-key-required"
    title = "The keys must be bound to this device"


class AttestationRejected(VerificationRefused):
    """An attestation is not ``packed`` with a certificate chain to a trusted SE vendor, or does not verify."""

    type = PROBLEM_BASE + "attestation-rejected"
    title = "The secure element's attestation was not accepted"


class CardCertificateRejected(VerificationRefused):
    """A card certificate is not trusted, not valid now, revoked, of the wrong kind, or its status is unknown."""

    type = PROBLEM_BASE + "card-certificate-rejected"
    title = "The card certificate was not accepted"


class CardSignatureRejected(VerificationRefused):
    """A card signature does not verify over the binding digest, or the two certificates are not one card's."""

    type = PROBLEM_BASE + "card-signature-rejected"
    title = "The card's signature was not accepted"


_PROBLEMS: dict[Reason, type[VerificationRefused]] = {
    Reason.WRONG_CEREMONY: ClientDataMismatch,
    Reason.CHALLENGE_MISMATCH: ClientDataMismatch,
    Reason.ORIGIN_MISMATCH: ClientDataMismatch,
    Reason.RP_ID_MISMATCH: ClientDataMismatch,
    Reason.MALFORMED_ATTESTATION: AttestationRejected,
    Reason.USER_NOT_PRESENT: UserVerificationRequired,
    Reason.USER_NOT_VERIFIED: UserVerificationRequired,
    Reason.BACKUP_ELIGIBLE: DeviceBoundKeyRequired,
    Reason.UNSUPPORTED_ALGORITHM: AttestationRejected,
    Reason.ATTESTATION_FORMAT_REFUSED: AttestationRejected,
    Reason.SELF_ATTESTATION_REFUSED: AttestationRejected,
    Reason.ATTESTATION_CERTIFICATE_PROFILE: AttestationRejected,
    Reason.ATTESTATION_CERTIFICATE_IS_CA: AttestationRejected,
    Reason.AAGUID_MISMATCH: AttestationRejected,
    Reason.ATTESTATION_UNTRUSTED: AttestationRejected,
    Reason.ATTESTATION_INVALID: AttestationRejected,
    Reason.SAME_KEY_TWICE: AttestationRejected,
    Reason.CARD_CERTIFICATE_UNTRUSTED: CardCertificateRejected,
    Reason.CARD_CERTIFICATE_REVOKED: CardCertificateRejected,
    Reason.CARD_CERTIFICATE_EXPIRED: CardCertificateRejected,
    Reason.CARD_CERTIFICATE_NOT_YET_VALID: CardCertificateRejected,
    Reason.CARD_CERTIFICATE_WRONG_PURPOSE: CardCertificateRejected,
    Reason.CARD_REVOCATION_UNAVAILABLE: CardCertificateRejected,
    Reason.CARD_ATTRIBUTES_MALFORMED: CardCertificateRejected,
    Reason.CARD_SIGNATURE_INVALID: CardSignatureRejected,
    Reason.CARD_CERTIFICATES_UNRELATED: CardSignatureRejected,
}


def problem_for(rejected: EnrollmentRejected) -> VerificationRefused:
    """The public problem for a refused enrollment: its title and type, no detail."""
    return _PROBLEMS[rejected.reason]()
