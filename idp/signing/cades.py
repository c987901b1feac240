"""Detached CAdES baseline signatures (ETSI EN 319 122-1) made in two phases around the phone.

``prepare_cades`` builds the CMS signed attributes (RFC 5652 §11: content type, message digest,
signing time; RFC 5035 signing-certificate-v2) with pyHanko's CAdES attribute providers, and
says which digest the phone's secure element signs: SHA-256 of their DER. ``finish_cades``
checks the phone's signature and the certificate's status at that moment, then has pyHanko
package the SignedData with the external signature value, a signature timestamp from the
portal's unit (RFC 3161, CAdES-B-T) and the revocation data (CAdES-B-LT): the signer's OCSP
answer as RFC 5940 other revocation information and the root's CRL, both in SignedData.crls.

Between the phases the state is a ``PendingCades``, serialisable as JSON bytes, so that it can
wait in the ephemeral store while the phone signs, and finish in another worker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import cms, crl, ocsp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyhanko.sign.signers.pdf_cms import ExternalSigner, PdfCMSSignedAttributes
from pyhanko_certvalidator.registry import SimpleCertificateStore

from idp.signing.errors import Reason, SigningRejected
from idp.signing.signer import (
    SignerChain,
    asn1_certificate,
    check_phone_signature,
    check_signature_certificate,
    check_signer_status,
)
from idp.signing.timestamping import InProcessTimeStamper, TimestampAuthority

__all__ = ["DIGEST_ALGORITHM", "PendingCades", "finish_cades", "prepare_cades"]

DIGEST_ALGORITHM = "sha256"
SHA256_BYTES = 32
_FORMAT = "cades/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingCades:
    """A CAdES signature waiting for the phone: the signed attributes it must sign, and whose."""

    signed_attributes: bytes
    """DER of the SET OF signed attributes; the phone signs SHA-256 of exactly these bytes."""
    chain: SignerChain
    authentication_key: ec.EllipticCurvePublicKey | None = None
    """The same phone's authentication key, so that a signature by it is named as such."""

    @property
    def to_be_signed(self) -> bytes:
        """The SHA-256 digest the secure element signs with the signature key."""
        return hashlib.sha256(self.signed_attributes).digest()

    @property
    def document_digest(self) -> bytes:
        """The document's SHA-256, as the messageDigest attribute states it."""
        digest: bytes = _attribute(_attributes(self.signed_attributes), "message_digest")
        return digest

    def to_bytes(self) -> bytes:
        """JSON for the ephemeral store."""
        key = self.authentication_key
        return json.dumps({
            "format": _FORMAT,
            "signed_attributes": _b64(self.signed_attributes),
            "chain": [_b64(der) for der in self.chain.to_der()],
            "authentication_key": _b64(key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
            )) if key is not None else None,
        }).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PendingCades:
        """Inverse of ``to_bytes``; raises SigningRejected(MALFORMED)."""
        try:
            state = _state(data)
            signed_attributes = base64.b64decode(state["signed_attributes"], validate=True)
            _attributes(signed_attributes)
            chain = SignerChain.from_der([base64.b64decode(der, validate=True) for der in state["chain"]])
            key_der = state["authentication_key"]
            key = serialization.load_der_public_key(base64.b64decode(key_der, validate=True)) if key_der else None
        except (ValueError, TypeError, KeyError) as exc:
            raise SigningRejected(Reason.MALFORMED, "the pending signature cannot be read") from exc
        if key is not None and not isinstance(key, ec.EllipticCurvePublicKey):
            raise SigningRejected(Reason.MALFORMED, "the authentication key is not ECDSA")
        return cls(signed_attributes=signed_attributes, chain=chain, authentication_key=key)


def prepare_cades(
    *,
    document_digest: bytes,
    chain: SignerChain,
    now: datetime,
    authentication_key: ec.EllipticCurvePublicKey | None = None,
) -> PendingCades:
    """Phase 1: the signed attributes of a detached CAdES signature over ``document_digest``.

    Raises SigningRejected(MALFORMED) for a digest that is not SHA-256 sized and
    SigningRejected(NOT_SIGNATURE_CERTIFICATE) when ``chain.leaf`` is not a smartphone
    signature certificate.
    """
    if len(document_digest) != SHA256_BYTES:
        raise SigningRejected(Reason.MALFORMED, "a document digest is 32 bytes of SHA-256")
    check_signature_certificate(chain.leaf)
    signer = _external_signer(chain, signature=None)
    attributes = asyncio.run(signer.signed_attrs(
        document_digest,
        DIGEST_ALGORITHM,
        attr_settings=PdfCMSSignedAttributes(signing_time=now),
        use_pades=True,  # pyHanko's CAdES attribute set; is_pdf_sig=False keeps signing-time (CAdES requires it)
        is_pdf_sig=False,
    ))
    return PendingCades(signed_attributes=attributes.dump(), chain=chain, authentication_key=authentication_key)


def finish_cades(
    *,
    pending: PendingCades,
    signature: bytes,
    ocsp_response: bytes,
    crls: Sequence[bytes],
    timestamps: TimestampAuthority,
    now: datetime,
) -> bytes:
    """Phase 2: the DER ContentInfo of the detached CAdES-B-LT signature.

    ``signature`` is the phone's DER ECDSA signature over ``pending.to_be_signed``;
    ``ocsp_response`` the portal's OCSP answer about the signer certificate at ``now`` and
    ``crls`` the CRLs covering the CA certificates above it. Raises SigningRejected:
    AUTHENTICATION_KEY, BAD_SIGNATURE, or a certificate reason (revoked, expired, unknown,
    revocation unavailable); nothing is assembled then.
    """
    check_phone_signature(
        signature=signature,
        signed_data=pending.signed_attributes,
        certificate=pending.chain.leaf,
        authentication_key=pending.authentication_key,
    )
    check_signer_status(pending.chain, ocsp_response=ocsp_response, crls=crls, now=now)
    signer = _external_signer(pending.chain, signature=signature)
    content_info = asyncio.run(signer.async_sign_prescribed_attributes(
        DIGEST_ALGORITHM,
        _attributes(pending.signed_attributes),
        cms_version="v1",
        timestamper=InProcessTimeStamper(timestamps, now=now),
    ))
    signed_data = content_info["content"]
    signed_data["crls"] = revocation_choices(ocsp_response=ocsp_response, crls=crls)
    # RFC 5652 §5.1: "IF ... crls is present AND any crls with a type of other are present
    # THEN version MUST be 5".
    signed_data["version"] = "v5"
    der: bytes = content_info.dump()
    return der


def revocation_choices(*, ocsp_response: bytes, crls: Sequence[bytes]) -> cms.RevocationInfoChoices:
    """SignedData.crls holding the CRLs and the OCSP answer (RFC 5940 §2.2.1 id-ri-ocsp-response)."""
    choices = [cms.RevocationInfoChoice(name="crl", value=crl.CertificateList.load(der)) for der in crls]
    choices.append(cms.RevocationInfoChoice(name="other", value=cms.OtherRevocationInfoFormat({
        "other_rev_info_format": "ocsp_response",
        "other_rev_info": ocsp.OCSPResponse.load(ocsp_response),
    })))
    return cms.RevocationInfoChoices(choices)


def _external_signer(chain: SignerChain, *, signature: bytes | None) -> ExternalSigner:
    """pyHanko's signer for a signature value made elsewhere (its interrupted-signing path)."""
    return ExternalSigner(
        signing_cert=asn1_certificate(chain.leaf),
        cert_registry=SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [asn1_certificate(c) for c in chain.certificates[1:]],
        ),
        signature_value=signature,
    )


def _attributes(der: bytes) -> cms.CMSAttributes:
    """The signed attributes; raises ValueError when they cannot be read or lack a messageDigest."""
    attributes = cms.CMSAttributes.load(der, strict=True)
    _attribute(attributes, "message_digest")
    return attributes


def _attribute(attributes: cms.CMSAttributes, name: str) -> Any:
    """The single value of attribute ``name``; raises ValueError when it is absent or repeated."""
    values = [attribute["values"] for attribute in attributes if attribute["type"].native == name]
    if len(values) != 1 or len(values[0]) != 1:
        raise ValueError(f"there is not exactly one {name} attribute")
    return values[0][0].native


def _state(data: bytes) -> dict[str, Any]:
    """The JSON of a stored pending signature, of this format; raises ValueError otherwise."""
    state = json.loads(data)
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError("not a pending CAdES signature")
    return state


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
