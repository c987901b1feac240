"""Path validation with revocation required: one valid case per purpose, then one attack per test."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from pki_material import NOW, TARO, YEAR, KeyAndCertificate, TestPki, issue, make_root, name

from idp.pki import attributes
from idp.pki.ocsp import respond
from idp.pki.profiles import (
    CARD_AUTH,
    CARD_SIGN,
    JLIS_ROOT,
    PORTAL_ROOT,
    SMARTPHONE_AUTH,
    SMARTPHONE_CA,
    SMARTPHONE_SIGN,
    CertificateProfile,
    Issuer,
    KeyAlgorithm,
    build_certificate,
    card_auth_subject,
    generate_key,
)
from idp.pki.validation import CertificateRejected, Purpose, RejectionReason, ValidatedCertificate, validate_certificate

if TYPE_CHECKING:
    from collections.abc import Callable

    from idp.pki.authority import CertificateAuthority


def validate(
    pki: TestPki,
    certificate: x509.Certificate,
    purpose: Purpose,
    *,
    now: object = NOW,
    crls: list[bytes] | None = None,
    ocsp_responses: list[bytes] | None = None,
    trust_roots: list[x509.Certificate] | None = None,
    intermediates: list[x509.Certificate] | None = None,
) -> ValidatedCertificate:
    """Validate as the portal does, with every CA's current CRL unless the test says otherwise."""
    roots = [pki.jlis_root.certificate, pki.portal_root.certificate]
    return validate_certificate(
        certificate,
        purpose=purpose,
        trust_roots=trust_roots if trust_roots is not None else roots,
        intermediates=intermediates if intermediates is not None else [
            pki.jlis_auth_ca.certificate, pki.jlis_sign_ca.certificate, pki.smartphone_ca.certificate,
        ],
        crls=crls if crls is not None else pki.crls(NOW),
        ocsp_responses=ocsp_responses or [],
        now=now,  # type: ignore[arg-type]
    )


def rejection(pki: TestPki, certificate: x509.Certificate, purpose: Purpose, **kwargs: object) -> CertificateRejected:
    with pytest.raises(CertificateRejected) as rejected:
        validate(pki, certificate, purpose, **kwargs)  # type: ignore[arg-type]
    return rejected.value


def ocsp_answer(authority: CertificateAuthority, certificate: x509.Certificate, *, now: object = NOW) -> bytes:
    request = ocsp.OCSPRequestBuilder().add_certificate(
        certificate, authority.certificate, hashes.SHA256(),
    ).build().public_bytes(serialization.Encoding.DER)
    return respond(request, authorities=[authority], now=now, lifetime=timedelta(minutes=15))  # type: ignore[arg-type]


def crl_of(authority: CertificateAuthority, *, now: object = NOW, lifetime: timedelta = timedelta(days=1)) -> bytes:
    return authority.build_crl(now=now, lifetime=lifetime).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


# Valid paths, one per purpose.

@pytest.mark.parametrize(
    ("holder", "purpose", "root", "intermediate"),
    [
        ("card_auth", Purpose.CARD_AUTH, "jlis_root", "jlis_auth_ca"),
        ("card_sign", Purpose.CARD_SIGN, "jlis_root", "jlis_sign_ca"),
        ("smartphone_auth", Purpose.SMARTPHONE_AUTH, "portal_root", "smartphone_ca"),
        ("smartphone_sign", Purpose.SMARTPHONE_SIGN, "portal_root", "smartphone_ca"),
    ],
)
def test_valid_certificate_is_accepted_with_its_path(
    pki: TestPki, holder: str, purpose: Purpose, root: str, intermediate: str,
) -> None:
    certificate = getattr(pki, holder).certificate
    validated = validate(pki, certificate, purpose)
    assert validated.leaf == certificate
    assert validated.purpose is purpose
    assert validated.path == (
        getattr(pki, root).certificate, getattr(pki, intermediate).certificate, certificate,
    )


def test_valid_certificate_is_accepted_on_ocsp_alone_for_the_leaf(pki: TestPki) -> None:
    leaf = pki.smartphone_auth.certificate
    validated = validate(
        pki, leaf, Purpose.SMARTPHONE_AUTH,
        crls=[crl_of(pki.portal_root)], ocsp_responses=[ocsp_answer(pki.smartphone_ca, leaf)],
    )
    assert validated.leaf == leaf


def test_validated_signature_certificate_still_carries_its_attributes(pki: TestPki) -> None:
    validated = validate(pki, pki.smartphone_sign.certificate, Purpose.SMARTPHONE_SIGN)
    assert attributes.decode(validated.leaf) == TARO


# Time.

def test_expired_certificate_is_rejected(pki: TestPki) -> None:
    leaf = issue(pki.smartphone_ca, SMARTPHONE_AUTH, now=NOW - 2 * YEAR, lifetime=YEAR)
    rejected = rejection(pki, leaf.certificate, Purpose.SMARTPHONE_AUTH)
    assert rejected.reason is RejectionReason.EXPIRED


def test_not_yet_valid_certificate_is_rejected(pki: TestPki) -> None:
    leaf = issue(pki.smartphone_ca, SMARTPHONE_AUTH, now=NOW + timedelta(days=2), lifetime=YEAR)
    rejected = rejection(pki, leaf.certificate, Purpose.SMARTPHONE_AUTH)
    assert rejected.reason is RejectionReason.NOT_YET_VALID


def test_expired_intermediate_rejects_its_certificates(pki: TestPki) -> None:
    old_ca_key = generate_key(KeyAlgorithm.EC_P256)
    old_ca_certificate = pki.portal_root.issue(
        profile=SMARTPHONE_CA, subject=name("Expired Smartphone CA"), public_key=old_ca_key.public_key(),
        now=NOW - 3 * YEAR, not_after=NOW - timedelta(days=1),
    )
    leaf_key = generate_key(KeyAlgorithm.EC_P256)
    leaf = build_certificate(
        profile=SMARTPHONE_AUTH, subject=name("leaf of an expired CA"), public_key=leaf_key.public_key(),
        issuer=Issuer(old_ca_certificate, old_ca_key), not_before=NOW - 2 * YEAR, not_after=NOW - timedelta(days=2),
        crl_url="http://x/crl", ocsp_url="http://x/ocsp",
    )
    rejected = rejection(pki, leaf, Purpose.SMARTPHONE_AUTH, intermediates=[old_ca_certificate])
    assert rejected.reason is RejectionReason.EXPIRED


# Revocation.

def test_certificate_revoked_on_the_crl_is_rejected_with_reason_and_time(
    pki: TestPki, issue_smartphone: Callable[..., KeyAndCertificate],
) -> None:
    leaf = issue_smartphone().certificate
    pki.smartphone_ca.revoke(leaf.serial_number, reason=x509.ReasonFlags.key_compromise, now=NOW - timedelta(hours=1))
    rejected = rejection(pki, leaf, Purpose.SMARTPHONE_AUTH)
    assert rejected.reason is RejectionReason.REVOKED
    assert rejected.revocation_reason is x509.ReasonFlags.key_compromise
    assert rejected.revoked_at == NOW - timedelta(hours=1)


def test_certificate_revoked_in_ocsp_is_rejected_with_reason_and_time(
    pki: TestPki, issue_smartphone: Callable[..., KeyAndCertificate],
) -> None:
    leaf = issue_smartphone().certificate
    pki.smartphone_ca.revoke(leaf.serial_number, reason=x509.ReasonFlags.superseded, now=NOW - timedelta(hours=1))
    rejected = rejection(
        pki, leaf, Purpose.SMARTPHONE_AUTH,
        crls=[crl_of(pki.portal_root)], ocsp_responses=[ocsp_answer(pki.smartphone_ca, leaf)],
    )
    assert rejected.reason is RejectionReason.REVOKED
    assert rejected.revocation_reason is x509.ReasonFlags.superseded
    assert rejected.revoked_at == NOW - timedelta(hours=1)


def test_certificate_on_hold_is_rejected_as_revoked_with_reason_certificate_hold(
    pki: TestPki, issue_smartphone: Callable[..., KeyAndCertificate],
) -> None:
    leaf = issue_smartphone().certificate
    pki.smartphone_ca.revoke(leaf.serial_number, reason=x509.ReasonFlags.certificate_hold, now=NOW - timedelta(hours=1))
    rejected = rejection(pki, leaf, Purpose.SMARTPHONE_AUTH)
    assert rejected.reason is RejectionReason.REVOKED
    assert rejected.revocation_reason is x509.ReasonFlags.certificate_hold


def test_certificate_resumed_from_hold_is_accepted_again(
    pki: TestPki, issue_smartphone: Callable[..., KeyAndCertificate],
) -> None:
    leaf = issue_smartphone().certificate
    pki.smartphone_ca.revoke(leaf.serial_number, reason=x509.ReasonFlags.certificate_hold, now=NOW - timedelta(hours=1))
    pki.smartphone_ca.resume(leaf.serial_number)
    assert validate(pki, leaf, Purpose.SMARTPHONE_AUTH).leaf == leaf


def test_certificate_under_a_revoked_intermediate_is_rejected(pki: TestPki) -> None:
    ca_key = generate_key(KeyAlgorithm.EC_P256)
    ca_certificate = pki.portal_root.issue(
        profile=SMARTPHONE_CA, subject=name("Compromised Smartphone CA"), public_key=ca_key.public_key(),
        now=NOW - YEAR, not_after=NOW + YEAR,
    )
    leaf_key = generate_key(KeyAlgorithm.EC_P256)
    ca = Issuer(ca_certificate, ca_key)
    leaf = build_certificate(
        profile=SMARTPHONE_AUTH, subject=name("leaf"), public_key=leaf_key.public_key(), issuer=ca,
        not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30),
        crl_url="http://x/crl", ocsp_url="http://x/ocsp",
    )
    pki.portal_root.revoke(
        ca_certificate.serial_number, reason=x509.ReasonFlags.ca_compromise, now=NOW - timedelta(hours=1),
    )
    empty_crl_of_ca = (
        x509.CertificateRevocationListBuilder().issuer_name(ca_certificate.subject).last_update(NOW)
        .next_update(NOW + timedelta(days=1)).add_extension(x509.CRLNumber(1), critical=False)
        .sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    )
    rejected = rejection(
        pki, leaf, Purpose.SMARTPHONE_AUTH, intermediates=[ca_certificate],
        crls=[crl_of(pki.portal_root), empty_crl_of_ca],
    )
    assert rejected.reason is RejectionReason.REVOKED
    assert rejected.revocation_reason is x509.ReasonFlags.ca_compromise


def test_certificate_without_any_revocation_information_is_rejected(pki: TestPki) -> None:
    rejected = rejection(pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH, crls=[], ocsp_responses=[])
    assert rejected.reason is RejectionReason.REVOCATION_UNAVAILABLE


def test_leaf_covered_but_intermediate_not_is_rejected(pki: TestPki) -> None:
    rejected = rejection(
        pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH, crls=[crl_of(pki.smartphone_ca)],
    )
    assert rejected.reason is RejectionReason.REVOCATION_UNAVAILABLE


def test_crl_of_another_ca_does_not_cover_the_certificate(pki: TestPki) -> None:
    rejected = rejection(
        pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH,
        crls=[crl_of(pki.portal_root), crl_of(pki.jlis_auth_ca)],
    )
    assert rejected.reason is RejectionReason.REVOCATION_UNAVAILABLE


def test_stale_crl_is_rejected(pki: TestPki) -> None:
    stale = [crl_of(pki.smartphone_ca, now=NOW - timedelta(days=3)), crl_of(pki.portal_root)]
    rejected = rejection(pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH, crls=stale)
    assert rejected.reason is RejectionReason.REVOCATION_UNAVAILABLE


def test_stale_ocsp_response_is_rejected(pki: TestPki) -> None:
    leaf = pki.smartphone_auth.certificate
    stale = ocsp_answer(pki.smartphone_ca, leaf, now=NOW - timedelta(hours=2))
    rejected = rejection(
        pki, leaf, Purpose.SMARTPHONE_AUTH, crls=[crl_of(pki.portal_root)], ocsp_responses=[stale],
    )
    assert rejected.reason is RejectionReason.REVOCATION_UNAVAILABLE


def test_crl_from_the_future_is_not_trusted(pki: TestPki) -> None:
    future = [crl_of(pki.smartphone_ca, now=NOW + timedelta(hours=3)), crl_of(pki.portal_root)]
    rejected = rejection(pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH, crls=future)
    assert rejected.reason is RejectionReason.REVOCATION_UNAVAILABLE


def test_crl_signed_by_another_key_is_not_trusted(pki: TestPki) -> None:
    forger = generate_key(KeyAlgorithm.EC_P256)
    forged = (
        x509.CertificateRevocationListBuilder().issuer_name(pki.smartphone_ca.certificate.subject)
        .last_update(NOW).next_update(NOW + timedelta(days=1)).add_extension(x509.CRLNumber(10**6), critical=False)
        .sign(forger, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    )
    rejected = rejection(
        pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH, crls=[forged, crl_of(pki.portal_root)],
    )
    assert rejected.reason is RejectionReason.REVOCATION_UNAVAILABLE


def test_unsuccessful_ocsp_response_is_no_revocation_information(pki: TestPki) -> None:
    unauthorized = ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
    ).public_bytes(serialization.Encoding.DER)
    rejected = rejection(
        pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH,
        crls=[crl_of(pki.portal_root)], ocsp_responses=[unauthorized],
    )
    assert rejected.reason is RejectionReason.REVOCATION_UNAVAILABLE


@pytest.mark.parametrize("kind", ["crls", "ocsp_responses"])
def test_unreadable_revocation_information_is_rejected(pki: TestPki, kind: str) -> None:
    rejected = rejection(pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH, **{kind: [b"\x30\x03junk"]})
    assert rejected.reason is RejectionReason.REVOCATION_UNAVAILABLE


# Trust.

def test_certificate_from_an_untrusted_root_is_rejected(pki: TestPki) -> None:
    rejected = rejection(
        pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH, trust_roots=[pki.jlis_root.certificate],
    )
    assert rejected.reason is RejectionReason.UNTRUSTED


def test_no_trust_roots_trusts_nothing(pki: TestPki) -> None:
    rejected = rejection(pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH, trust_roots=[])
    assert rejected.reason is RejectionReason.UNTRUSTED


def test_missing_intermediate_leaves_no_path(pki: TestPki) -> None:
    rejected = rejection(pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_AUTH, intermediates=[])
    assert rejected.reason is RejectionReason.UNTRUSTED


def test_self_signed_leaf_is_rejected(pki: TestPki) -> None:
    impostor = make_root(PORTAL_ROOT, name("self-signed"))
    rejected = rejection(pki, impostor.certificate, Purpose.SMARTPHONE_AUTH)
    assert rejected.reason is RejectionReason.UNTRUSTED


def test_root_with_the_same_name_but_another_key_is_not_trusted(pki: TestPki) -> None:
    lookalike = make_root(JLIS_ROOT, pki.jlis_root.certificate.subject)
    rejected = rejection(pki, pki.card_auth.certificate, Purpose.CARD_AUTH, trust_roots=[lookalike.certificate])
    assert rejected.reason is RejectionReason.UNTRUSTED


def test_card_certificate_signed_by_a_key_that_is_not_its_issuers_is_rejected(pki: TestPki) -> None:
    forger = generate_key(KeyAlgorithm.RSA_2048)
    card_key = generate_key(KeyAlgorithm.RSA_2048)
    forged = (
        x509.CertificateBuilder()
        .subject_name(card_auth_subject("FORGED"))
        .issuer_name(pki.jlis_auth_ca.certificate.subject)
        .public_key(card_key.public_key())
        .serial_number(pki.card_auth.certificate.serial_number)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + YEAR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(CARD_AUTH.key_usage_extension(), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier(key_identifier=pki.jlis_auth_ca.key_id, authority_cert_issuer=None,
                                        authority_cert_serial_number=None),
            critical=False,
        )
        .add_extension(x509.CertificatePolicies([x509.PolicyInformation(CARD_AUTH.policies[0], None)]), critical=False)
        .sign(forger, hashes.SHA256())
    )
    rejected = rejection(pki, forged, Purpose.CARD_AUTH)
    assert rejected.reason is RejectionReason.UNTRUSTED


def test_end_entity_certificate_used_as_a_ca_is_rejected(pki: TestPki) -> None:
    key = generate_key(KeyAlgorithm.RSA_2048)
    issued_by_a_card = build_certificate(
        profile=CARD_AUTH, subject=card_auth_subject("SUB"), public_key=key.public_key(),
        issuer=Issuer(pki.card_auth.certificate, pki.card_auth.key),
        not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30),
        crl_url="http://x/crl", ocsp_url="http://x/ocsp",
    )
    rejected = rejection(
        pki, issued_by_a_card, Purpose.CARD_AUTH,
        intermediates=[pki.jlis_auth_ca.certificate, pki.card_auth.certificate],
    )
    assert rejected.reason is RejectionReason.UNTRUSTED


def test_ca_under_a_path_length_zero_ca_may_not_issue(pki: TestPki) -> None:
    sub_key = generate_key(KeyAlgorithm.EC_P256)
    sub_ca = build_certificate(
        profile=SMARTPHONE_CA, subject=name("Rogue sub-CA"), public_key=sub_key.public_key(),
        issuer=pki.smartphone_ca.issuer, not_before=NOW - timedelta(days=1), not_after=NOW + YEAR,
        crl_url="http://x/crl", ocsp_url="http://x/ocsp",
    )
    leaf_key = generate_key(KeyAlgorithm.EC_P256)
    leaf = build_certificate(
        profile=SMARTPHONE_AUTH, subject=name("leaf of a rogue CA"), public_key=leaf_key.public_key(),
        issuer=Issuer(sub_ca, sub_key), not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30),
        crl_url="http://x/crl", ocsp_url="http://x/ocsp",
    )
    rejected = rejection(
        pki, leaf, Purpose.SMARTPHONE_AUTH, intermediates=[pki.smartphone_ca.certificate, sub_ca],
    )
    assert rejected.reason is RejectionReason.UNTRUSTED


# Purpose.

@pytest.mark.parametrize(
    ("holder", "purpose"),
    [
        ("card_auth", Purpose.CARD_SIGN),
        ("smartphone_auth", Purpose.SMARTPHONE_SIGN),
        ("card_sign", Purpose.CARD_AUTH),
        ("smartphone_sign", Purpose.SMARTPHONE_AUTH),
        ("card_auth", Purpose.SMARTPHONE_AUTH),
        ("card_sign", Purpose.SMARTPHONE_SIGN),
        ("smartphone_auth", Purpose.CARD_AUTH),
    ],
    ids=[
        "user-auth-card-certificate-offered-for-signing",
        "user-auth-phone-certificate-offered-for-signing",
        "signature-card-certificate-offered-for-login",
        "signature-phone-certificate-offered-for-login",
        "card-certificate-offered-as-phone-certificate",
        "card-signature-certificate-offered-as-phone-signature",
        "phone-certificate-offered-as-card-certificate",
    ],
)
def test_certificate_offered_for_another_purpose_is_rejected(pki: TestPki, holder: str, purpose: Purpose) -> None:
    rejected = rejection(pki, getattr(pki, holder).certificate, purpose)
    assert rejected.reason is RejectionReason.WRONG_PURPOSE


def test_certificate_asserting_no_policy_is_rejected(pki: TestPki) -> None:
    without_policy = CertificateProfile(
        name="no-policy", key_algorithm=KeyAlgorithm.EC_P256, key_usage=frozenset({"digital_signature"}),
    )
    key = generate_key(KeyAlgorithm.EC_P256)
    leaf = build_certificate(
        profile=without_policy, subject=name("no policy"), public_key=key.public_key(),
        issuer=pki.smartphone_ca.issuer, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30),
        crl_url="http://x/crl", ocsp_url="http://x/ocsp",
    )
    rejected = rejection(pki, leaf, Purpose.SMARTPHONE_AUTH)
    assert rejected.reason is RejectionReason.WRONG_PURPOSE
    assert SMARTPHONE_AUTH.policies[0].dotted_string in rejected.detail


def test_ca_certificate_offered_as_end_entity_is_rejected(pki: TestPki) -> None:
    rejected = rejection(pki, pki.smartphone_ca.certificate, Purpose.SMARTPHONE_AUTH)
    assert rejected.reason is RejectionReason.WRONG_PURPOSE


def test_purposes_name_their_profiles_usage_and_policy() -> None:
    assert {purpose: (purpose.key_usage, purpose.policy) for purpose in Purpose} == {
        Purpose.CARD_AUTH: (frozenset({"digital_signature"}), CARD_AUTH.policies[0]),
        Purpose.CARD_SIGN: (frozenset({"digital_signature", "non_repudiation"}), CARD_SIGN.policies[0]),
        Purpose.SMARTPHONE_AUTH: (frozenset({"digital_signature"}), SMARTPHONE_AUTH.policies[0]),
        Purpose.SMARTPHONE_SIGN: (frozenset({"digital_signature", "non_repudiation"}), SMARTPHONE_SIGN.policies[0]),
    }


# What a person reads.

def test_rejection_reads_as_a_sentence(pki: TestPki, issue_smartphone: Callable[..., KeyAndCertificate]) -> None:
    leaf = issue_smartphone().certificate
    pki.smartphone_ca.revoke(leaf.serial_number, reason=x509.ReasonFlags.key_compromise, now=NOW - timedelta(hours=1))
    message = str(rejection(pki, leaf, Purpose.SMARTPHONE_AUTH))
    assert message.startswith("The certificate, or one that vouches for it, has been revoked.")
    assert "compromised key" in message


def test_wrong_purpose_reads_as_a_sentence(pki: TestPki) -> None:
    message = str(rejection(pki, pki.smartphone_auth.certificate, Purpose.SMARTPHONE_SIGN))
    assert message.startswith("The certificate is not meant for this use.")
    assert "non repudiation" in message


def test_signature_card_certificate_is_validated_with_sign_ca_not_auth_ca(pki: TestPki) -> None:
    rejected = rejection(
        pki, pki.card_sign.certificate, Purpose.CARD_SIGN, intermediates=[pki.jlis_auth_ca.certificate],
    )
    assert rejected.reason is RejectionReason.UNTRUSTED
    assert CARD_SIGN.name == Purpose.CARD_SIGN.value
