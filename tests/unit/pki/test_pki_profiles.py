"""Certificate profiles: what each kind of certificate says about itself (RFC 5280 §4.2)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, timedelta

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID, NameOID
from pki_material import AAGUID, NOW, YEAR, TestPki, issue, name

from idp.pki import oids
from idp.pki.profiles import (
    ATTESTATION,
    CARD_AUTH,
    CARD_SIGN,
    JLIS_AUTH_CA,
    JLIS_LINKING_SIGNER,
    JLIS_ROOT,
    JLIS_SIGN_CA,
    LINKING_DATA_SIGNING,
    PORTAL_ROOT,
    PROFILES,
    SMARTPHONE_AUTH,
    SMARTPHONE_CA,
    SMARTPHONE_SIGN,
    TIMESTAMPING,
    VENDOR_ROOT,
    CertificateProfile,
    Issuer,
    KeyAlgorithm,
    ProfileError,
    build_certificate,
    card_certificate_expiry,
    generate_key,
)

_MINTED: dict[str, x509.Certificate] = {}


def _minted(pki: TestPki, profile: CertificateProfile) -> x509.Certificate:
    """The linking signer (from the J-LIS root) and the timestamping unit (from the portal root), once."""
    if profile.name not in _MINTED:
        root = pki.jlis_root if profile is JLIS_LINKING_SIGNER else pki.portal_root
        issuing = dataclasses.replace(root, profiles=frozenset({profile.name}))
        _MINTED[profile.name] = issue(issuing, profile).certificate
    return _MINTED[profile.name]


def certificate_of(pki: TestPki, profile: CertificateProfile) -> x509.Certificate:
    if profile in {JLIS_LINKING_SIGNER, TIMESTAMPING}:
        return _minted(pki, profile)
    return {
        JLIS_ROOT.name: pki.jlis_root.certificate,
        JLIS_AUTH_CA.name: pki.jlis_auth_ca.certificate,
        JLIS_SIGN_CA.name: pki.jlis_sign_ca.certificate,
        CARD_AUTH.name: pki.card_auth.certificate,
        CARD_SIGN.name: pki.card_sign.certificate,
        PORTAL_ROOT.name: pki.portal_root.certificate,
        SMARTPHONE_CA.name: pki.smartphone_ca.certificate,
        SMARTPHONE_AUTH.name: pki.smartphone_auth.certificate,
        SMARTPHONE_SIGN.name: pki.smartphone_sign.certificate,
        VENDOR_ROOT.name: pki.vendor_root.certificate,
        ATTESTATION.name: pki.attestation.certificate,
    }[profile.name]


ALL_PROFILES = pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
END_ENTITIES_WITH_REVOCATION = [CARD_AUTH, CARD_SIGN, SMARTPHONE_AUTH, SMARTPHONE_SIGN]
CRL_URLS = {
    CARD_AUTH.name: "http://127.0.0.1:8000/pki/crl/jlis-auth-ca.crl",
    CARD_SIGN.name: "http://127.0.0.1:8000/pki/crl/jlis-sign-ca.crl",
    SMARTPHONE_AUTH.name: "http://127.0.0.1:8000/pki/crl/smartphone-ca.crl",
    SMARTPHONE_SIGN.name: "http://127.0.0.1:8000/pki/crl/smartphone-ca.crl",
}
OCSP = AuthorityInformationAccessOID.OCSP

EXPECTED_KEY_USAGE = {
    JLIS_ROOT.name: {"key_cert_sign", "crl_sign"},
    JLIS_AUTH_CA.name: {"key_cert_sign", "crl_sign"},
    JLIS_SIGN_CA.name: {"key_cert_sign", "crl_sign"},
    CARD_AUTH.name: {"digital_signature"},
    CARD_SIGN.name: {"digital_signature", "content_commitment"},
    PORTAL_ROOT.name: {"key_cert_sign", "crl_sign"},
    SMARTPHONE_CA.name: {"key_cert_sign", "crl_sign"},
    SMARTPHONE_AUTH.name: {"digital_signature"},
    SMARTPHONE_SIGN.name: {"digital_signature", "content_commitment"},
    VENDOR_ROOT.name: {"key_cert_sign", "crl_sign"},
    ATTESTATION.name: {"digital_signature"},
    JLIS_LINKING_SIGNER.name: {"digital_signature"},
    TIMESTAMPING.name: {"digital_signature"},
}
EXPECTED_POLICIES = {
    CARD_AUTH.name: [oids.CARD_AUTH_POLICY],
    CARD_SIGN.name: [oids.CARD_SIGN_POLICY],
    SMARTPHONE_AUTH.name: [oids.SMARTPHONE_AUTH_POLICY],
    SMARTPHONE_SIGN.name: [oids.SMARTPHONE_SIGN_POLICY],
}
EXPECTED_CA = {
    JLIS_ROOT.name: (True, None),
    JLIS_AUTH_CA.name: (True, 0),
    JLIS_SIGN_CA.name: (True, 0),
    PORTAL_ROOT.name: (True, None),
    SMARTPHONE_CA.name: (True, 0),
    VENDOR_ROOT.name: (True, None),
}
KEY_USAGE_FLAGS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign",
)


@ALL_PROFILES
def test_key_usage_is_critical_and_exactly_the_profiles(pki: TestPki, profile: CertificateProfile) -> None:
    extension = certificate_of(pki, profile).extensions.get_extension_for_class(x509.KeyUsage)
    assert extension.critical
    assert {flag for flag in KEY_USAGE_FLAGS if getattr(extension.value, flag)} == EXPECTED_KEY_USAGE[profile.name]


@ALL_PROFILES
def test_basic_constraints_are_critical_and_match_the_profile(pki: TestPki, profile: CertificateProfile) -> None:
    extension = certificate_of(pki, profile).extensions.get_extension_for_class(x509.BasicConstraints)
    assert extension.critical
    assert (extension.value.ca, extension.value.path_length) == EXPECTED_CA.get(profile.name, (False, None))


@ALL_PROFILES
def test_certificate_policies_are_the_profiles(pki: TestPki, profile: CertificateProfile) -> None:
    certificate = certificate_of(pki, profile)
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        found = []
    else:
        found = [policy.policy_identifier for policy in policies]
    assert found == EXPECTED_POLICIES.get(profile.name, [])


def test_card_policies_are_the_jlis_oids() -> None:
    assert oids.CARD_AUTH_POLICY.dotted_string == "1.2.392.200149.8.5.1.3.30"
    assert oids.CARD_SIGN_POLICY.dotted_string == "1.2.392.200149.8.5.1.1.20"


@ALL_PROFILES
def test_key_algorithm_is_the_profiles(pki: TestPki, profile: CertificateProfile) -> None:
    assert profile.key_algorithm.accepts(certificate_of(pki, profile).public_key())  # type: ignore[arg-type]


@pytest.mark.parametrize("profile", END_ENTITIES_WITH_REVOCATION, ids=lambda profile: profile.name)
def test_every_end_entity_certificate_points_to_its_crl_and_ocsp(pki: TestPki, profile: CertificateProfile) -> None:
    certificate = certificate_of(pki, profile)
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp = [entry.access_location.value for entry in access if entry.access_method == OCSP]
    assert [point.full_name[0].value for point in points if point.full_name] == [CRL_URLS[profile.name]]
    assert ocsp == ["http://127.0.0.1:8000/pki/ocsp"]


@pytest.mark.parametrize("profile", [JLIS_ROOT, PORTAL_ROOT, VENDOR_ROOT, ATTESTATION], ids=lambda p: p.name)
def test_roots_and_attestation_carry_no_revocation_pointers(pki: TestPki, profile: CertificateProfile) -> None:
    extensions = certificate_of(pki, profile).extensions
    with pytest.raises(x509.ExtensionNotFound):
        extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS)
    with pytest.raises(x509.ExtensionNotFound):
        extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS)


def test_issued_certificates_name_their_issuer_by_key(pki: TestPki) -> None:
    aki = pki.smartphone_auth.certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == pki.smartphone_ca.key_id


def test_attestation_certificate_follows_webauthn_packed_rules(pki: TestPki) -> None:
    certificate = pki.attestation.certificate
    assert certificate.version is x509.Version.v3
    units = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [unit.value for unit in units] == ["Authenticator Attestation"]
    assert certificate.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "JP"
    assert certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "SE Vendor"
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Secure Element 1"
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_attestation_aaguid_extension_is_an_octet_string_of_the_aaguid(pki: TestPki) -> None:
    extension = pki.attestation.certificate.extensions.get_extension_for_oid(oids.FIDO_AAGUID)
    assert oids.FIDO_AAGUID.dotted_string == "1.3.6.1.4.1.45724.1.1.4"
    assert not extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    assert core.OctetString.load(extension.value.value).native == AAGUID.bytes


def test_aaguid_outside_an_attestation_certificate_is_refused() -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    with pytest.raises(ProfileError, match="AAGUID"):
        build_certificate(
            profile=VENDOR_ROOT, subject=name("root"), public_key=key.public_key(), issuer=None,
            signing_key=key, not_before=NOW, not_after=NOW + YEAR, aaguid=uuid.uuid4(),
        )


def test_attestation_without_aaguid_is_refused(pki: TestPki) -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    with pytest.raises(ProfileError, match="AAGUID"):
        build_certificate(
            profile=ATTESTATION, subject=name("se"), public_key=key.public_key(), issuer=pki.vendor_root,
            not_before=NOW, not_after=NOW + YEAR,
        )


@pytest.mark.parametrize(
    ("profile", "algorithm"),
    [
        (CARD_AUTH, KeyAlgorithm.EC_P256),
        (CARD_SIGN, KeyAlgorithm.EC_P256),
        (JLIS_AUTH_CA, KeyAlgorithm.EC_P256),
        (SMARTPHONE_AUTH, KeyAlgorithm.RSA_2048),
        (SMARTPHONE_SIGN, KeyAlgorithm.RSA_2048),
        (SMARTPHONE_CA, KeyAlgorithm.RSA_2048),
    ],
    ids=lambda value: value.name if isinstance(value, CertificateProfile) else value.value,
)
def test_key_of_the_wrong_algorithm_is_refused(
    pki: TestPki, profile: CertificateProfile, algorithm: KeyAlgorithm,
) -> None:
    key = generate_key(algorithm)
    issuer = pki.jlis_auth_ca.issuer if profile.key_algorithm is KeyAlgorithm.RSA_2048 else pki.smartphone_ca.issuer
    with pytest.raises(ProfileError, match=profile.key_algorithm.value):
        build_certificate(
            profile=profile, subject=name("x"), public_key=key.public_key(), issuer=issuer,
            not_before=NOW, not_after=NOW + YEAR, crl_url="http://x/crl", ocsp_url="http://x/ocsp",
        )


def test_rsa_key_of_another_size_is_refused(pki: TestPki) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    with pytest.raises(ProfileError, match="rsa-2048"):
        build_certificate(
            profile=CARD_AUTH, subject=name("x"), public_key=key.public_key(), issuer=pki.jlis_auth_ca.issuer,
            not_before=NOW, not_after=NOW + YEAR, crl_url="http://x/crl", ocsp_url="http://x/ocsp",
        )


def test_p384_key_is_refused_where_p256_is_required(pki: TestPki) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ProfileError, match="ec-p256"):
        build_certificate(
            profile=SMARTPHONE_AUTH, subject=name("x"), public_key=key.public_key(),
            issuer=pki.smartphone_ca.issuer, not_before=NOW, not_after=NOW + YEAR,
            crl_url="http://x/crl", ocsp_url="http://x/ocsp",
        )


def test_end_entity_without_revocation_pointers_is_refused(pki: TestPki) -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    with pytest.raises(ProfileError, match="CRL and OCSP"):
        build_certificate(
            profile=SMARTPHONE_AUTH, subject=name("x"), public_key=key.public_key(),
            issuer=pki.smartphone_ca.issuer, not_before=NOW, not_after=NOW + YEAR,
        )


def test_signature_certificate_without_attributes_is_refused(pki: TestPki) -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    with pytest.raises(ProfileError, match="basic attributes"):
        build_certificate(
            profile=SMARTPHONE_SIGN, subject=name("x"), public_key=key.public_key(),
            issuer=pki.smartphone_ca.issuer, not_before=NOW, not_after=NOW + YEAR,
            crl_url="http://x/crl", ocsp_url="http://x/ocsp",
        )


def test_certificate_outliving_its_issuer_is_refused(pki: TestPki) -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    with pytest.raises(ProfileError, match="outlive"):
        build_certificate(
            profile=SMARTPHONE_AUTH, subject=name("x"), public_key=key.public_key(),
            issuer=pki.smartphone_ca.issuer, not_before=NOW,
            not_after=pki.smartphone_ca.certificate.not_valid_after_utc + timedelta(days=1),
            crl_url="http://x/crl", ocsp_url="http://x/ocsp",
        )


def test_validity_ending_before_it_starts_is_refused(pki: TestPki) -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    with pytest.raises(ProfileError, match="later"):
        build_certificate(
            profile=SMARTPHONE_AUTH, subject=name("x"), public_key=key.public_key(),
            issuer=pki.smartphone_ca.issuer, not_before=NOW, not_after=NOW,
            crl_url="http://x/crl", ocsp_url="http://x/ocsp",
        )


def test_self_signed_certificate_without_signing_key_is_refused() -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    with pytest.raises(ProfileError, match="signing key"):
        build_certificate(
            profile=PORTAL_ROOT, subject=name("root"), public_key=key.public_key(), issuer=None,
            not_before=NOW, not_after=NOW + YEAR,
        )


def test_issuer_repr_names_the_subject_not_the_key(pki: TestPki) -> None:
    assert repr(pki.vendor_root) == "Issuer('CN=SE Vendor Attestation Root,O=Myna Gateway Test,C=JP')"
    assert isinstance(pki.vendor_root, Issuer)


# JPKI validity rule: to the 5th birthday after issue, the 6th when issued in the 3 months before
# a birthday, and never past the card's expiry.
@pytest.mark.parametrize(
    ("date_of_birth", "issued_on", "card_expiry", "expected"),
    [
        pytest.param(date(1990, 5, 15), date(2025, 1, 10), date(2035, 5, 15), date(2029, 5, 15),
                     id="issued-more-than-three-months-before-birthday-runs-to-fifth"),
        pytest.param(date(1990, 5, 15), date(2025, 3, 1), date(2035, 5, 15), date(2030, 5, 15),
                     id="issued-within-three-months-before-birthday-runs-to-sixth"),
        pytest.param(date(1990, 5, 15), date(2025, 2, 12), date(2035, 5, 15), date(2030, 5, 15),
                     id="issued-exactly-92-days-before-birthday-is-inside-the-window"),
        pytest.param(date(1990, 5, 15), date(2025, 2, 11), date(2035, 5, 15), date(2029, 5, 15),
                     id="issued-93-days-before-birthday-is-outside-the-window"),
        pytest.param(date(1990, 5, 15), date(2025, 5, 15), date(2035, 5, 15), date(2030, 5, 15),
                     id="issued-on-birthday-counts-from-next-birthday"),
        pytest.param(date(1990, 5, 15), date(2025, 6, 1), date(2035, 5, 15), date(2030, 5, 15),
                     id="issued-after-birthday-runs-to-fifth-following-birthday"),
        pytest.param(date(1990, 5, 15), date(2025, 1, 10), date(2028, 1, 1), date(2028, 1, 1),
                     id="capped-at-card-expiry"),
        pytest.param(date(2000, 2, 29), date(2025, 1, 10), date(2040, 1, 1), date(2030, 2, 28),
                     id="leap-day-birthday-falls-on-28-february-in-common-years"),
        pytest.param(date(2000, 2, 29), date(2023, 6, 1), date(2040, 1, 1), date(2028, 2, 29),
                     id="leap-day-birthday-stays-29-february-in-leap-years"),
    ],
)
def test_card_certificate_expiry(date_of_birth: date, issued_on: date, card_expiry: date, expected: date) -> None:
    assert card_certificate_expiry(
        date_of_birth=date_of_birth, issued_on=issued_on, card_expiry=card_expiry,
    ) == expected


def test_extended_key_usage_of_a_profile_is_written(pki: TestPki) -> None:
    with_eku = CertificateProfile(
        name="ocsp-signer", key_algorithm=KeyAlgorithm.EC_P256, key_usage=frozenset({"digital_signature"}),
        extended_key_usage=(ExtendedKeyUsageOID.OCSP_SIGNING,), revocation_pointers=False,
    )
    key = generate_key(KeyAlgorithm.EC_P256)
    certificate = build_certificate(
        profile=with_eku, subject=name("ocsp"), public_key=key.public_key(), issuer=pki.smartphone_ca.issuer,
        not_before=NOW, not_after=NOW + YEAR,
    )
    assert list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.OCSP_SIGNING,
    ]


def test_the_timestamping_certificate_has_only_a_critical_time_stamping_purpose(pki: TestPki) -> None:
    """RFC 3161 §2.3: exactly one extended key usage, id-kp-timeStamping, and it is critical."""
    extension = certificate_of(pki, TIMESTAMPING).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert extension.critical
    assert list(extension.value) == [ExtendedKeyUsageOID.TIME_STAMPING]


def test_the_linking_signer_may_sign_linking_data_only(pki: TestPki) -> None:
    extension = certificate_of(pki, JLIS_LINKING_SIGNER).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(extension.value) == [LINKING_DATA_SIGNING]
