"""The simulated smartphone secure element (SE): non-exportable P-256 keys, attested.

Each credential is a P-256 key made in the SE for one RP ID and one purpose. The
authentication key registers and logs in with WebAuthn L3 data (``packed`` attestation by the
vendor's batch key, §8.2; assertions, §6.3.3); the signature key registers the same way and then
only signs raw SHA-256 digests (ECDSA, DER), which a WebAuthn assertion cannot do. Each
signature by a key bumps that key's counter. Biometric user verification is a switch: when it
fails, every operation raises UserVerificationFailed, unless the caller asks for a presence-only
ceremony, which yields UV=0 data. The keys are device-bound: BE and BS are never set.
No method returns a private key.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from idp.pki.profiles import KeyAlgorithm, generate_key
from smartphone.files import CorruptState
from smartphone.keys import PREHASHED_SHA256, require_sha256_digest, seal_key, unseal_key
from smartphone.webauthn_data import (
    COSE_ALG_ES256,
    MAX_SIGN_COUNT,
    AuthenticatorFlags,
    attestation_object,
    attested_credential_data,
    authenticator_data,
    b64url,
    b64url_decode,
    client_data_json,
)

__all__ = [
    "AttestationIdentity",
    "CredentialInfo",
    "KeyPurpose",
    "SecureElement",
    "SecureElementError",
    "UnknownCredential",
    "UserVerification",
    "UserVerificationFailed",
    "WrongKeyPurpose",
]

CREDENTIAL_ID_BYTES = 32


class KeyPurpose(enum.StrEnum):
    """What an SE key is for; fixed when it is made."""

    AUTH = "auth"
    """Logs in: WebAuthn assertions only."""
    SIGN = "sign"
    """Signs documents and consents: raw digest signatures only."""


class UserVerification(enum.Enum):
    """The outcome the simulated biometric sensor gives."""

    PASS = "pass"  # noqa: S105 - a sensor outcome, not a password
    FAIL = "fail"


class SecureElementError(Exception):
    """The SE refused an operation."""


class UserVerificationFailed(SecureElementError):
    """The biometric check failed; nothing was signed."""


class WrongKeyPurpose(SecureElementError):
    """The key exists but is not for this operation (login with the sign key, or the reverse)."""


class UnknownCredential(SecureElementError):
    """No credential with that id exists in this SE for that RP ID."""


def _signing_key(key: object) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CorruptState("an SE key must be a P-256 key")
    return key


class AttestationIdentity:
    """The batch attestation key and certificate chain a vendor puts into each SE of a model."""

    __slots__ = ("_private_key", "aaguid", "chain")

    def __init__(self, *, private_key: ec.EllipticCurvePrivateKey, chain: Sequence[x509.Certificate],
                 aaguid: UUID) -> None:
        if not chain or chain[0].public_key() != private_key.public_key():
            raise ValueError("the chain must open with the attestation key's certificate")
        self._private_key = _signing_key(private_key)
        self.chain: tuple[x509.Certificate, ...] = tuple(chain)
        """x5c order: the attestation certificate, then any intermediates; never the root."""
        self.aaguid = aaguid

    def __repr__(self) -> str:
        return f"AttestationIdentity({self.chain[0].subject.rfc4514_string()!r}, aaguid={self.aaguid})"

    @property
    def certificate(self) -> x509.Certificate:
        """The attestation certificate."""
        return self.chain[0]

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 over ``data`` (the attestation statement's ``sig``)."""
        return self._private_key.sign(data, ec.ECDSA(hashes.SHA256()))

    def to_state(self, passphrase: bytes) -> dict[str, Any]:
        """JSON values: the key encrypted under ``passphrase``, the chain as PEM."""
        return {
            "aaguid": str(self.aaguid),
            "key": seal_key(self._private_key, passphrase).decode("ascii"),
            "chain": [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self.chain],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], passphrase: bytes) -> AttestationIdentity:
        """Inverse of ``to_state``. Raises WrongPassphrase or CorruptState."""
        key_pem, chain_pems, aaguid = _fields(state, "key", "chain", "aaguid", what="attestation identity")
        key = _signing_key(unseal_key(_ascii(key_pem), passphrase))
        try:
            chain = [x509.load_pem_x509_certificate(_ascii(pem)) for pem in chain_pems]
            return cls(private_key=key, chain=chain, aaguid=UUID(aaguid))
        except (TypeError, ValueError) as exc:
            raise CorruptState("the stored attestation identity is malformed") from exc


def _fields(state: object, *names: str, what: str) -> tuple[Any, ...]:
    if not isinstance(state, Mapping) or any(name not in state for name in names):
        raise CorruptState(f"the stored {what} is malformed")
    return tuple(state[name] for name in names)


def _ascii(text: object) -> bytes:
    if not isinstance(text, str):
        raise CorruptState("a stored PEM value is not text")
    return text.encode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialInfo:
    """What anyone may read about an SE credential."""

    credential_id: bytes
    rp_id: str
    purpose: KeyPurpose
    sign_count: int
    public_key: ec.EllipticCurvePublicKey


class _Credential:
    """One SE key. Never leaves the SE."""

    __slots__ = ("private_key", "purpose", "rp_id", "sign_count")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, *, rp_id: str, purpose: KeyPurpose,
                 sign_count: int) -> None:
        self.private_key = private_key
        self.rp_id = rp_id
        self.purpose = purpose
        self.sign_count = sign_count

    def __repr__(self) -> str:
        return f"_Credential({self.purpose.value}, {self.rp_id!r}, sign_count={self.sign_count})"

    def next_count(self) -> int:
        if self.sign_count >= MAX_SIGN_COUNT:
            raise SecureElementError("the signature counter is exhausted")
        self.sign_count += 1
        return self.sign_count


class SecureElement:
    """A phone's SE: attested P-256 credentials, a biometric switch, per-key counters."""

    __slots__ = ("_attestation", "_credentials", "user_verification")

    def __init__(self, attestation: AttestationIdentity) -> None:
        """An empty SE with the vendor's attestation identity (``Vendor.provision`` makes one)."""
        self._attestation = attestation
        self._credentials: dict[bytes, _Credential] = {}
        self.user_verification = UserVerification.PASS
        """The biometric sensor's outcome for the next operations."""

    def __repr__(self) -> str:
        return f"SecureElement(aaguid={self.aaguid}, credentials={len(self._credentials)})"

    @property
    def aaguid(self) -> UUID:
        """The model's AAGUID, as in its attestation certificate and attested credential data."""
        return self._attestation.aaguid

    @property
    def attestation_chain(self) -> tuple[x509.Certificate, ...]:
        """The x5c chain: attestation certificate first, root excluded."""
        return self._attestation.chain

    def credentials(self) -> list[CredentialInfo]:
        """Every credential in the SE, in the order they were made."""
        return [self.credential(credential_id) for credential_id in self._credentials]

    def credential(self, credential_id: bytes) -> CredentialInfo:
        """The public facts of one credential. Raises UnknownCredential."""
        credential = self._find(credential_id)
        return CredentialInfo(
            credential_id=credential_id,
            rp_id=credential.rp_id,
            purpose=credential.purpose,
            sign_count=credential.sign_count,
            public_key=credential.private_key.public_key(),
        )

    def public_key(self, credential_id: bytes) -> ec.EllipticCurvePublicKey:
        """The credential's public key. Raises UnknownCredential."""
        return self._find(credential_id).private_key.public_key()

    def make_credential(
        self,
        *,
        rp_id: str,
        challenge: bytes,
        origin: str,
        purpose: KeyPurpose | str,
        presence_only: bool = False,
    ) -> dict[str, Any]:
        """Make a key for ``purpose`` and return its WebAuthn RegistrationResponseJSON.

        Attestation ``packed`` (§8.2) with x5c and alg -7: the batch key signs authenticatorData
        || SHA-256(clientDataJSON). Flags UP, UV (absent when ``presence_only``) and AT; BE and
        BS clear; signCount 0. Raises ValueError for an unknown purpose and
        UserVerificationFailed when the biometric check fails.
        """
        purpose = KeyPurpose(purpose)
        flags = self._verify_user(presence_only=presence_only) | AuthenticatorFlags.AT
        private_key = _signing_key(generate_key(KeyAlgorithm.EC_P256))
        credential_id = secrets.token_bytes(CREDENTIAL_ID_BYTES)
        public_key = private_key.public_key()
        auth_data = authenticator_data(
            rp_id=rp_id,
            flags=flags,
            sign_count=0,
            attested=attested_credential_data(aaguid=self.aaguid, credential_id=credential_id, public_key=public_key),
        )
        client_data = client_data_json(ceremony="webauthn.create", challenge=challenge, origin=origin)
        signature = self._attestation.sign(auth_data + hashlib.sha256(client_data).digest())
        x5c = [certificate.public_bytes(serialization.Encoding.DER) for certificate in self.attestation_chain]
        self._credentials[credential_id] = _Credential(private_key, rp_id=rp_id, purpose=purpose, sign_count=0)
        spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(
                    attestation_object(auth_data=auth_data, alg=COSE_ALG_ES256, sig=signature, x5c=x5c),
                ),
                "authenticatorData": b64url(auth_data),
                "publicKey": b64url(spki),
                "publicKeyAlgorithm": COSE_ALG_ES256,
                "transports": ["internal"],
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }

    def get_assertion(
        self,
        *,
        credential_id: bytes,
        rp_id: str,
        challenge: bytes,
        origin: str,
        presence_only: bool = False,
    ) -> dict[str, Any]:
        """Sign a login assertion with the authentication key: AuthenticationResponseJSON (§6.3.3).

        The key signs authenticatorData || SHA-256(clientDataJSON); its counter goes up by one.
        Raises UnknownCredential (no such key for ``rp_id``), WrongKeyPurpose (the signature
        key never logs in) or UserVerificationFailed.
        """
        credential = self._find(credential_id, rp_id=rp_id)
        if credential.purpose is not KeyPurpose.AUTH:
            raise WrongKeyPurpose("the signature key never signs a login assertion")
        flags = self._verify_user(presence_only=presence_only)
        auth_data = authenticator_data(rp_id=rp_id, flags=flags, sign_count=credential.next_count())
        client_data = client_data_json(ceremony="webauthn.get", challenge=challenge, origin=origin)
        signature = credential.private_key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()),
        )
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }

    def sign_digest(self, *, credential_id: bytes, digest: bytes) -> bytes:
        """ECDSA (DER) over a SHA-256 ``digest`` with the signature key, after user verification.

        The key's counter goes up by one. Raises UnknownCredential, WrongKeyPurpose (the
        authentication key never signs a raw digest), InvalidDigest or UserVerificationFailed.
        """
        credential = self._find(credential_id)
        if credential.purpose is not KeyPurpose.SIGN:
            raise WrongKeyPurpose("the authentication key never signs a raw digest")
        require_sha256_digest(digest)
        self._verify_user(presence_only=False)
        credential.next_count()
        return credential.private_key.sign(digest, ec.ECDSA(PREHASHED_SHA256))

    def restore_counter(self, credential_id: bytes, value: int) -> None:
        """Set a key's counter back to ``value``: FOR TESTS, simulates a cloned SE.

        A clone keeps signing from the counter it was copied at, so the verifier sees a
        counter that does not increase. Raises UnknownCredential or ValueError.
        """
        if not 0 <= value <= MAX_SIGN_COUNT:
            raise ValueError("a signature counter is a 32-bit unsigned integer")
        self._find(credential_id).sign_count = value

    def to_state(self, passphrase: bytes) -> dict[str, Any]:
        """JSON values for storage: keys encrypted under ``passphrase``, counters, the switch."""
        return {
            "attestation": self._attestation.to_state(passphrase),
            "user_verification": self.user_verification.value,
            "credentials": [
                {
                    "id": b64url(credential_id),
                    "rp_id": credential.rp_id,
                    "purpose": credential.purpose.value,
                    "sign_count": credential.sign_count,
                    "key": seal_key(credential.private_key, passphrase).decode("ascii"),
                }
                for credential_id, credential in self._credentials.items()
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], passphrase: bytes) -> SecureElement:
        """Inverse of ``to_state``. Raises WrongPassphrase or CorruptState."""
        attestation, switch, credentials = _fields(
            state, "attestation", "user_verification", "credentials", what="secure element",
        )
        element = cls(AttestationIdentity.from_state(attestation, passphrase))
        try:
            element.user_verification = UserVerification(switch)
        except ValueError as exc:
            raise CorruptState("the stored user-verification switch is invalid") from exc
        if not isinstance(credentials, list):
            raise CorruptState("the stored credentials are malformed")
        for record in credentials:
            credential_id, rp_id, purpose, sign_count, key = _fields(
                record, "id", "rp_id", "purpose", "sign_count", "key", what="credential",
            )
            valid_count = isinstance(sign_count, int) and not isinstance(sign_count, bool)
            if not isinstance(rp_id, str) or not valid_count or not 0 <= sign_count <= MAX_SIGN_COUNT:
                raise CorruptState("the stored credential is malformed")
            try:
                raw_id, key_purpose = b64url_decode(credential_id), KeyPurpose(purpose)
            except ValueError as exc:
                raise CorruptState("the stored credential is malformed") from exc
            element._credentials[raw_id] = _Credential(
                _signing_key(unseal_key(_ascii(key), passphrase)),
                rp_id=rp_id, purpose=key_purpose, sign_count=sign_count,
            )
        return element

    def _find(self, credential_id: bytes, *, rp_id: str | None = None) -> _Credential:
        credential = self._credentials.get(credential_id) if isinstance(credential_id, bytes) else None
        # A credential is scoped to its RP ID (§6.3.3 step 7): another RP ID finds nothing.
        if credential is None or (rp_id is not None and credential.rp_id != rp_id):
            raise UnknownCredential("no such credential in this secure element")
        return credential

    def _verify_user(self, *, presence_only: bool) -> AuthenticatorFlags:
        """The flags of a ceremony: UP always; UV after a passing biometric check."""
        if presence_only:
            return AuthenticatorFlags.UP
        if self.user_verification is not UserVerification.PASS:
            raise UserVerificationFailed("biometric user verification failed")
        return AuthenticatorFlags.UP | AuthenticatorFlags.UV

