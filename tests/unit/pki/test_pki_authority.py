"""The issuing authority: issue, revoke, resume, and the CRL it signs (RFC 5280 §5)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pki_material import NOW, TARO, YEAR, KeyAndCertificate, TestPki, issue, name

from idp.pki import attributes
from idp.pki.profiles import CARD_AUTH, SMARTPHONE_AUTH, SMARTPHONE_SIGN, KeyAlgorithm, ProfileError, generate_key
from idp.pki.registry import AlreadyRevoked, CertificateRef, CertificateState, UnknownCertificate

if TYPE_CHECKING:
    from collections.abc import Callable

    from idp.pki.authority import CertificateAuthority


def crl_entries(crl: x509.CertificateRevocationList) -> dict[int, x509.ReasonFlags | None]:
    entries: dict[int, x509.ReasonFlags | None] = {}
    for entry in crl:
        try:
            entries[entry.serial_number] = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            entries[entry.serial_number] = None
    return entries


def test_issued_certificate_is_recorded_as_good(fresh_ca: CertificateAuthority) -> None:
    leaf = issue(fresh_ca, SMARTPHONE_AUTH)
    status = fresh_ca.registry.status(leaf.certificate.serial_number)
    assert status is not None
    assert (status.state, status.profile, status.reason, status.revoked_at) == (
        CertificateState.GOOD, SMARTPHONE_AUTH.name, None, None,
    )
    assert status.not_after == leaf.certificate.not_valid_after_utc


def test_issued_certificate_is_signed_by_the_authority(fresh_ca: CertificateAuthority) -> None:
    leaf = issue(fresh_ca, SMARTPHONE_AUTH)
    leaf.certificate.verify_directly_issued_by(fresh_ca.certificate)


def test_issued_certificate_is_capped_at_the_authoritys_expiry(fresh_ca: CertificateAuthority) -> None:
    leaf = issue(fresh_ca, SMARTPHONE_AUTH, lifetime=50 * YEAR)
    assert leaf.certificate.not_valid_after_utc == fresh_ca.certificate.not_valid_after_utc


def test_profile_the_authority_does_not_issue_is_refused(fresh_ca: CertificateAuthority) -> None:
    key = generate_key(KeyAlgorithm.RSA_2048)
    with pytest.raises(ProfileError, match="does not issue card-auth"):
        fresh_ca.issue(profile=CARD_AUTH, subject=name("x"), public_key=key.public_key(), now=NOW, not_after=NOW + YEAR)


def test_serials_are_random_and_distinct(fresh_ca: CertificateAuthority) -> None:
    serials = {issue(fresh_ca, SMARTPHONE_AUTH).certificate.serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(serial.bit_length() > 64 for serial in serials)


def test_revocation_is_recorded_with_reason_and_time(fresh_ca: CertificateAuthority) -> None:
    leaf = issue(fresh_ca, SMARTPHONE_AUTH)
    status = fresh_ca.revoke(leaf.certificate.serial_number, reason=x509.ReasonFlags.key_compromise, now=NOW)
    assert (status.state, status.reason, status.revoked_at) == (
        CertificateState.REVOKED, x509.ReasonFlags.key_compromise, NOW,
    )


@pytest.mark.parametrize("reason", [x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.aa_compromise])
def test_reason_that_is_no_reason_to_revoke_is_refused(
    fresh_ca: CertificateAuthority, reason: x509.ReasonFlags,
) -> None:
    leaf = issue(fresh_ca, SMARTPHONE_AUTH)
    with pytest.raises(ValueError, match="not a reason"):
        fresh_ca.revoke(leaf.certificate.serial_number, reason=reason, now=NOW)
    status = fresh_ca.registry.status(leaf.certificate.serial_number)
    assert status is not None
    assert status.state is CertificateState.GOOD


def test_revoking_twice_is_refused(fresh_ca: CertificateAuthority) -> None:
    leaf = issue(fresh_ca, SMARTPHONE_AUTH)
    fresh_ca.revoke(leaf.certificate.serial_number, reason=x509.ReasonFlags.superseded, now=NOW)
    with pytest.raises(AlreadyRevoked):
        fresh_ca.revoke(leaf.certificate.serial_number, reason=x509.ReasonFlags.key_compromise, now=NOW)


def test_revoking_an_unknown_serial_is_refused(fresh_ca: CertificateAuthority) -> None:
    with pytest.raises(UnknownCertificate):
        fresh_ca.revoke(12345, reason=x509.ReasonFlags.superseded, now=NOW)


def test_hold_then_resume_makes_the_certificate_good_again(fresh_ca: CertificateAuthority) -> None:
    leaf = issue(fresh_ca, SMARTPHONE_AUTH)
    held = fresh_ca.revoke(leaf.certificate.serial_number, reason=x509.ReasonFlags.certificate_hold, now=NOW)
    assert (held.state, held.reason) == (CertificateState.ON_HOLD, x509.ReasonFlags.certificate_hold)
    resumed = fresh_ca.resume(leaf.certificate.serial_number)
    assert (resumed.state, resumed.reason, resumed.revoked_at) == (CertificateState.GOOD, None, None)


def test_resuming_a_certificate_revoked_for_good_is_refused(fresh_ca: CertificateAuthority) -> None:
    leaf = issue(fresh_ca, SMARTPHONE_AUTH)
    fresh_ca.revoke(leaf.certificate.serial_number, reason=x509.ReasonFlags.key_compromise, now=NOW)
    with pytest.raises(AlreadyRevoked):
        fresh_ca.resume(leaf.certificate.serial_number)


def test_crl_lists_revoked_and_held_certificates_with_their_reasons(fresh_ca: CertificateAuthority) -> None:
    good, compromised, held, unspecified = (issue(fresh_ca, SMARTPHONE_AUTH) for _ in range(4))
    fresh_ca.revoke(compromised.certificate.serial_number, reason=x509.ReasonFlags.key_compromise, now=NOW)
    fresh_ca.revoke(held.certificate.serial_number, reason=x509.ReasonFlags.certificate_hold, now=NOW)
    fresh_ca.revoke(unspecified.certificate.serial_number, reason=x509.ReasonFlags.unspecified, now=NOW)
    crl = fresh_ca.build_crl(now=NOW, lifetime=timedelta(days=1))
    assert crl_entries(crl) == {
        compromised.certificate.serial_number: x509.ReasonFlags.key_compromise,
        held.certificate.serial_number: x509.ReasonFlags.certificate_hold,
        unspecified.certificate.serial_number: None,  # RFC 5280 §5.3.1: no reasonCode for unspecified
    }
    assert good.certificate.serial_number not in crl_entries(crl)


def test_crl_entry_carries_the_revocation_time(fresh_ca: CertificateAuthority) -> None:
    leaf = issue(fresh_ca, SMARTPHONE_AUTH)
    fresh_ca.revoke(leaf.certificate.serial_number, reason=x509.ReasonFlags.superseded, now=NOW - timedelta(hours=2))
    crl = fresh_ca.build_crl(now=NOW, lifetime=timedelta(days=1))
    entry = crl.get_revoked_certificate_by_serial_number(leaf.certificate.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == NOW - timedelta(hours=2)


def test_resumed_certificate_leaves_the_crl(fresh_ca: CertificateAuthority) -> None:
    leaf = issue(fresh_ca, SMARTPHONE_AUTH)
    fresh_ca.revoke(leaf.certificate.serial_number, reason=x509.ReasonFlags.certificate_hold, now=NOW)
    fresh_ca.resume(leaf.certificate.serial_number)
    assert crl_entries(fresh_ca.build_crl(now=NOW, lifetime=timedelta(days=1))) == {}


def test_crl_is_signed_by_the_authority_and_names_it(fresh_ca: CertificateAuthority) -> None:
    crl = fresh_ca.build_crl(now=NOW, lifetime=timedelta(days=1))
    assert crl.is_signature_valid(fresh_ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == fresh_ca.certificate.subject
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == fresh_ca.key_id


def test_crl_has_this_update_and_next_update(fresh_ca: CertificateAuthority) -> None:
    crl = fresh_ca.build_crl(now=NOW, lifetime=timedelta(hours=6))
    assert (crl.last_update_utc, crl.next_update_utc) == (NOW, NOW + timedelta(hours=6))


def test_crl_numbers_increase(fresh_ca: CertificateAuthority) -> None:
    numbers = [
        fresh_ca.build_crl(now=NOW, lifetime=timedelta(days=1)).extensions.get_extension_for_class(
            x509.CRLNumber,
        ).value.crl_number
        for _ in range(3)
    ]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 3


def test_smartphone_certificate_records_the_card_certificates_it_came_from(
    pki: TestPki, issue_smartphone: Callable[..., KeyAndCertificate],
) -> None:
    leaf = issue_smartphone(SMARTPHONE_SIGN)
    status = pki.smartphone_ca.registry.status(leaf.certificate.serial_number)
    assert status is not None
    assert set(status.issued_from) == {pki.card_auth.ref, pki.card_sign.ref}
    assert attributes.decode(leaf.certificate) == TARO


def test_authority_repr_names_it_and_nothing_secret(fresh_ca: CertificateAuthority) -> None:
    assert repr(fresh_ca) == "CertificateAuthority('smartphone-ca')"


def test_reference_of_a_certificate_without_authority_key_id_is_refused(pki: TestPki) -> None:
    with pytest.raises(ValueError, match="no authorityKeyIdentifier"):
        CertificateRef.of(pki.portal_root.certificate)


def test_reference_of_a_certificate_naming_its_issuer_without_key_id_is_refused(pki: TestPki) -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    certificate = (
        x509.CertificateBuilder().subject_name(name("no key id")).issuer_name(pki.smartphone_ca.certificate.subject)
        .public_key(key.public_key()).serial_number(7).not_valid_before(NOW).not_valid_after(NOW + YEAR)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=None,
                authority_cert_issuer=[x509.DirectoryName(pki.portal_root.certificate.subject)],
                authority_cert_serial_number=pki.smartphone_ca.certificate.serial_number,
            ),
            critical=False,
        )
        .sign(pki.smartphone_ca.issuer.private_key, hashes.SHA256())
    )
    with pytest.raises(ValueError, match="has no key identifier"):
        CertificateRef.of(certificate)
