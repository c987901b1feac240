"""Detached CAdES signatures made with the phone's signature key: one valid ceremony, then one
change per attack, each asserting its reason."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import timedelta

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from idp.pki.profiles import KeyAlgorithm, generate_key
from idp.signing import PendingCades, Reason, SigningRejected, prepare_cades
from idp.signing.cades import revocation_choices

DOCUMENT = "売買契約書: 山田太郎は本契約の全条項に同意する。\n".encode() * 50
DIGEST = hashlib.sha256(DOCUMENT).digest()


@pytest.fixture(scope="module")
def signature(world, phone) -> bytes:
    """One detached CAdES signature over DOCUMENT, made by the phone through a stored pending state."""
    pending = world.service.prepare_cades(
        document_digest=DIGEST, certificate=phone.sign_certificate, authentication_key=phone.auth_key,
    )
    stored = pending.to_bytes()  # what waits in the ephemeral store while the phone signs
    resumed = PendingCades.from_bytes(stored)
    return world.service.finish_cades(resumed, phone.sign(resumed.to_be_signed))


def _tampered(signature: bytes, change) -> bytes:
    content_info = cms.ContentInfo.load(signature)
    change(content_info["content"])
    return content_info.dump()


def test_signature_over_the_document_verifies(service, phone, signature):
    result = service.verify_cades(signature=signature, document=DOCUMENT)
    assert result.valid, result
    assert result.signer == phone.sign_certificate
    assert result.document_digest == DIGEST
    assert result.signing_time is not None
    assert result.status_response is not None


def test_signature_verifies_against_the_digest_alone(service, signature):
    assert service.verify_cades(signature=signature, document_digest=DIGEST).valid


def test_signed_attributes_are_the_cades_baseline_set(service, phone):
    pending = service.prepare_cades(document_digest=DIGEST, certificate=phone.sign_certificate)
    names = {attribute["type"].native for attribute in cms.CMSAttributes.load(pending.signed_attributes)}
    assert names == {"content_type", "message_digest", "signing_certificate_v2", "signing_time"}
    assert pending.document_digest == DIGEST


def test_openssl_accepts_the_signature_with_the_document_and_the_portal_root(world, signature, tmp_path):
    openssl = shutil.which("openssl")
    assert openssl is not None
    (tmp_path / "signature.der").write_bytes(signature)
    (tmp_path / "document.txt").write_bytes(DOCUMENT)
    root = world.settings.instance / "pki" / "portal-root.crt.pem"
    done = subprocess.run(
        [openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "signature.der"),
         "-content", str(tmp_path / "document.txt"), "-CAfile", str(root), "-out", "/dev/null"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Verification successful" in done.stderr


def test_openssl_refuses_a_tampered_document(world, signature, tmp_path):
    (tmp_path / "signature.der").write_bytes(signature)
    (tmp_path / "document.txt").write_bytes(DOCUMENT + b"!")
    root = world.settings.instance / "pki" / "portal-root.crt.pem"
    done = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "signature.der"),
         "-content", str(tmp_path / "document.txt"), "-CAfile", str(root), "-out", "/dev/null"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode != 0


# Signing: the phone's part is checked before anything is assembled.

def test_authentication_key_signature_is_refused(service, phone):
    key = generate_key(KeyAlgorithm.EC_P256)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    pending = service.prepare_cades(
        document_digest=DIGEST, certificate=phone.sign_certificate, authentication_key=key.public_key(),
    )
    by_auth_key = key.sign(pending.signed_attributes, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(SigningRejected) as rejected:
        service.finish_cades(pending, by_auth_key)
    assert rejected.value.reason is Reason.AUTHENTICATION_KEY


def test_authentication_certificate_is_refused_as_signer(service, phone):
    with pytest.raises(SigningRejected) as rejected:
        service.prepare_cades(document_digest=DIGEST, certificate=phone.auth_certificate)
    assert rejected.value.reason is Reason.NOT_SIGNATURE_CERTIFICATE


def test_signature_over_other_attributes_is_refused(service, phone):
    pending = service.prepare_cades(document_digest=DIGEST, certificate=phone.sign_certificate)
    with pytest.raises(SigningRejected) as rejected:
        service.finish_cades(pending, phone.sign(hashlib.sha256(b"something else").digest()))
    assert rejected.value.reason is Reason.BAD_SIGNATURE


def test_garbage_signature_is_refused(service, phone):
    pending = service.prepare_cades(document_digest=DIGEST, certificate=phone.sign_certificate)
    with pytest.raises(SigningRejected) as rejected:
        service.finish_cades(pending, b"\x30\x03\x02\x01\x00")
    assert rejected.value.reason is Reason.BAD_SIGNATURE


def test_revoked_signature_certificate_is_refused_at_signing(world, fresh_phone):
    phone = fresh_phone()
    pending = world.service.prepare_cades(document_digest=DIGEST, certificate=phone.sign_certificate)
    world.pki.revoke(phone.sign_certificate.serial_number, x509.ReasonFlags.key_compromise)
    with pytest.raises(SigningRejected) as rejected:
        world.service.finish_cades(pending, phone.sign(pending.to_be_signed))
    assert rejected.value.reason is Reason.CERTIFICATE_REVOKED


def test_suspended_signature_certificate_is_refused_at_signing(world, fresh_phone):
    phone = fresh_phone()
    pending = world.service.prepare_cades(document_digest=DIGEST, certificate=phone.sign_certificate)
    world.pki.revoke(phone.sign_certificate.serial_number, x509.ReasonFlags.certificate_hold)
    with pytest.raises(SigningRejected) as rejected:
        world.service.finish_cades(pending, phone.sign(pending.to_be_signed))
    assert rejected.value.reason is Reason.CERTIFICATE_REVOKED


@pytest.mark.parametrize("digest", [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 64], ids=["empty", "31", "33", "64"])
def test_digest_of_the_wrong_size_is_malformed(service, phone, digest):
    with pytest.raises(SigningRejected) as rejected:
        service.prepare_cades(document_digest=digest, certificate=phone.sign_certificate)
    assert rejected.value.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "stored", [b"", b"{}", b"not json", b'{"format": "cades/0"}'], ids=["empty", "{}", "text", "format"],
)
def test_unreadable_pending_state_is_malformed(stored):
    with pytest.raises(SigningRejected) as rejected:
        PendingCades.from_bytes(stored)
    assert rejected.value.reason is Reason.MALFORMED


def test_pending_state_survives_the_store(world, phone):
    pending = prepare_cades(
        document_digest=DIGEST, chain=world.service.chain(phone.sign_certificate), now=world.clock.now(),
        authentication_key=phone.auth_key,
    )
    resumed = PendingCades.from_bytes(pending.to_bytes())
    assert resumed.signed_attributes == pending.signed_attributes
    assert resumed.chain == pending.chain
    assert resumed.authentication_key == phone.auth_key


# Verification: one change to a valid signature per attack.

def test_tampered_document_is_reported(service, signature):
    result = service.verify_cades(signature=signature, document=DOCUMENT.replace("全".encode(), "一部".encode()))
    assert (result.valid, result.reason) == (False, Reason.DOCUMENT_MODIFIED)


def test_other_digest_is_a_digest_mismatch(service, signature):
    result = service.verify_cades(signature=signature, document_digest=hashlib.sha256(b"other").digest())
    assert (result.valid, result.reason) == (False, Reason.DIGEST_MISMATCH)


def test_tampered_signature_value_is_a_bad_signature(service, signature):
    def flip(signed_data):
        value = bytearray(signed_data["signer_infos"][0]["signature"].native)
        value[-1] ^= 0x01
        signed_data["signer_infos"][0]["signature"] = bytes(value)

    result = service.verify_cades(signature=_tampered(signature, flip), document=DOCUMENT)
    assert (result.valid, result.reason) == (False, Reason.BAD_SIGNATURE)


def test_signature_without_timestamp_is_a_bad_timestamp(service, signature):
    def strip(signed_data):
        del signed_data["signer_infos"][0]["unsigned_attrs"]

    result = service.verify_cades(signature=_tampered(signature, strip), document=DOCUMENT)
    assert (result.valid, result.reason) == (False, Reason.BAD_TIMESTAMP)


def test_timestamp_of_another_signature_is_a_bad_timestamp(world, service, phone, signature):
    pending = service.prepare_cades(
        document_digest=hashlib.sha256(b"other").digest(), certificate=phone.sign_certificate,
    )
    other = cms.ContentInfo.load(service.finish_cades(pending, phone.sign(pending.to_be_signed)))
    foreign = other["content"]["signer_infos"][0]["unsigned_attrs"]

    def swap(signed_data):
        signed_data["signer_infos"][0]["unsigned_attrs"] = foreign

    result = service.verify_cades(signature=_tampered(signature, swap), document=DOCUMENT)
    assert (result.valid, result.reason) == (False, Reason.BAD_TIMESTAMP)


def test_timestamp_from_an_untrusted_unit_is_a_bad_timestamp(world, signature, tmp_path):
    from idp.pki.service import _load_pair, init_pki  # noqa: PLC0415
    from idp.signing.timestamping import InProcessTimeStamper, TimestampAuthority  # noqa: PLC0415

    init_pki(tmp_path, issuer_url="http://127.0.0.1:9000", now=world.clock.now() - timedelta(days=1))
    rogue = TimestampAuthority(unit=_load_pair(tmp_path / "tsa", "timestamping", kek=None), policy="1.2.3.4")
    import asyncio  # noqa: PLC0415

    value = cms.ContentInfo.load(signature)["content"]["signer_infos"][0]["signature"].native
    token = asyncio.run(InProcessTimeStamper(rogue, now=world.clock.now()).async_timestamp(
        hashlib.sha256(value).digest(), "sha256",
    ))

    def swap(signed_data):
        signed_data["signer_infos"][0]["unsigned_attrs"] = cms.CMSAttributes([
            cms.CMSAttribute({"type": "signature_time_stamp_token", "values": [token]}),
        ])

    result = world.service.verify_cades(signature=_tampered(signature, swap), document=DOCUMENT)
    assert (result.valid, result.reason) == (False, Reason.BAD_TIMESTAMP)


def test_signature_without_revocation_data_is_reported(service, signature):
    def strip(signed_data):
        del signed_data["crls"]

    result = service.verify_cades(signature=_tampered(signature, strip), document=DOCUMENT)
    assert (result.valid, result.reason) == (False, Reason.REVOCATION_UNAVAILABLE)


def test_signature_whose_certificate_was_revoked_when_signing_is_reported(world, fresh_phone):
    phone = fresh_phone()
    service = world.service
    pending = service.prepare_cades(document_digest=DIGEST, certificate=phone.sign_certificate)
    signature = service.finish_cades(pending, phone.sign(pending.to_be_signed))
    world.pki.revoke(phone.sign_certificate.serial_number, x509.ReasonFlags.key_compromise)
    revoked_status = service.status(phone.sign_certificate).response
    crls = [world.pki.current_crl("portal-root")]

    def replace_status(signed_data):
        signed_data["crls"] = revocation_choices(ocsp_response=revoked_status, crls=crls)

    result = service.verify_cades(signature=_tampered(signature, replace_status), document=DOCUMENT)
    assert (result.valid, result.reason) == (False, Reason.CERTIFICATE_REVOKED)


def test_signature_by_a_certificate_of_another_pki_is_unknown(world, signature, tmp_path):
    from idp.pki.service import _load_pair, init_pki  # noqa: PLC0415
    from idp.signing import verify_cades  # noqa: PLC0415

    init_pki(tmp_path, issuer_url="http://127.0.0.1:9000", now=world.clock.now())
    other_root = _load_pair(tmp_path / "pki", "portal-root", kek=None).certificate
    result = verify_cades(signature=signature, document=DOCUMENT, trust_roots=[other_root])
    assert (result.valid, result.reason) == (False, Reason.UNKNOWN_CERTIFICATE)


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"\x30\x03\x02\x01\x00", b"\x30\x80"], ids=["empty", "text", "der", "indefinite"],
)
def test_malformed_signature_is_reported(service, data):
    result = service.verify_cades(signature=data, document=DOCUMENT)
    assert (result.valid, result.reason) == (False, Reason.MALFORMED)


def test_neither_document_nor_digest_is_malformed(service, signature):
    assert service.verify_cades(signature=signature).reason is Reason.MALFORMED
