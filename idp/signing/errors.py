"""Why a signature was refused or did not verify: one stable reason code per check.

The same codes serve the signing steps (``SigningRejected``, raised) and verification
(``Verification``, returned): an RP, a court or ``idp verify`` reads the code, never a message.
"""

from __future__ import annotations

import enum

__all__ = ["Reason", "SigningRejected"]


class Reason(enum.StrEnum):
    """A stable reason code, as the verification endpoint and ``idp verify`` report it."""

    MALFORMED = "malformed"
    """The input is not what it claims to be: not DER CMS, not a PDF, not a JWS, a bad digest size."""
    TOO_LARGE = "too_large"
    """The input is larger than the portal reads (``signing.max_document_bytes``)."""
    DOCUMENT_MODIFIED = "document_modified"
    """The document is not the one signed: its bytes do not hash to the signed message digest,
    or a signed PDF was changed after signing."""
    DIGEST_MISMATCH = "digest_mismatch"
    """A stated digest differs from the signed one (an assertion's, the RP's, or one given to verify)."""
    BAD_SIGNATURE = "bad_signature"
    """The signature value does not verify with the signer certificate's key."""
    AUTHENTICATION_KEY = "authentication_key"
    """The phone signed with its authentication key: only the signature key signs documents."""
    NOT_SIGNATURE_CERTIFICATE = "not_signature_certificate"
    """The signer certificate is not a smartphone signature certificate (wrong policy or key usage)."""
    UNKNOWN_CERTIFICATE = "unknown_certificate"
    """The signer certificate does not chain to the portal's roots, or the portal never issued it."""
    CERTIFICATE_REVOKED = "certificate_revoked"
    """The signer certificate was revoked (or suspended) when the signature was made."""
    CERTIFICATE_EXPIRED = "certificate_expired"
    """The signer certificate was not valid at the signing time."""
    REVOCATION_UNAVAILABLE = "revocation_unavailable"
    """No current revocation status for the signer certificate is embedded."""
    BAD_TIMESTAMP = "bad_timestamp"
    """The signature timestamp is missing, does not cover the signature, or is not from a trusted TSA."""
    BAD_ASSERTION = "bad_assertion"
    """A signed-document assertion's JWS does not verify with the portal's keys, or its claims are wrong."""


class SigningRejected(Exception):
    """A signing step refused its input; ``reason`` says which check, ``detail`` says more (logs only)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"
