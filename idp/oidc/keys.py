"""The portal's token-signing keys (RFC 7517 JWK, RFC 7638 key ids) and the pairwise-subject secret.

``init_signing_keys`` makes them once, into ``<instance>/keys`` (mode 0600 each): an ES256 key
(P-256), the default for ID tokens, and an RS256 key (RSA-2048, FAPI 2.0 §5.4's minimum) for
clients registered with ``id_token_alg = RS256``; and a 32-byte secret that keys the pairwise
``sub`` HMAC (``idp.oidc.pairwise``). ``KeyStore`` loads them once per application; its JWK Set
holds the public parts only, and its repr shows key ids, never key material.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey

__all__ = [
    "KeyStore",
    "SigningKey",
    "SigningKeysMissing",
    "init_signing_keys",
]

ALGORITHMS = ("ES256", "RS256")
"""The JWS algorithms the portal signs with, default first."""
RSA_KEY_BITS = 2048
PAIRWISE_SECRET_BYTES = 32
_FILES = {"ES256": "es256.key.pem", "RS256": "rs256.key.pem"}
_PAIRWISE_FILE = "pairwise.secret"


class SigningKeysMissing(RuntimeError):
    """The instance has no signing keys, or a key file is unreadable: run ``idp init``."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One private signing key with its algorithm and RFC 7638 thumbprint as ``kid``."""

    alg: str
    kid: str
    key: ECKey | RSAKey = field(repr=False)

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK with ``kid``, ``alg`` and ``use``."""
        data: dict[str, Any] = dict(self.key.as_dict(private=False))
        data.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return data


def init_signing_keys(instance: Path) -> bool:
    """Create the signing keys and the pairwise secret in ``instance/keys`` where missing.

    Idempotent: an existing file is never replaced. Returns whether anything was created.
    """
    directory = instance / "keys"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = False
    for alg, name in _FILES.items():
        path = directory / name
        if path.exists():
            continue
        private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
            ec.generate_private_key(ec.SECP256R1()) if alg == "ES256"
            else rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
        )
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
        )
        _write_new(path, pem)
        created = True
    pairwise = directory / _PAIRWISE_FILE
    if not pairwise.exists():
        _write_new(pairwise, secrets.token_bytes(PAIRWISE_SECRET_BYTES))
        created = True
    return created


class KeyStore:
    """The instance's signing keys and pairwise secret, loaded once. Raises SigningKeysMissing."""

    def __init__(self, instance: Path) -> None:
        directory = instance / "keys"
        keys: dict[str, SigningKey] = {}
        try:
            for alg, name in _FILES.items():
                pem = (directory / name).read_bytes()
                key: ECKey | RSAKey = ECKey.import_key(pem) if alg == "ES256" else RSAKey.import_key(pem)
                keys[alg] = SigningKey(alg=alg, kid=key.thumbprint(), key=key)
            self._pairwise_secret = (directory / _PAIRWISE_FILE).read_bytes()
        except (OSError, ValueError) as exc:
            raise SigningKeysMissing(f"{directory} holds no usable signing keys: run `idp init` ({exc})") from exc
        if len(self._pairwise_secret) < PAIRWISE_SECRET_BYTES:
            raise SigningKeysMissing(f"{directory / _PAIRWISE_FILE} is shorter than {PAIRWISE_SECRET_BYTES} bytes")
        self._keys = keys
        self._jwks = {"keys": [key.public_jwk() for key in keys.values()]}

    def __repr__(self) -> str:
        """Key ids only."""
        kids = ", ".join(f"{key.alg}:{key.kid}" for key in self._keys.values())
        return f"KeyStore({kids})"

    def signing_key(self, alg: str) -> SigningKey:
        """The key for ``alg`` (ES256 or RS256); KeyError for another."""
        return self._keys[alg]

    @property
    def pairwise_secret(self) -> bytes:
        """The HMAC key of pairwise subjects; never leaves the portal."""
        return self._pairwise_secret

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set served at ``/jwks`` (RFC 7517 §5): public parts only."""
        return {"keys": [dict(key) for key in self._jwks["keys"]]}


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600; an existing file is never replaced."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    path.chmod(0o600)
