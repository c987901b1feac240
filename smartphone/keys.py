"""Private keys at rest, and the one digest the simulated keys sign.

A key is stored as PKCS#8 PEM encrypted with ``BestAvailableEncryption`` under the state's
passphrase; ``seal_key`` and ``unseal_key`` are the only two places that cross that line.
Card and SE keys sign a SHA-256 digest computed by the caller (RSASSA-PKCS1-v1_5 and ECDSA
with ``Prehashed``), as a real card or SE receives a digest, never the document.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from smartphone.files import CorruptState

__all__ = [
    "DIGEST_LENGTH",
    "PREHASHED_SHA256",
    "InvalidDigest",
    "WrongPassphrase",
    "require_sha256_digest",
    "seal_key",
    "unseal_key",
]

DIGEST_LENGTH = 32
"""Bytes in a SHA-256 digest."""

PREHASHED_SHA256 = Prehashed(hashes.SHA256())


class InvalidDigest(ValueError):
    """What was given to sign is not a SHA-256 digest (32 bytes)."""


class WrongPassphrase(ValueError):
    """The passphrase does not decrypt the stored private key."""


def require_sha256_digest(digest: bytes) -> bytes:
    """Return ``digest`` if it is 32 bytes, else raise InvalidDigest."""
    if not isinstance(digest, bytes) or len(digest) != DIGEST_LENGTH:
        raise InvalidDigest(f"a SHA-256 digest is {DIGEST_LENGTH} bytes")
    return digest


def seal_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    """``key`` as encrypted PKCS#8 PEM. Raises ValueError for an empty passphrase."""
    if not passphrase:
        raise ValueError("a private key is never stored without a passphrase")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def unseal_key(pem: bytes, passphrase: bytes) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """The private key in encrypted PKCS#8 ``pem``.

    Raises WrongPassphrase when ``passphrase`` does not decrypt it, and CorruptState when the PEM
    is not an encrypted RSA or EC key.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as exc:  # cryptography's word for "this key is not encrypted"
        raise CorruptState("the stored key is not an encrypted PKCS#8 key") from exc
    except ValueError as exc:
        raise WrongPassphrase("the passphrase does not decrypt the stored private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CorruptState("the stored key is neither RSA nor EC")
    return key
