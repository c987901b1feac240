"""PAdES: a PDF signed by the phone through pyHanko's interrupted signing, judged by pyHanko's
own validator, then one change per attack."""

from __future__ import annotations

import asyncio
import hashlib
from io import BytesIO

import pytest
from documents import one_page_pdf
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.dss import DocumentSecurityStore

from idp.signing import PendingPades, Reason, SigningRejected
from idp.signing.signer import asn1_certificate

PDF = one_page_pdf("Sales contract: the buyer agrees to every clause.")


@pytest.fixture(scope="module")
def signed_pdf(world, phone) -> bytes:
    service = world.service
    pending = service.prepare_pades(
        pdf=PDF, certificate=phone.sign_certificate, expected_digest=hashlib.sha256(PDF).digest(),
        authentication_key=phone.auth_key,
    )
    resumed = PendingPades.from_bytes(pending.to_bytes())
    return service.finish_pades(resumed, phone.sign(resumed.to_be_signed))


def test_signed_pdf_verifies(service, phone, signed_pdf):
    result = service.verify_pades(signed_pdf)
    assert result.valid, result
    assert result.signer == phone.sign_certificate
    assert result.signing_time is not None


def test_pyhanko_reports_the_signed_pdf_intact_and_trusted_with_its_timestamp(world, signed_pdf):
    reader = PdfFileReader(BytesIO(signed_pdf))
    embedded = reader.embedded_signatures[0]
    dss = DocumentSecurityStore.read_dss(reader)
    context = dss.as_validation_context({
        "trust_roots": [asn1_certificate(world.pki.root)], "allow_fetching": False,
        "revocation_mode": "hard-fail", "moment": world.clock.now(),
    })
    ts_context = dss.as_validation_context({
        "trust_roots": [asn1_certificate(world.pki.root)], "allow_fetching": False,
        "revocation_mode": "hard-fail", "moment": world.clock.now(),
    })
    status = asyncio.run(async_validate_pdf_signature(
        embedded, signer_validation_context=context, ts_validation_context=ts_context,
    ))
    assert status.intact
    assert status.valid
    assert status.trusted, status.pretty_print_details()
    assert status.timestamp_validity is not None
    assert status.timestamp_validity.intact
    assert status.timestamp_validity.trusted
    assert status.bottom_line, status.pretty_print_details()


def test_pdf_whose_digest_is_not_the_stated_one_is_refused(service, phone):
    with pytest.raises(SigningRejected) as rejected:
        service.prepare_pades(
            pdf=PDF, certificate=phone.sign_certificate, expected_digest=hashlib.sha256(b"other").digest(),
        )
    assert rejected.value.reason is Reason.DIGEST_MISMATCH


def test_authentication_key_signature_is_refused(service, phone):
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    pending = service.prepare_pades(pdf=PDF, certificate=phone.sign_certificate, authentication_key=key.public_key())
    with pytest.raises(SigningRejected) as rejected:
        service.finish_pades(pending, key.sign(pending.signed_attributes, ec.ECDSA(hashes.SHA256())))
    assert rejected.value.reason is Reason.AUTHENTICATION_KEY


@pytest.mark.parametrize("data", [b"", b"%PDF-1.7\ngarbage", b"not a pdf"], ids=["empty", "truncated", "text"])
def test_malformed_pdf_is_refused_at_signing(service, phone, data):
    with pytest.raises(SigningRejected) as rejected:
        service.prepare_pades(pdf=data, certificate=phone.sign_certificate)
    assert rejected.value.reason is Reason.MALFORMED


def test_oversized_pdf_is_refused_at_signing(world, phone):
    from idp.signing.pades import prepare_pades  # noqa: PLC0415

    with pytest.raises(SigningRejected) as rejected:
        prepare_pades(
            pdf=PDF, chain=world.service.chain(phone.sign_certificate), now=world.clock.now(),
            timestamps=world.service.timestamps, max_bytes=len(PDF) - 1,
        )
    assert rejected.value.reason is Reason.TOO_LARGE


def test_pdf_changed_inside_the_signed_bytes_is_reported(service, signed_pdf):
    tampered = signed_pdf.replace(b"every clause", b"no clause!!!")
    assert tampered != signed_pdf
    result = service.verify_pades(tampered)
    assert (result.valid, result.reason) == (False, Reason.DOCUMENT_MODIFIED)


def test_pdf_changed_after_signing_is_reported(service, signed_pdf):
    writer = IncrementalPdfFileWriter(BytesIO(signed_pdf))
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    page[pdf_name("/Contents")] = writer.add_object(generic.StreamObject(stream_data=b"BT (Other terms) Tj ET"))
    writer.update_container(page)
    out = BytesIO()
    writer.write(out)
    result = service.verify_pades(out.getvalue())
    assert (result.valid, result.reason) == (False, Reason.DOCUMENT_MODIFIED)


@pytest.mark.parametrize("data", [b"", b"not a pdf", PDF], ids=["empty", "text", "unsigned"])
def test_malformed_or_unsigned_pdf_is_reported(service, data):
    result = service.verify_pades(data)
    assert (result.valid, result.reason) == (False, Reason.MALFORMED)
