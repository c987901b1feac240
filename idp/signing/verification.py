"""Verification for anyone: a detached CAdES signature with its document, or a signed PDF.

Each check runs in the order a verifier needs them, and the first that fails is the result's
reason (``errors.Reason``): the input can be read; the document is the one signed (message
digest, RFC 5652 §11.2; for a PDF, the byte range and what changed after it); the signature
verifies with the signer certificate's key (pyHanko's ``validate_sig_integrity``); that
certificate is a smartphone signature certificate; the signature timestamp covers the signature
value and comes from a timestamping unit chaining to the roots (RFC 3161 §2.4.2, pyHanko's
``validate_tst_signed_data``); and the signer certificate was valid and not revoked at the
timestamp's time, judged only by the revocation data embedded in the signature
(``idp.pki.validation`` in ``require`` mode). Nothing is fetched: a verifier years later holds
what the signature carries and the portal's root.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from typing import Any

from asn1crypto import cms, crl, ocsp, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from pyhanko.pdf_utils.decode_limits import DecodePurpose
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import DEFAULT_DIFF_POLICY, DiffResult, ModificationLevel
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.errors import NoDSSFoundError, SignatureValidationError
from pyhanko.sign.validation.generic_cms import validate_sig_integrity, validate_tst_signed_data
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.util import get_pyca_cryptography_hash

from idp.pki.validation import CertificateRejected, Purpose, validate_certificate
from idp.signing.errors import Reason, SigningRejected
from idp.signing.signer import asn1_certificate, check_signature_certificate, rejection_reason

__all__ = ["Verification", "verify_cades", "verify_pades"]

SHA256_BYTES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    """The verdict on a signature: valid, or the first check that failed."""

    valid: bool
    reason: Reason | None = None
    detail: str = ""
    """For logs and the command line; the reason code is the stable part."""
    signing_time: datetime | None = None
    """The signature timestamp's genTime: when the signature is proven to have existed."""
    signer: x509.Certificate | None = None
    document_digest: bytes | None = None
    """SHA-256 of the signed document (for a PDF, of its signed byte range)."""
    status_response: bytes | None = None
    """The embedded OCSP answer about the signer that the verdict relied on (DER)."""
    claims: dict[str, Any] = field(default_factory=dict)
    """For an assertion: its verified claims."""

    def to_json(self) -> dict[str, Any]:
        """The result as the verification endpoint and ``idp verify --json`` report it."""
        report: dict[str, Any] = {"valid": self.valid}
        if self.reason is not None:
            report["reason"] = self.reason.value
        if self.signing_time is not None:
            report["signing_time"] = self.signing_time.isoformat()
        if self.signer is not None:
            report["signer"] = {
                "subject": self.signer.subject.rfc4514_string(),
                "issuer": self.signer.issuer.rfc4514_string(),
                "serial_number": format(self.signer.serial_number, "X"),
            }
        if self.document_digest is not None:
            report["document_digest"] = {"alg": "sha256", "value": self.document_digest.hex()}
        if self.claims:
            report["claims"] = self.claims
        return report


def invalid(reason: Reason, detail: str) -> Verification:
    """A failed verification."""
    return Verification(valid=False, reason=reason, detail=detail)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Revocation:
    """Revocation data a signature carries: DER CRLs and OCSP responses, and more certificates."""

    crls: tuple[bytes, ...] = ()
    ocsps: tuple[bytes, ...] = ()
    certificates: tuple[asn1_x509.Certificate, ...] = ()

    def __add__(self, other: _Revocation) -> _Revocation:
        return _Revocation(
            crls=self.crls + other.crls,
            ocsps=self.ocsps + other.ocsps,
            certificates=self.certificates + other.certificates,
        )


def verify_cades(
    *,
    signature: bytes,
    document: bytes | None = None,
    document_digest: bytes | None = None,
    trust_roots: Sequence[x509.Certificate],
) -> Verification:
    """Verify a detached CAdES signature (DER ContentInfo) over ``document`` or its SHA-256.

    Exactly one of ``document`` and ``document_digest`` is given. A document that does not
    match is DOCUMENT_MODIFIED; a digest that does not match is DIGEST_MISMATCH.
    """
    if (document is None) == (document_digest is None):
        return invalid(Reason.MALFORMED, "give either the document or its SHA-256 digest")
    if document_digest is not None and len(document_digest) != SHA256_BYTES:
        return invalid(Reason.MALFORMED, "a document digest is 32 bytes of SHA-256")
    try:
        signed_data = _signed_data(signature)
    except SigningRejected as rejected:
        return invalid(rejected.reason, rejected.detail)
    if signed_data["encap_content_info"]["content"].native is not None:
        return invalid(Reason.MALFORMED, "the signature is not detached")
    actual = hashlib.sha256(document).digest() if document is not None else document_digest
    assert actual is not None  # noqa: S101 - one of the two was given, checked above
    mismatch = Reason.DOCUMENT_MODIFIED if document is not None else Reason.DIGEST_MISMATCH
    return _verify_signed_data(
        signed_data, actual_digest=actual, mismatch=mismatch, revocation=_cms_revocation(signed_data),
        trust_roots=trust_roots,
    )


def verify_pades(pdf: bytes, *, trust_roots: Sequence[x509.Certificate]) -> Verification:
    """Verify the signature of a PDF signed by the portal (PAdES, ETSI EN 319 142-1).

    The document must have one signature; the revisions after it may only add validation data
    (a DSS or a document timestamp), anything else is DOCUMENT_MODIFIED.
    """
    try:
        reader = PdfFileReader(BytesIO(pdf), strict=False)
        signatures = reader.embedded_regular_signatures
    except (PdfError, ValueError, TypeError, KeyError) as exc:
        return invalid(Reason.MALFORMED, f"the PDF cannot be read: {exc}")
    if len(signatures) != 1:
        return invalid(Reason.MALFORMED, f"the PDF holds {len(signatures)} signatures, not one")
    embedded = signatures[0]
    try:
        actual = embedded.compute_digest()
        unchanged = _unchanged_since_signing(embedded)
        revocation = _dss_revocation(reader)
    except (PdfError, SignatureValidationError, ValueError, TypeError, KeyError) as exc:
        return invalid(Reason.MALFORMED, f"the signed PDF cannot be read: {exc}")
    if not unchanged:
        return invalid(Reason.DOCUMENT_MODIFIED, "the PDF was changed after it was signed")
    return _verify_signed_data(
        embedded.signed_data, actual_digest=actual, mismatch=Reason.DOCUMENT_MODIFIED,
        revocation=revocation + _cms_revocation(embedded.signed_data), trust_roots=trust_roots,
    )


def _unchanged_since_signing(embedded: EmbeddedPdfSignature) -> bool:
    """The signature covers the file, or what follows only adds validation data (DSS, timestamps),
    by pyHanko's difference analysis with its default policy."""
    embedded.compute_integrity_info(diff_policy=DEFAULT_DIFF_POLICY)  # type: ignore[no-untyped-call]
    integrity = embedded.summarise_integrity_info()
    if integrity["coverage"] == SignatureCoverageLevel.ENTIRE_FILE:
        return True
    if integrity["coverage"] != SignatureCoverageLevel.ENTIRE_REVISION:
        return False
    result = integrity["diff_result"]
    return isinstance(result, DiffResult) and result.modification_level <= ModificationLevel.LTA_UPDATES


def _signed_data(der: bytes) -> cms.SignedData:
    """The SignedData of a DER ContentInfo, read in full; raises SigningRejected(MALFORMED)."""
    unreadable = SigningRejected(Reason.MALFORMED, "the signature is not a DER CMS SignedData")
    try:
        content_info = cms.ContentInfo.load(der, strict=True)
        content_type = content_info["content_type"].native
        signed_data = content_info["content"]
        signers = len(signed_data["signer_infos"]) if content_type == "signed_data" else 0
    except (ValueError, TypeError, KeyError) as exc:
        raise unreadable from exc
    if content_type != "signed_data":
        raise unreadable
    if signers != 1:
        raise SigningRejected(Reason.MALFORMED, "the signature must have exactly one signer")
    return signed_data


def _verify_signed_data(
    signed_data: cms.SignedData,
    *,
    actual_digest: bytes,
    mismatch: Reason,
    revocation: _Revocation,
    trust_roots: Sequence[x509.Certificate],
) -> Verification:
    try:
        signer_info = signed_data["signer_infos"][0]
        signer = _signer_certificate(signed_data, signer_info)
        _check_integrity(signer_info, signer, actual_digest=actual_digest, mismatch=mismatch)
        leaf = x509.load_der_x509_certificate(signer.dump())
        check_signature_certificate(leaf)
        token, signing_time = _read_timestamp(signer_info)
        _check_signer(leaf, revocation=revocation, trust_roots=trust_roots, at=signing_time)
        _check_timestamp(signer_info, token, at=signing_time, revocation=revocation, trust_roots=trust_roots)
    except SigningRejected as rejected:
        return invalid(rejected.reason, rejected.detail)
    except (ValueError, TypeError, KeyError) as exc:
        # asn1crypto parses lazily: a malformed part surfaces where it is first read.
        return invalid(Reason.MALFORMED, f"the signature cannot be read: {exc}")
    return Verification(
        valid=True, signing_time=signing_time, signer=leaf, document_digest=actual_digest,
        status_response=_status_of(leaf, revocation.ocsps),
    )


def _status_of(leaf: x509.Certificate, responses: Sequence[bytes]) -> bytes | None:
    """The OCSP response about ``leaf`` among ``responses`` (validated by ``_check_signer``)."""
    for der in responses:
        response = ocsp.OCSPResponse.load(der)
        basic = response.basic_ocsp_response
        if any(single["cert_id"]["serial_number"].native == leaf.serial_number
               for single in basic["tbs_response_data"]["responses"]):
            return der
    return None


def _signer_certificate(signed_data: cms.SignedData, signer_info: cms.SignerInfo) -> asn1_x509.Certificate:
    """The embedded certificate the signer identifier names (RFC 5652 §5.3)."""
    sid = signer_info["sid"]
    if sid.name != "issuer_and_serial_number":
        raise SigningRejected(Reason.MALFORMED, "the signer is not named by issuer and serial number")
    wanted = sid.chosen
    for choice in signed_data["certificates"] or ():
        certificate = choice.chosen
        if not isinstance(certificate, asn1_x509.Certificate):
            continue
        if certificate.issuer == wanted["issuer"] and certificate.serial_number == wanted["serial_number"].native:
            return certificate
    raise SigningRejected(Reason.UNKNOWN_CERTIFICATE, "the signer certificate is not in the signature")


def _check_integrity(
    signer_info: cms.SignerInfo, signer: asn1_x509.Certificate, *, actual_digest: bytes, mismatch: Reason,
) -> None:
    if signer_info["digest_algorithm"]["algorithm"].native != "sha256":
        raise SigningRejected(Reason.MALFORMED, "the portal's signatures use SHA-256")
    try:
        intact, valid = validate_sig_integrity(signer_info, signer, "data", actual_digest)
    except SignatureValidationError as exc:
        # A missing content type or a signing-certificate-v2 that names another certificate.
        raise SigningRejected(Reason.BAD_SIGNATURE, exc.failure_message) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise SigningRejected(Reason.MALFORMED, "the signed attributes cannot be read") from exc
    if not valid:
        raise SigningRejected(Reason.BAD_SIGNATURE, "the signature does not verify with the signer's key")
    if not intact:
        raise SigningRejected(mismatch, "the signed message digest is not the document's")


def _read_timestamp(signer_info: cms.SignerInfo) -> tuple[cms.SignedData, datetime]:
    """The signature timestamp token (CAdES-B-T) and its genTime, unverified until
    ``_check_timestamp`` returns."""
    tokens = [
        value
        for attribute in signer_info["unsigned_attrs"] or ()
        if attribute["type"].native == "signature_time_stamp_token"
        for value in attribute["values"]
    ]
    if len(tokens) != 1:
        raise SigningRejected(Reason.BAD_TIMESTAMP, f"the signature carries {len(tokens)} timestamps, not one")
    unreadable = SigningRejected(Reason.BAD_TIMESTAMP, "the timestamp token cannot be read")
    try:
        token: cms.SignedData = tokens[0]["content"]
        info = token["encap_content_info"]["content"].parsed
        gen_time = info["gen_time"].native if isinstance(info, tsp.TSTInfo) else None
    except (ValueError, TypeError, KeyError) as exc:
        raise unreadable from exc
    if not isinstance(gen_time, datetime):
        raise unreadable
    return token, gen_time


def _check_timestamp(
    signer_info: cms.SignerInfo,
    token: cms.SignedData,
    *,
    at: datetime,
    revocation: _Revocation,
    trust_roots: Sequence[x509.Certificate],
) -> None:
    """The token covers this signature value and a unit chaining to the roots signed it (RFC 3161
    §2.4.2; the unit's certificate needs id-kp-timeStamping and revocation data)."""
    signature = signer_info["signature"].native
    status = asyncio.run(_validate_token(
        token, _context(trust_roots, revocation, at=at), expected=_imprint(signature),
    ))
    if not status.get("intact"):
        raise SigningRejected(Reason.BAD_TIMESTAMP, "the timestamp does not cover this signature")
    if not status.get("valid"):
        raise SigningRejected(Reason.BAD_TIMESTAMP, "the timestamp's signature does not verify")
    if status.get("trust_problem_indic") is not None:
        raise SigningRejected(
            Reason.BAD_TIMESTAMP, f"the timestamping unit is not trusted: {status['trust_problem_indic']}",
        )


async def _validate_token(
    token: cms.SignedData, context: ValidationContext, *, expected: Callable[[str], bytes],
) -> dict[str, Any]:
    try:
        status: dict[str, Any] = await validate_tst_signed_data(token, context, expected)
    except SignatureValidationError as exc:
        raise SigningRejected(Reason.BAD_TIMESTAMP, exc.failure_message) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise SigningRejected(Reason.BAD_TIMESTAMP, "the timestamp token cannot be read") from exc
    return status


def _imprint(signature: bytes) -> Callable[[str], bytes]:
    """The message imprint a signature timestamp must carry: the hash of the signature value."""

    def expected(algorithm: str) -> bytes:
        digest = hashlib.new(get_pyca_cryptography_hash(algorithm).name)
        digest.update(signature)
        return digest.digest()

    return expected


def _context(
    trust_roots: Sequence[x509.Certificate], revocation: _Revocation, *, at: datetime,
) -> ValidationContext:
    return ValidationContext(
        trust_roots=[asn1_certificate(root) for root in trust_roots],
        other_certs=list(revocation.certificates),
        crls=[crl.CertificateList.load(der) for der in revocation.crls],
        ocsps=[ocsp.OCSPResponse.load(der) for der in revocation.ocsps],
        moment=at,
        allow_fetching=False,
        revocation_mode="require",
    )


def _check_signer(
    leaf: x509.Certificate, *, revocation: _Revocation, trust_roots: Sequence[x509.Certificate], at: datetime,
) -> None:
    """The signer certificate was valid, for signing, and not revoked when the timestamp was made."""
    try:
        validate_certificate(
            leaf,
            purpose=Purpose.SMARTPHONE_SIGN,
            trust_roots=trust_roots,
            intermediates=[x509.load_der_x509_certificate(c.dump()) for c in revocation.certificates],
            crls=revocation.crls,
            ocsp_responses=revocation.ocsps,
            now=at,
        )
    except CertificateRejected as rejected:
        raise SigningRejected(rejection_reason(rejected), rejected.detail) from rejected


def _cms_revocation(signed_data: cms.SignedData) -> _Revocation:
    """The certificates, CRLs and OCSP responses (RFC 5940) in a SignedData."""
    crls: list[bytes] = []
    ocsps: list[bytes] = []
    for choice in signed_data["crls"] or ():
        if choice.name == "crl":
            crls.append(choice.chosen.dump())
        elif choice.name == "other" and choice.chosen["other_rev_info_format"].native == "ocsp_response":
            ocsps.append(choice.chosen["other_rev_info"].dump())
    certificates = tuple(
        choice.chosen for choice in signed_data["certificates"] or ()
        if isinstance(choice.chosen, asn1_x509.Certificate)
    )
    return _Revocation(crls=tuple(crls), ocsps=tuple(ocsps), certificates=certificates)


def _dss_revocation(reader: PdfFileReader) -> _Revocation:
    """The validation data in a PDF's Document Security Store (PAdES-B-LT)."""
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        return _Revocation()
    return _Revocation(
        crls=tuple(ref.get_object().read_data(DecodePurpose.CRL) for ref in dss.crls),
        ocsps=tuple(ref.get_object().read_data(DecodePurpose.OCSP_RESPONSE) for ref in dss.ocsps),
        certificates=tuple(dss.load_certs()),
    )
