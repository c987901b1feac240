"""The SE vendor: an attestation root and one batch attestation certificate per SE model.

WebAuthn L3 §8.2.1: the packed attestation certificate names the vendor and the model, has
OU "Authenticator Attestation", is not a CA, and carries the model's AAGUID. Every SE of the
model shares the batch key (so one attestation does not single out one phone); the portal
trusts the vendor root it is configured with and nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from idp.pki.profiles import (
    ATTESTATION,
    VENDOR_ROOT,
    Issuer,
    KeyAlgorithm,
    attestation_subject,
    build_certificate,
    generate_key,
)
from smartphone.files import CorruptState
from smartphone.keys import seal_key, unseal_key
from smartphone.secure_element import AttestationIdentity, SecureElement

__all__ = ["ATTESTATION_VALIDITY", "ROOT_VALIDITY", "Vendor"]

ROOT_VALIDITY = timedelta(days=25 * 365)
ATTESTATION_VALIDITY = timedelta(days=20 * 365)
"""A batch certificate outlives the phones it ships in; attestation is checked at enrollment."""


def _ec_key(key: object) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CorruptState("a vendor key must be an EC key")
    return key


class Vendor:
    """An SE vendor with its attestation root and the batch identity of one SE model."""

    __slots__ = ("_attestation", "_root_key", "name", "root_certificate")

    def __init__(self, *, name: str, root_certificate: x509.Certificate, root_key: ec.EllipticCurvePrivateKey,
                 attestation: AttestationIdentity) -> None:
        """Use ``create`` or ``restore``."""
        self.name = name
        self.root_certificate = root_certificate
        self._root_key = root_key
        self._attestation = attestation

    def __repr__(self) -> str:
        return f"Vendor({self.name!r}, model={self.model!r})"

    @classmethod
    def create(cls, *, name: str, model: str, now: datetime, aaguid: UUID | None = None) -> Vendor:
        """A vendor with a new root and a batch attestation certificate for ``model``.

        Raises ValueError for an empty name or model.
        """
        if not name.strip() or not model.strip():
            raise ValueError("a vendor needs a name and a model")
        root_key = _ec_key(generate_key(KeyAlgorithm.EC_P256))
        root_certificate = build_certificate(
            profile=VENDOR_ROOT,
            subject=x509.Name([
                x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Attestation Root"),
            ]),
            public_key=root_key.public_key(),
            issuer=None,
            signing_key=root_key,
            not_before=now,
            not_after=now + ROOT_VALIDITY,
        )
        batch_key = _ec_key(generate_key(KeyAlgorithm.EC_P256))
        aaguid = aaguid or uuid.uuid4()
        batch_certificate = build_certificate(
            profile=ATTESTATION,
            subject=attestation_subject(vendor=name, model=model),
            public_key=batch_key.public_key(),
            issuer=Issuer(root_certificate, root_key),
            not_before=now,
            not_after=now + ATTESTATION_VALIDITY,
            aaguid=aaguid,
        )
        attestation = AttestationIdentity(private_key=batch_key, chain=[batch_certificate], aaguid=aaguid)
        return cls(name=name, root_certificate=root_certificate, root_key=root_key, attestation=attestation)

    @property
    def model(self) -> str:
        """The SE model of the batch certificate (its CN)."""
        names = self._attestation.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value)

    @property
    def aaguid(self) -> UUID:
        """The model's AAGUID."""
        return self._attestation.aaguid

    @property
    def attestation_certificate(self) -> x509.Certificate:
        """The batch attestation certificate."""
        return self._attestation.certificate

    @property
    def root_pem(self) -> bytes:
        """The root certificate as PEM, as the portal's trust configuration takes it."""
        return self.root_certificate.public_bytes(serialization.Encoding.PEM)

    def provision(self) -> SecureElement:
        """A new SE of this model, holding the batch attestation key and chain."""
        return SecureElement(self._attestation)

    def to_state(self, passphrase: bytes) -> dict[str, Any]:
        """JSON values for storage; the two private keys encrypted under ``passphrase``."""
        return {
            "name": self.name,
            "root": self.root_pem.decode("ascii"),
            "root_key": seal_key(self._root_key, passphrase).decode("ascii"),
            "attestation": self._attestation.to_state(passphrase),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], passphrase: bytes) -> Vendor:
        """Inverse of ``to_state``. Raises WrongPassphrase or CorruptState."""
        if not isinstance(state, Mapping) or not all(k in state for k in ("name", "root", "root_key", "attestation")):
            raise CorruptState("the stored vendor is malformed")
        name, root, root_key = state["name"], state["root"], state["root_key"]
        if not isinstance(name, str) or not isinstance(root, str) or not isinstance(root_key, str):
            raise CorruptState("the stored vendor is malformed")
        key = _ec_key(unseal_key(root_key.encode("ascii"), passphrase))
        try:
            certificate = x509.load_pem_x509_certificate(root.encode("ascii"))
        except ValueError as exc:
            raise CorruptState("the stored vendor root is not a certificate") from exc
        attestation = AttestationIdentity.from_state(state["attestation"], passphrase)
        return cls(name=name, root_certificate=certificate, root_key=key, attestation=attestation)
