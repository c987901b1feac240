"""The signed-document assertion: a JWS (RFC 7515) from the portal about one signing request.

It states who signed which documents when, with which certificate and its status, for one RP:
``iss`` the portal, ``aud`` the RP's client id, ``sub`` the person's pairwise subject for that
RP, each document's label and SHA-256 with the time its signature's timestamp proves, the
signer certificate chain (``x5c``) and the OCSP answer embedded in the signatures, and - only
when the user consented to release them to this RP - the verified attributes read from the
signature certificate (OpenID Connect for Identity Assurance ``verified_claims``). It is signed
with the OIDC provider's keys (``idp.oidc.keys``), header ``typ`` ``signed-document+jwt``, so
anyone verifies it with the published JWK Set, offline. The claim set is in docs/signing.md.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp.oidc.keys import KeyStore
from idp.signing.errors import Reason
from idp.signing.verification import Verification, invalid

__all__ = ["ASSERTION_TYPE", "SignedDocument", "make_assertion", "verify_assertion"]

ASSERTION_TYPE = "signed-document+jwt"
"""The JWS ``typ`` (RFC 8725 §3.11: explicit typing, so no other portal JWT passes for one)."""
SIGNATURE_FORMATS = frozenset({"cades", "pades"})
SHA256_BYTES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedDocument:
    """One document of a signing request and the verification of its signature."""

    label: str
    digest: bytes
    """SHA-256 of the document as the RP named it (for a PDF given to sign, of that PDF)."""
    signature_format: str
    """``cades`` (a detached signature over ``digest``) or ``pades`` (the signed PDF)."""
    verification: Verification
    """The portal's verification of the signature it assembled: valid, with signer and time."""

    def claim(self) -> dict[str, Any]:
        """The entry of ``documents``."""
        signing_time = self.verification.signing_time
        assert signing_time is not None  # noqa: S101 - make_assertion accepts valid verifications only
        return {
            "label": self.label,
            "digest_alg": "sha256",
            "digest": _b64url(self.digest),
            "signature_format": self.signature_format,
            "signing_time": int(signing_time.timestamp()),
        }


def make_assertion(
    *,
    keys: KeyStore,
    alg: str,
    issuer: str,
    client_id: str,
    subject: str,
    documents: Sequence[SignedDocument],
    chain: Sequence[x509.Certificate],
    release: Sequence[str],
    now: datetime,
) -> str:
    """The compact JWS of the signed-document assertion for one signing request.

    Every document's signature must have verified, by one signer, the leaf of ``chain`` (leaf
    first, root last). ``release`` names the attribute claims the user consented to release to
    ``client_id``; only those appear. Raises ValueError otherwise: the portal asserts only
    what it has verified.
    """
    if not documents:
        raise ValueError("an assertion states at least one document")
    for document in documents:
        if document.signature_format not in SIGNATURE_FORMATS:
            raise ValueError("a document's signature format is cades or pades")
        if not document.verification.valid or document.verification.signer != chain[0]:
            raise ValueError("every document's signature must have verified, by the chain's leaf")
    times = [document.verification.signing_time for document in documents]
    signing_time = max(time for time in times if time is not None)
    status = documents[-1].verification.status_response
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": client_id,
        "sub": subject,
        "iat": int(now.timestamp()),
        "jti": secrets.token_urlsafe(16),
        "signing_time": int(signing_time.timestamp()),
        "documents": [document.claim() for document in documents],
        "signer": {
            "x5c": [_b64(certificate.public_bytes(serialization.Encoding.DER)) for certificate in chain],
            "status": {"state": "good", "ocsp": _b64(status) if status is not None else None},
        },
    }
    # Imported here: idp.oidc.authorization reads signing requests (idp.signing), and idp.oidc.claims
    # imports idp.oidc.authorization, so a module-level import would be circular.
    from idp.oidc.claims import identity_claims  # noqa: PLC0415

    verified = identity_claims(certificate=chain[0], release=release, verified_at=signing_time)
    if verified:
        claims["verified_claims"] = verified["verified_claims"]
    key = keys.signing_key(alg)
    return jwt.encode({"alg": key.alg, "kid": key.kid, "typ": ASSERTION_TYPE}, claims, key.key, algorithms=[key.alg])


def verify_assertion(
    token: str,
    *,
    jwks: Mapping[str, Any],
    issuer: str,
    document: bytes | None = None,
) -> Verification:
    """Verify an assertion with the portal's JWK Set; with ``document``, that it names it.

    BAD_ASSERTION when the JWS does not verify with any published key, has another ``typ`` or
    ``iss``, or lacks its documents; DIGEST_MISMATCH when ``document`` is none of those named.
    """
    try:
        keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type] # a JWK Set read from JSON
        decoded = jwt.decode(token, keys, algorithms=["ES256", "RS256"])
    except (JoseError, ValueError, TypeError) as exc:
        return invalid(Reason.BAD_ASSERTION, f"the assertion does not verify with the portal's keys: {exc}")
    if decoded.header.get("typ") != ASSERTION_TYPE:
        return invalid(Reason.BAD_ASSERTION, f"the JWS typ is not {ASSERTION_TYPE}")
    claims = decoded.claims
    if claims.get("iss") != issuer:
        return invalid(Reason.BAD_ASSERTION, "the assertion was issued by another portal")
    try:
        digests = [_unb64url(entry["digest"]) for entry in claims["documents"]]
        signing_time = datetime.fromtimestamp(int(claims["signing_time"]), tz=UTC)
    except (KeyError, TypeError, ValueError):
        return invalid(Reason.BAD_ASSERTION, "the assertion lacks its documents or signing time")
    if document is not None and hashlib.sha256(document).digest() not in digests:
        return invalid(Reason.DIGEST_MISMATCH, "the document is none of those the assertion names")
    return Verification(valid=True, signing_time=signing_time, claims=dict(claims))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(decoded) != SHA256_BYTES:
        raise ValueError("a digest is 32 bytes")
    return decoded
