"""Why an enrollment is refused: one Reason per check of ``verify_enrollment``, for the log only."""

from __future__ import annotations

import enum

__all__ = [
    "EnrollmentAlreadyUsed",
    "EnrollmentNotFound",
    "EnrollmentRejected",
    "EnrollmentTimedOut",
    "EnrollmentUnavailable",
    "Reason",
]


class Reason(enum.StrEnum):
    """Why an enrollment was refused; logged, never sent to the phone."""

    WRONG_CEREMONY = "wrong_ceremony"
    CHALLENGE_MISMATCH = "challenge_mismatch"
    ORIGIN_MISMATCH = "origin_mismatch"
    MALFORMED_ATTESTATION = "malformed_attestation"
    RP_ID_MISMATCH = "rp_id_mismatch"
    USER_NOT_PRESENT = "user_not_present"
    USER_NOT_VERIFIED = "user_not_verified"
    BACKUP_ELIGIBLE = "backup_eligible"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    ATTESTATION_FORMAT_REFUSED = "attestation_format_refused"
    SELF_ATTESTATION_REFUSED = "self_attestation_refused"
    ATTESTATION_CERTIFICATE_PROFILE = "attestation_certificate_profile"
    ATTESTATION_CERTIFICATE_IS_CA = "attestation_certificate_is_ca"
    AAGUID_MISMATCH = "aaguid_mismatch"
    ATTESTATION_UNTRUSTED = "attestation_untrusted"
    ATTESTATION_INVALID = "attestation_invalid"
    SAME_KEY_TWICE = "same_key_twice"
    CARD_CERTIFICATE_UNTRUSTED = "card_certificate_untrusted"
    CARD_CERTIFICATE_REVOKED = "card_certificate_revoked"
    CARD_CERTIFICATE_EXPIRED = "card_certificate_expired"
    CARD_CERTIFICATE_NOT_YET_VALID = "card_certificate_not_yet_valid"
    CARD_CERTIFICATE_WRONG_PURPOSE = "card_certificate_wrong_purpose"
    CARD_REVOCATION_UNAVAILABLE = "card_revocation_unavailable"
    CARD_ATTRIBUTES_MALFORMED = "card_attributes_malformed"
    CARD_SIGNATURE_INVALID = "card_signature_invalid"
    CARD_CERTIFICATES_UNRELATED = "card_certificates_unrelated"


class EnrollmentRejected(Exception):
    """The enrollment failed a check. ``reason`` says which; ``subject`` says of what
    (``auth credential``, ``sign credential``, ``card auth certificate`` ...). Both are for the
    log: the phone learns only the class of the failure (``idp.ceremonies.problems``)."""

    def __init__(self, reason: Reason, subject: str, detail: str = "") -> None:
        super().__init__(reason, subject, detail)
        self.reason = reason
        self.subject = subject
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.subject}: {self.reason.value}{f' ({self.detail})' if self.detail else ''}"


class EnrollmentUnavailable(LookupError):
    """The enrollment cannot be completed: unknown, already used, or expired (the subclass says)."""


class EnrollmentNotFound(EnrollmentUnavailable):
    """No enrollment was ever started with that id (or so long ago that the portal forgot it)."""


class EnrollmentAlreadyUsed(EnrollmentUnavailable):
    """The enrollment was completed or refused before: each is used once."""


class EnrollmentTimedOut(EnrollmentUnavailable):
    """The enrollment expired before the phone completed it."""
