"""PAdES baseline signatures in a PDF (ETSI EN 319 142-1), made in two phases around the phone.

pyHanko's interrupted signing does the PDF work (``pyhanko/sign/signers/pdf_signer.py``):
``prepare_pades`` has ``PdfSigner.async_digest_doc_for_signing`` write the document with an
empty signature field and a reserved ``/Contents`` (a ``PreparedByteRangeDigest``), and builds
the PAdES signed attributes over the byte-range digest; the phone's SE signs SHA-256 of them.
``finish_pades`` checks that signature and the signer's status, has pyHanko package the CMS with
the external signature value and a signature timestamp (PAdES-B-T), writes it into the reserved
region (``PdfTBSDocument.finish_signing``), and appends a Document Security Store with the
signer's OCSP answer and the root's CRL (PAdES-B-LT).

The pending state (the prepared PDF, the reserved region, the signed attributes, the chain) is
serialisable as JSON bytes for the ephemeral store.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import IO

from asn1crypto import cms, crl, ocsp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign import fields
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_cms import ExternalSigner, PdfCMSSignedAttributes
from pyhanko.sign.signers.pdf_signer import PdfSignatureMetadata, PdfSigner, PdfTBSDocument
from pyhanko.sign.validation.dss import DocumentSecurityStore
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

__all__ = ["FIELD_NAME", "PendingPades", "finish_pades", "prepare_pades"]

FIELD_NAME = "MynaGatewaySignature"
DIGEST_ALGORITHM = "sha256"
RESERVED_BYTES = 32 * 1024
"""Room for the CMS in /Contents (hex, so twice its DER): signer chain, timestamp token and its
certificate fit in a quarter of it."""
ECDSA_P256_MAX_SIGNATURE = 72
_FORMAT = "pades/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingPades:
    """A PDF waiting for the phone's signature."""

    prepared_pdf: bytes
    """The document with the signature field and the reserved, still empty, /Contents."""
    reserved_start: int
    reserved_end: int
    byte_range_digest: bytes
    """SHA-256 of the prepared document outside the reserved region: the signed messageDigest."""
    signed_attributes: bytes
    """DER of the signed attributes; the phone signs SHA-256 of exactly these bytes."""
    chain: SignerChain
    authentication_key: ec.EllipticCurvePublicKey | None = None

    @property
    def to_be_signed(self) -> bytes:
        """The SHA-256 digest the secure element signs with the signature key."""
        return hashlib.sha256(self.signed_attributes).digest()

    def to_bytes(self) -> bytes:
        """JSON for the ephemeral store."""
        key = self.authentication_key
        return json.dumps({
            "format": _FORMAT,
            "prepared_pdf": _b64(self.prepared_pdf),
            "reserved": [self.reserved_start, self.reserved_end],
            "byte_range_digest": _b64(self.byte_range_digest),
            "signed_attributes": _b64(self.signed_attributes),
            "chain": [_b64(der) for der in self.chain.to_der()],
            "authentication_key": _b64(key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
            )) if key is not None else None,
        }).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PendingPades:
        """Inverse of ``to_bytes``; raises SigningRejected(MALFORMED)."""
        try:
            state = json.loads(data)
            _check_format(state)
            start, end = (int(offset) for offset in state["reserved"])
            key_der = state["authentication_key"]
            key = serialization.load_der_public_key(base64.b64decode(key_der, validate=True)) if key_der else None
            pending = cls(
                prepared_pdf=base64.b64decode(state["prepared_pdf"], validate=True),
                reserved_start=start,
                reserved_end=end,
                byte_range_digest=base64.b64decode(state["byte_range_digest"], validate=True),
                signed_attributes=base64.b64decode(state["signed_attributes"], validate=True),
                chain=SignerChain.from_der([base64.b64decode(der, validate=True) for der in state["chain"]]),
                authentication_key=key if isinstance(key, ec.EllipticCurvePublicKey) else None,
            )
            cms.CMSAttributes.load(pending.signed_attributes, strict=True)
        except (ValueError, TypeError, KeyError) as exc:
            raise SigningRejected(Reason.MALFORMED, "the pending PDF signature cannot be read") from exc
        if not 0 < start < end <= len(pending.prepared_pdf):
            raise SigningRejected(Reason.MALFORMED, "the reserved region lies outside the prepared PDF")
        return pending


def prepare_pades(
    *,
    pdf: bytes,
    chain: SignerChain,
    now: datetime,
    timestamps: TimestampAuthority,
    max_bytes: int,
    expected_digest: bytes | None = None,
    authentication_key: ec.EllipticCurvePublicKey | None = None,
) -> PendingPades:
    """Phase 1: the PDF prepared for a PAdES signature, and the signed attributes the phone signs.

    ``expected_digest`` is the SHA-256 the RP stated for this PDF (RFC 9396 authorization
    details); the PDF must hash to it. Raises SigningRejected: TOO_LARGE, DIGEST_MISMATCH,
    MALFORMED (not a PDF pyHanko can sign) or NOT_SIGNATURE_CERTIFICATE.
    """
    if len(pdf) > max_bytes:
        raise SigningRejected(Reason.TOO_LARGE, f"the PDF is larger than {max_bytes} bytes")
    if expected_digest is not None and hashlib.sha256(pdf).digest() != expected_digest:
        raise SigningRejected(Reason.DIGEST_MISMATCH, "the PDF is not the document whose digest was stated")
    check_signature_certificate(chain.leaf)
    return asyncio.run(_prepare(
        pdf, chain=chain, now=now, timestamps=timestamps, authentication_key=authentication_key,
    ))


async def _prepare(
    pdf: bytes,
    *,
    chain: SignerChain,
    now: datetime,
    timestamps: TimestampAuthority,
    authentication_key: ec.EllipticCurvePublicKey | None,
) -> PendingPades:
    signer = _external_signer(chain, signature=None)
    try:
        writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)
        pdf_signer = PdfSigner(
            PdfSignatureMetadata(
                field_name=FIELD_NAME,
                md_algorithm=DIGEST_ALGORITHM,
                subfilter=fields.SigSeedSubFilter.PADES,
            ),
            signer=signer,
            timestamper=InProcessTimeStamper(timestamps, now=now),
        )
        prepared, _, output = await pdf_signer.async_digest_doc_for_signing(writer, bytes_reserved=RESERVED_BYTES)
    except (PdfError, ValueError, TypeError, KeyError) as exc:
        raise SigningRejected(Reason.MALFORMED, f"the PDF cannot be prepared for signing: {exc}") from exc
    attributes = await signer.signed_attrs(
        prepared.document_digest,
        DIGEST_ALGORITHM,
        attr_settings=PdfCMSSignedAttributes(),
        use_pades=True,  # PAdES: no signing-time attribute, the time is the timestamp's
        is_pdf_sig=True,
    )
    return PendingPades(
        prepared_pdf=_contents(output),
        reserved_start=prepared.reserved_region_start,
        reserved_end=prepared.reserved_region_end,
        byte_range_digest=prepared.document_digest,
        signed_attributes=attributes.dump(),
        chain=chain,
        authentication_key=authentication_key,
    )


def finish_pades(
    *,
    pending: PendingPades,
    signature: bytes,
    ocsp_response: bytes,
    crls: Sequence[bytes],
    timestamps: TimestampAuthority,
    now: datetime,
) -> bytes:
    """Phase 2: the signed PDF, timestamped, with the signer's revocation data in its DSS.

    Raises SigningRejected like ``cades.finish_cades``; nothing is written then.
    """
    check_phone_signature(
        signature=signature,
        signed_data=pending.signed_attributes,
        certificate=pending.chain.leaf,
        authentication_key=pending.authentication_key,
    )
    check_signer_status(pending.chain, ocsp_response=ocsp_response, crls=crls, now=now)
    return asyncio.run(_finish(pending, signature, ocsp_response=ocsp_response, crls=crls, timestamps=timestamps,
                               now=now))


async def _finish(
    pending: PendingPades,
    signature: bytes,
    *,
    ocsp_response: bytes,
    crls: Sequence[bytes],
    timestamps: TimestampAuthority,
    now: datetime,
) -> bytes:
    signer = _external_signer(pending.chain, signature=signature)
    content_info = await signer.async_sign_prescribed_attributes(
        DIGEST_ALGORITHM,
        cms.CMSAttributes.load(pending.signed_attributes),
        timestamper=InProcessTimeStamper(timestamps, now=now),
    )
    output = BytesIO(pending.prepared_pdf)
    prepared = PreparedByteRangeDigest(
        document_digest=pending.byte_range_digest,
        reserved_region_start=pending.reserved_start,
        reserved_region_end=pending.reserved_end,
    )
    await PdfTBSDocument.async_finish_signing(output, prepared, content_info)
    DocumentSecurityStore.add_dss(
        output,
        sig_contents=None,
        certs=[asn1_certificate(certificate) for certificate in pending.chain.certificates],
        ocsps=[ocsp.OCSPResponse.load(ocsp_response)],
        crls=[crl.CertificateList.load(der) for der in crls],
        strict=False,
    )
    return output.getvalue()


def _external_signer(chain: SignerChain, *, signature: bytes | None) -> ExternalSigner:
    return ExternalSigner(
        signing_cert=asn1_certificate(chain.leaf),
        cert_registry=SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [asn1_certificate(c) for c in chain.certificates[1:]],
        ),
        signature_value=signature if signature is not None else ECDSA_P256_MAX_SIGNATURE,
    )


def _contents(output: IO[bytes]) -> bytes:
    """All bytes of pyHanko's output stream (a BytesIO unless told otherwise)."""
    output.seek(0)
    return output.read()


def _check_format(state: object) -> None:
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError("not a pending PAdES signature")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
