"""The simulated J-LIS: minting cards, the JPKI certificate profile, revocation, CRL and OCSP."""

from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from idp.pki import attributes as basic_attributes
from idp.pki.attributes import BasicAttributes, Sex
from idp.pki.registry import AlreadyRevoked, CertificateState, UnknownCertificate
from smartphone.card import CardKey, InvalidPin
from smartphone.jlis import JST, JLis, UnknownAuthority, default_card_expiry, normalise_base_url

AUTH_PIN, SIGN_PIN = "1234", "ABC123"


def _issue(jlis: JLis, attributes: BasicAttributes, now: datetime, **kwargs):
    return jlis.issue_card(
        attributes=attributes, prefecture="東京都", city="千代田区", auth_pin=AUTH_PIN, sign_pin=SIGN_PIN,
        now=now, **kwargs,
    )


def _ocsp(jlis: JLis, certificate: x509.Certificate, issuer: x509.Certificate, now: datetime) -> ocsp.OCSPResponse:
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1()).build()  # noqa: S303
    return ocsp.load_der_ocsp_response(jlis.ocsp(request.public_bytes(serialization.Encoding.DER), now=now))


def _last_second_jst(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=JST).astimezone(UTC)


def test_issuing_cas_are_issued_by_the_root(jlis):
    for authority in (jlis.auth_ca, jlis.sign_ca):
        authority.certificate.verify_directly_issued_by(jlis.root.certificate)


def test_card_certificates_chain_to_the_jlis_root(jlis, card):
    card.certificates.auth.verify_directly_issued_by(jlis.auth_ca.certificate)
    card.certificates.sign.verify_directly_issued_by(jlis.sign_ca.certificate)


def test_issuing_cas_carry_the_jpki_units(jlis):
    units = [
        [unit.value for unit in authority.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
        for authority in (jlis.auth_ca, jlis.sign_ca)
    ]
    agency = "Japan Agency for Local Authority Information Systems"
    assert units == [["JPKI for user authentication", agency], ["JPKI for digital signature", agency]]


def test_jlis_keys_are_rsa_2048(jlis):
    assert [authority.certificate.public_key().key_size for authority in jlis.authorities] == [2048, 2048, 2048]


def test_auth_certificate_carries_no_personal_data(card):
    certificate = card.certificates.auth
    assert [attribute.oid for attribute in certificate.subject] == [NameOID.COUNTRY_NAME, NameOID.COMMON_NAME]
    with pytest.raises(x509.ExtensionNotFound):
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_sign_certificate_attributes_decode_to_what_was_given(card, attributes):
    assert basic_attributes.decode(card.certificates.sign) == attributes


def test_sign_certificate_subject_names_prefecture_and_city(card):
    localities = card.certificates.sign.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)
    assert [locality.value for locality in localities] == ["東京都", "千代田区"]


def test_issuance_ids_are_opaque_and_distinct(jlis, card, attributes, now):
    other = _issue(jlis, attributes, now)
    names = [
        certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        for certificate in (card.certificates.auth, card.certificates.sign, other.certificates.auth)
    ]
    assert len(set(names)) == 3
    assert not any("山田" in name for name in names)


def test_card_certificates_point_at_the_jlis_crl_and_ocsp(card):
    certificate = card.certificates.auth
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [name.value for name in points[0].full_name] == ["http://jlis.test/crl/jlis-auth-ca.crl"]
    assert [item.access_location.value for item in access
            if item.access_method == AuthorityInformationAccessOID.OCSP] == ["http://jlis.test/ocsp"]


def test_certificates_run_to_the_fifth_birthday_after_issue(card):
    # Issued 2026-06-01 to a holder born 1990-04-01: the 5th birthday after issue is 2031-04-01.
    assert card.certificates.auth.not_valid_after_utc == _last_second_jst(date(2031, 4, 1))
    assert card.certificates.sign.not_valid_after_utc == _last_second_jst(date(2031, 4, 1))


def test_certificates_issued_within_three_months_of_a_birthday_run_to_the_sixth(jlis, now):
    attributes = BasicAttributes(name="山田　花子", address="東京都千代田区", date_of_birth=date(1990, 7, 1),
                                 sex=Sex.FEMALE)
    issued = _issue(jlis, attributes, now)
    # The 1st birthday after issue is a month away (2026-07-01): the 6th is 2031-07-01, not the 5th.
    assert issued.certificates.auth.not_valid_after_utc == _last_second_jst(date(2031, 7, 1))


def test_certificates_stop_at_the_card_expiry(jlis, attributes, now):
    issued = _issue(jlis, attributes, now, card_expiry=date(2028, 1, 31))
    assert issued.certificates.auth.not_valid_after_utc == _last_second_jst(date(2028, 1, 31))
    assert issued.certificates.sign.not_valid_after_utc == _last_second_jst(date(2028, 1, 31))


def test_certificates_start_when_issued(card, now):
    assert card.certificates.auth.not_valid_before_utc == now
    assert card.certificates.sign.not_valid_before_utc == now


def test_sign_certificate_never_outlives_the_auth_certificate(card):
    assert card.certificates.sign.not_valid_after_utc <= card.certificates.auth.not_valid_after_utc


def test_card_expires_on_the_tenth_birthday_for_an_adult():
    assert default_card_expiry(date_of_birth=date(1990, 4, 1), issued_on=date(2026, 6, 1)) == date(2036, 4, 1)


def test_card_expires_on_the_fifth_birthday_for_a_minor():
    assert default_card_expiry(date_of_birth=date(2010, 4, 1), issued_on=date(2026, 6, 1)) == date(2031, 4, 1)


def test_leap_day_birthday_falls_on_28_february_in_common_years():
    assert default_card_expiry(date_of_birth=date(2000, 2, 29), issued_on=date(2027, 6, 1)) == date(2037, 2, 28)


def test_issue_with_a_date_of_birth_in_the_future_is_refused(jlis, now):
    attributes = BasicAttributes(name="未来　一郎", address="東京都", date_of_birth=date(2027, 1, 1), sex=Sex.MALE)
    with pytest.raises(ValueError) as refused:
        _issue(jlis, attributes, now)
    assert str(refused.value) == "the date of birth must not be in the future"


def test_issue_with_a_card_expiry_not_after_today_is_refused(jlis, attributes, now):
    with pytest.raises(ValueError) as refused:
        _issue(jlis, attributes, now, card_expiry=date(2026, 6, 1))
    assert str(refused.value) == "the card must expire after the day it is issued"


@pytest.mark.parametrize(("prefecture", "city"), [("", "千代田区"), ("東京都", " ")])
def test_issue_without_prefecture_or_city_is_refused(jlis, attributes, now, prefecture, city):
    with pytest.raises(ValueError) as refused:
        jlis.issue_card(attributes=attributes, prefecture=prefecture, city=city, auth_pin=AUTH_PIN,
                        sign_pin=SIGN_PIN, now=now)
    assert str(refused.value) == "the prefecture and the city must not be empty"


def test_issue_with_a_bad_pin_records_nothing(jlis, attributes, now):
    with pytest.raises(InvalidPin):
        jlis.issue_card(attributes=attributes, prefecture="東京都", city="千代田区", auth_pin="12",
                        sign_pin=SIGN_PIN, now=now)
    assert not jlis.auth_ca.registry.path.exists()
    assert not jlis.sign_ca.registry.path.exists()


def test_revoked_card_has_both_serials_on_the_crls(jlis, card, now):
    jlis.revoke_card(card.certificates, reason=x509.ReasonFlags.key_compromise, now=now)
    auth_crl = jlis.crl("jlis-auth-ca", now=now)
    sign_crl = jlis.crl("jlis-sign-ca", now=now)
    assert auth_crl.get_revoked_certificate_by_serial_number(card.certificates.auth.serial_number) is not None
    assert sign_crl.get_revoked_certificate_by_serial_number(card.certificates.sign.serial_number) is not None


def test_crl_is_signed_by_its_issuing_ca(jlis, now):
    assert jlis.crl("jlis-sign-ca", now=now).is_signature_valid(jlis.sign_ca.certificate.public_key())


def test_good_card_answers_good_over_ocsp(jlis, card, now):
    response = _ocsp(jlis, card.certificates.auth, jlis.auth_ca.certificate, now)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


@pytest.mark.parametrize("key", list(CardKey))
def test_revoked_card_answers_revoked_over_ocsp(jlis, card, now, key):
    jlis.revoke_card(card.certificates, reason=x509.ReasonFlags.key_compromise, now=now)
    issuer = jlis.auth_ca if key is CardKey.AUTH else jlis.sign_ca
    response = _ocsp(jlis, card.certificate(key), issuer.certificate, now + timedelta(minutes=1))
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is x509.ReasonFlags.key_compromise
    assert response.revocation_time_utc == now


def test_ocsp_answer_is_signed_by_the_issuing_ca(jlis, card, now):
    response = _ocsp(jlis, card.certificates.sign, jlis.sign_ca.certificate, now)
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
        jlis.sign_ca.certificate.public_key(),
    ).digest


def test_held_card_answers_revoked_with_certificate_hold(jlis, card, now):
    jlis.revoke_card(card.certificates, reason=x509.ReasonFlags.certificate_hold, now=now)
    response = _ocsp(jlis, card.certificates.auth, jlis.auth_ca.certificate, now)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is x509.ReasonFlags.certificate_hold


def test_revoking_a_card_twice_is_refused(jlis, card, now):
    jlis.revoke_card(card.certificates, reason=x509.ReasonFlags.unspecified, now=now)
    with pytest.raises(AlreadyRevoked) as refused:
        jlis.revoke_card(card.certificates, reason=x509.ReasonFlags.unspecified, now=now)
    assert str(refused.value) == "the card's certificates are already revoked"


def test_revoking_a_card_keeps_the_reason_of_an_earlier_move(jlis, card, now):
    jlis.sign_ca.revoke(card.certificates.sign.serial_number, reason=x509.ReasonFlags.affiliation_changed, now=now)
    changed = jlis.revoke_card(card.certificates, reason=x509.ReasonFlags.key_compromise, now=now)
    assert [status.serial_number for status in changed] == [card.certificates.auth.serial_number]
    statuses = jlis.card_status(card.certificates)
    assert statuses[CardKey.SIGN].reason is x509.ReasonFlags.affiliation_changed
    assert statuses[CardKey.AUTH].state is CertificateState.REVOKED


def test_revoking_a_card_of_another_jlis_is_refused_and_changes_nothing(jlis, card, tmp_path, attributes, now):
    other = JLis.create(base_url="http://other.test", now=now, registry_dir=tmp_path / "other")
    foreign = _issue(other, attributes, now)
    mixed = type(card.certificates)(auth=card.certificates.auth, sign=foreign.certificates.sign)
    with pytest.raises(UnknownCertificate):
        jlis.revoke_card(mixed, reason=x509.ReasonFlags.unspecified, now=now)
    assert jlis.card_status(card.certificates)[CardKey.AUTH].state is CertificateState.GOOD


def test_revoking_a_certificate_without_an_authority_key_id_is_refused(jlis, card, now):
    rootless = type(card.certificates)(auth=jlis.root.certificate, sign=card.certificates.sign)
    with pytest.raises(UnknownCertificate) as refused:
        jlis.revoke_card(rootless, reason=x509.ReasonFlags.unspecified, now=now)
    assert str(refused.value) == f"jlis-auth-ca did not issue certificate {jlis.root.certificate.serial_number:x}"


def test_reprs_name_no_secret(jlis, card, vendor, element):
    shown = " ".join(repr(thing) for thing in (jlis, jlis.auth_ca.registry, card, vendor, element))
    assert "PRIVATE" not in shown
    assert shown.startswith("JLis('http://jlis.test') JsonFileRegistry(")
    assert f"Vendor('Myna Devices', model='MynaSE-1') SecureElement(aaguid={vendor.aaguid}, credentials=0)" in shown


@pytest.mark.parametrize("reason", [x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.privilege_withdrawn,
                                    x509.ReasonFlags.aa_compromise])
def test_revocation_reason_jlis_does_not_use_is_refused(jlis, card, now, reason):
    with pytest.raises(ValueError) as refused:
        jlis.revoke_card(card.certificates, reason=reason, now=now)
    assert str(refused.value) == f"{reason.value} is not a reason J-LIS revokes a card for"
    assert jlis.card_status(card.certificates)[CardKey.AUTH].state is CertificateState.GOOD


def test_unknown_authority_is_refused(jlis, now):
    with pytest.raises(UnknownAuthority) as refused:
        jlis.crl("smartphone-ca", now=now)
    assert str(refused.value) == "J-LIS has no authority called 'smartphone-ca'"


@pytest.mark.parametrize("url", ["ftp://jlis.test", "jlis.test", "http://", "http://jlis.test/?a=1",
                                 "http://jlis.test/#x", "http://user:pw@jlis.test"])
def test_base_url_that_is_not_a_plain_http_url_is_refused(url):
    with pytest.raises(ValueError):
        normalise_base_url(url)


def test_base_url_without_a_host_says_what_is_wrong():
    with pytest.raises(ValueError) as refused:
        normalise_base_url("jlis.test")
    assert str(refused.value) == "the J-LIS URL must be an http:// or https:// URL with a host"


def test_base_url_with_a_query_says_what_is_wrong():
    with pytest.raises(ValueError) as refused:
        normalise_base_url("http://jlis.test/?a=1")
    assert str(refused.value) == "the J-LIS URL must not carry a query, a fragment or credentials"


def test_base_url_loses_its_trailing_slash():
    assert normalise_base_url(" https://jlis.test/pki/ ") == "https://jlis.test/pki"
