"""One valid enrollment ceremony made by the simulators, and the tools to change one thing in it.

The SE vendor is minted here (not by ``smartphone.vendor``) so that a test holds the batch
attestation key and can re-sign an attestation it has tampered with, or mint a faulty
attestation certificate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from webauthn.helpers import parse_registration_credential_json

from idp.ceremonies.enrollment import (
    EnrollmentTrust,
    PendingEnrollment,
    RevocationInfo,
    binding_digest,
    start_enrollment,
)
from idp.pki.attributes import BasicAttributes, Sex
from idp.pki.oids import FIDO_AAGUID
from idp.pki.profiles import VENDOR_ROOT, Issuer, KeyAlgorithm, build_certificate, generate_key
from smartphone.card import CardKey, MyNumberCard
from smartphone.jlis import AUTH_CA, ROOT, SIGN_CA, JLis
from smartphone.secure_element import AttestationIdentity, KeyPurpose, SecureElement
from smartphone.webauthn_data import b64url, b64url_decode

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
"""Before the wall clock, which py_webauthn judges attestation certificates by."""
RP_ID = "id.myna.test"
ORIGIN = "https://id.myna.test"
AUTH_PIN = "1234"
SIGN_PIN = "TARO2024"
AAGUID = uuid.UUID("0c4d6a3e-8f21-4b7a-9d55-3e1f2a6b7c80")
TARO = BasicAttributes(
    name="山田　太郎", address="東京都千代田区永田町1-7-1", date_of_birth=date(1990, 4, 1), sex=Sex.MALE,
)
HANAKO = BasicAttributes(
    name="佐藤　花子", address="大阪府大阪市北区1-1", date_of_birth=date(1985, 9, 9), sex=Sex.FEMALE,
)


def attestation_certificate(
    issuer: Issuer,
    key: ec.EllipticCurvePrivateKey,
    *,
    ou: str | None = "Authenticator Attestation",
    ca: bool = False,
    aaguid: uuid.UUID | None = AAGUID,
) -> x509.Certificate:
    """A packed attestation certificate, faulty where asked (§8.2.1), signed by ``issuer``."""
    names = [x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test SE")]
    if ou is not None:
        names.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    names.append(x509.NameAttribute(NameOID.COMMON_NAME, "Test SE 1"))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if aaguid is not None:
        aaguid_extension = x509.UnrecognizedExtension(FIDO_AAGUID, b"\x04\x10" + aaguid.bytes)
        builder = builder.add_extension(aaguid_extension, critical=False)
    return builder.sign(issuer.private_key, hashes.SHA256())  # type: ignore[arg-type]


@dataclasses.dataclass
class SeVendor:
    """An SE vendor whose keys the test holds."""

    root: Issuer
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str = "Test SE Vendor") -> SeVendor:
        root_key = generate_key(KeyAlgorithm.EC_P256)
        root_certificate = build_certificate(
            profile=VENDOR_ROOT,
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
            public_key=root_key.public_key(),
            issuer=None,
            signing_key=root_key,
            not_before=NOW - timedelta(days=60),
            not_after=NOW + timedelta(days=7300),
        )
        root = Issuer(root_certificate, root_key)
        key = generate_key(KeyAlgorithm.EC_P256)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(root=root, key=key, certificate=attestation_certificate(root, key))

    def element(self) -> SecureElement:
        return SecureElement(AttestationIdentity(private_key=self.key, chain=[self.certificate], aaguid=AAGUID))


def reattest(
    response: dict[str, Any],
    *,
    signer: ec.EllipticCurvePrivateKey,
    x5c: list[x509.Certificate] | None = None,
    flags_set: int = 0,
    client_data: bytes | None = None,
    fmt: str = "packed",
    att_stmt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``response`` with its attestation object rebuilt (and re-signed by ``signer``) after a change."""
    response = {**response, "response": dict(response["response"])}
    decoded = cbor2.loads(b64url_decode(response["response"]["attestationObject"]))
    auth_data = bytearray(decoded["authData"])
    auth_data[32] |= flags_set
    if client_data is not None:
        response["response"]["clientDataJSON"] = b64url(client_data)
    client_data_hash = hashlib.sha256(b64url_decode(response["response"]["clientDataJSON"])).digest()
    if att_stmt is None:
        signature = signer.sign(bytes(auth_data) + client_data_hash, ec.ECDSA(hashes.SHA256()))
        chain = x5c if x5c is not None else [x509.load_der_x509_certificate(decoded["attStmt"]["x5c"][0])]
        att_stmt = {"alg": -7, "sig": signature, "x5c": [c.public_bytes(serialization.Encoding.DER) for c in chain]}
    rebuilt = cbor2.dumps({"fmt": fmt, "attStmt": att_stmt, "authData": bytes(auth_data)}, canonical=True)
    response["response"]["attestationObject"] = b64url(rebuilt)
    return response


@dataclasses.dataclass
class Ceremony:
    """One valid enrollment: the pending state, what the phone sent, and what the portal trusts."""

    pending: PendingEnrollment
    element: SecureElement
    card: MyNumberCard
    jlis: JLis
    vendor: SeVendor
    auth_response: dict[str, Any]
    sign_response: dict[str, Any]
    card_auth_signature: bytes
    card_sign_signature: bytes

    @property
    def binding(self) -> bytes:
        auth = self.element.public_key(b64url_decode(self.auth_response["rawId"]))
        sign = self.element.public_key(b64url_decode(self.sign_response["rawId"]))
        return binding_digest(challenge=self.pending.card_challenge, auth_public_key=auth, sign_public_key=sign)

    def trust(self, **changes: Any) -> EnrollmentTrust:
        trust = EnrollmentTrust(
            attestation_roots=(self.vendor.root.certificate,),
            jlis_roots=(self.jlis.root.certificate,),
            jlis_intermediates=(self.jlis.auth_ca.certificate, self.jlis.sign_ca.certificate),
        )
        return dataclasses.replace(trust, **changes)

    def crls(self, now: datetime = NOW) -> tuple[bytes, ...]:
        return tuple(
            self.jlis.crl(name, now=now - timedelta(minutes=1)).public_bytes(serialization.Encoding.DER)
            for name in (ROOT, AUTH_CA, SIGN_CA)
        )

    def inputs(self, **changes: Any) -> dict[str, Any]:
        """The keyword arguments of ``verify_enrollment`` for this ceremony, with ``changes``."""
        certificates = self.card.certificates
        values: dict[str, Any] = {
            "pending": self.pending,
            "auth_attestation": self.auth_response,
            "sign_attestation": self.sign_response,
            "card_auth_certificate": certificates.auth,
            "card_sign_certificate": certificates.sign,
            "card_auth_signature": self.card_auth_signature,
            "card_sign_signature": self.card_sign_signature,
            "trust": self.trust(),
            "revocation": RevocationInfo(crls=self.crls()),
            "now": NOW,
        }
        values.update(changes)
        for name in ("auth_attestation", "sign_attestation"):
            if isinstance(values[name], dict):
                values[name] = parse_registration_credential_json(values[name])
        return values


def new_jlis(tmp_path: Any, name: str = "jlis") -> JLis:
    return JLis.create(base_url=f"http://{name}.test", now=NOW - timedelta(days=400), registry_dir=tmp_path / name)


def new_card(jlis: JLis, attributes: BasicAttributes = TARO, **kwargs: Any) -> MyNumberCard:
    kwargs.setdefault("now", NOW - timedelta(days=10))
    return jlis.issue_card(
        attributes=attributes, prefecture="東京都", city="千代田区", auth_pin=AUTH_PIN, sign_pin=SIGN_PIN, **kwargs,
    )


def make_ceremony(
    jlis: JLis,
    vendor: SeVendor,
    *,
    card: MyNumberCard | None = None,
    element: SecureElement | None = None,
    rp_id: str = RP_ID,
    origin: str = ORIGIN,
    presence_only: bool = False,
    pending: PendingEnrollment | None = None,
) -> Ceremony:
    """Start an enrollment (or take ``pending``) and answer it as the phone and the card do."""
    pending = pending or start_enrollment(rp_id=RP_ID, origin=ORIGIN, ttl=timedelta(minutes=5), now=NOW)
    element = element or vendor.element()
    card = card or new_card(jlis)
    auth = element.make_credential(
        rp_id=rp_id, challenge=pending.auth_challenge, origin=origin, purpose=KeyPurpose.AUTH,
        presence_only=presence_only,
    )
    sign = element.make_credential(
        rp_id=rp_id, challenge=pending.sign_challenge, origin=origin, purpose=KeyPurpose.SIGN,
        presence_only=presence_only,
    )
    digest = binding_digest(
        challenge=pending.card_challenge,
        auth_public_key=element.public_key(b64url_decode(auth["rawId"])),
        sign_public_key=element.public_key(b64url_decode(sign["rawId"])),
    )
    return Ceremony(
        pending=pending, element=element, card=card, jlis=jlis, vendor=vendor, auth_response=auth,
        sign_response=sign,
        card_auth_signature=card.sign_digest(CardKey.AUTH, digest, pin=AUTH_PIN),
        card_sign_signature=card.sign_digest(CardKey.SIGN, digest, pin=SIGN_PIN),
    )
