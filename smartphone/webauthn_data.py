"""The WebAuthn Level 3 data formats the simulated SE produces (§5.8.1, §6.1, §6.5, §8.2).

Byte layouts only, no keys: client data JSON, authenticator data with its flags and signature
counter, the COSE_Key of a P-256 credential, and the CBOR attestation object of the ``packed``
format. CBOR is written by ``cbor2`` in CTAP2 canonical form, never by hand.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
from uuid import UUID

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "COSE_ALG_ES256",
    "MAX_SIGN_COUNT",
    "AuthenticatorFlags",
    "attestation_object",
    "attested_credential_data",
    "authenticator_data",
    "b64url",
    "b64url_decode",
    "client_data_json",
    "cose_ec2_public_key",
]

COSE_ALG_ES256 = -7
"""ECDSA with SHA-256 (RFC 9053 §2.1)."""
_COSE_KTY_EC2 = 2
_COSE_CRV_P256 = 1

MAX_SIGN_COUNT = 2**32 - 1
"""signCount is a 32-bit unsigned big-endian integer (§6.1)."""


class AuthenticatorFlags(enum.IntFlag):
    """The flags byte of authenticator data (§6.1)."""

    UP = 0x01
    """User present."""
    UV = 0x04
    """User verified."""
    BE = 0x08
    """Backup eligible: never set by this SE, whose keys are device-bound."""
    BS = 0x10
    """Backed up: never set by this SE."""
    AT = 0x40
    """Attested credential data included."""
    ED = 0x80
    """Extension data included."""


def b64url(data: bytes) -> str:
    """Base64url without padding, as WebAuthn's JSON serialisation uses (§5.1.10)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of ``b64url``; padding optional. Raises ValueError for anything else."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url text") from exc


def client_data_json(*, ceremony: str, challenge: bytes, origin: str) -> bytes:
    """CollectedClientData serialised as a browser does it (§5.8.1.1): fixed member order."""
    return json.dumps(
        {"type": ceremony, "challenge": b64url(challenge), "origin": origin, "crossOrigin": False},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def cose_ec2_public_key(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The credential public key as a COSE_Key (RFC 9052 §7; EC2, P-256, alg ES256)."""
    numbers = public_key.public_numbers()
    return cbor2.dumps(
        {
            1: _COSE_KTY_EC2,
            3: COSE_ALG_ES256,
            -1: _COSE_CRV_P256,
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        },
        canonical=True,
    )


def attested_credential_data(*, aaguid: UUID, credential_id: bytes, public_key: ec.EllipticCurvePublicKey) -> bytes:
    """aaguid (16) || credentialIdLength (2) || credentialId || credentialPublicKey (§6.5.2)."""
    return aaguid.bytes + len(credential_id).to_bytes(2, "big") + credential_id + cose_ec2_public_key(public_key)


def authenticator_data(
    *, rp_id: str, flags: AuthenticatorFlags, sign_count: int, attested: bytes = b"",
) -> bytes:
    """rpIdHash (32) || flags (1) || signCount (4) || attestedCredentialData (§6.1)."""
    if not 0 <= sign_count <= MAX_SIGN_COUNT:
        raise ValueError("signCount is a 32-bit unsigned integer")
    if bool(attested) != bool(flags & AuthenticatorFlags.AT):
        raise ValueError("the AT flag is set exactly when attested credential data follows")
    rp_id_hash = hashlib.sha256(rp_id.encode("utf-8")).digest()
    return rp_id_hash + bytes([int(flags)]) + sign_count.to_bytes(4, "big") + attested


def attestation_object(*, auth_data: bytes, alg: int, sig: bytes, x5c: list[bytes]) -> bytes:
    """A ``packed`` attestation object with a full (x5c) attestation statement (§8.2)."""
    return cbor2.dumps(
        {"fmt": "packed", "attStmt": {"alg": alg, "sig": sig, "x5c": x5c}, "authData": auth_data},
        canonical=True,
    )
