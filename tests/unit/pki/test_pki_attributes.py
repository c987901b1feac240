"""The four basic attributes in subjectAltName: exact OIDs, exact encodings, strict decoding."""

from __future__ import annotations

from datetime import date

import pytest
from asn1crypto import core
from cryptography import x509
from pki_material import NOW, TARO, YEAR, TestPki, name

from idp.pki import attributes, oids
from idp.pki.attributes import BasicAttributes, Era, MalformedAttributes, Sex
from idp.pki.profiles import SMARTPHONE_AUTH, SMARTPHONE_SIGN, KeyAlgorithm, build_certificate, generate_key


def certificate_with(pki: TestPki, names: list[x509.GeneralName]) -> x509.Certificate:
    """A signature certificate whose subjectAltName is exactly ``names``."""
    key = generate_key(KeyAlgorithm.EC_P256)
    return build_certificate(
        profile=SMARTPHONE_SIGN, subject=name("attributes"), public_key=key.public_key(),
        issuer=pki.smartphone_ca.issuer, not_before=NOW, not_after=NOW + YEAR, alternative_names=names,
        crl_url="http://x/crl", ocsp_url="http://x/ocsp",
    )


def utf8(oid: x509.ObjectIdentifier, value: str) -> x509.OtherName:
    return x509.OtherName(oid, core.UTF8String(value).dump())


def raw_values(certificate: x509.Certificate) -> dict[str, str]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {
        other.type_id.dotted_string: core.UTF8String.load(other.value).native
        for other in names.get_values_for_type(x509.OtherName)
    }


def taro_names(**replace: str) -> list[x509.GeneralName]:
    """Taro's six entries, with some values replaced (keyed by OID constant name)."""
    values = {
        "NAME": "山田　太郎", "NAME_SUBSTITUTES": "00000", "SEX": "1", "DATE_OF_BIRTH": "419900515",
        "ADDRESS": "東京都千代田区千代田１－１", "ADDRESS_SUBSTITUTES": "0000000000000",
    }
    values.update(replace)
    return [utf8(getattr(oids, key), value) for key, value in values.items()]


def test_each_attribute_sits_under_its_pinned_oid(pki: TestPki) -> None:
    assert raw_values(pki.card_sign.certificate) == {
        "1.2.392.200149.8.5.5.1": "山田　太郎",
        "1.2.392.200149.8.5.5.2": "00000",
        "1.2.392.200149.8.5.5.3": "1",
        "1.2.392.200149.8.5.5.4": "419900515",
        "1.2.392.200149.8.5.5.5": "東京都千代田区千代田１－１",
        "1.2.392.200149.8.5.5.6": "0000000000000",
    }


def test_values_are_utf8_strings(pki: TestPki) -> None:
    names = pki.card_sign.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {other.value[0] for other in names.get_values_for_type(x509.OtherName)} == {0x0C}  # UTF8String tag


def test_decode_reads_back_what_was_encoded(pki: TestPki) -> None:
    assert attributes.decode(pki.card_sign.certificate) == TARO


def test_decode_reads_a_smartphone_signature_certificate_too(pki: TestPki) -> None:
    assert attributes.decode(pki.smartphone_sign.certificate) == TARO


def test_substitute_flags_round_trip(pki: TestPki) -> None:
    with_substitutes = BasicAttributes(
        name="髙橋　一郎", name_substitutes="10000", address="大阪府大阪市", address_substitutes="000100",
        date_of_birth=date(1960, 1, 2), sex=Sex.FEMALE,
    )
    assert attributes.decode(certificate_with(pki, attributes.encode(with_substitutes))) == with_substitutes


def test_claims_follow_openid_connect() -> None:
    assert TARO.to_claims() == {
        "name": "山田　太郎",
        "address": {"formatted": "東京都千代田区千代田１－１"},
        "birthdate": "1990-05-15",
        "gender": "male",
    }


def test_female_is_released_as_gender_female() -> None:
    hanako = BasicAttributes(name="山田　花子", address="東京都", date_of_birth=date(2001, 1, 1), sex=Sex.FEMALE)
    assert hanako.to_claims()["gender"] == "female"


def test_unknown_sex_releases_no_gender() -> None:
    unknown = BasicAttributes(name="山田　花子", address="東京都", date_of_birth=date(2001, 1, 1), sex=Sex.UNKNOWN)
    assert "gender" not in unknown.to_claims()


@pytest.mark.parametrize(
    ("day", "era"),
    [
        (date(1868, 10, 22), Era.UNKNOWN),
        (date(1900, 1, 1), Era.MEIJI),
        (date(1912, 7, 30), Era.TAISHO),
        (date(1926, 12, 25), Era.SHOWA),
        (date(1989, 1, 7), Era.SHOWA),
        (date(1989, 1, 8), Era.HEISEI),
        (date(2019, 4, 30), Era.HEISEI),
        (date(2019, 5, 1), Era.REIWA),
    ],
)
def test_era_of_a_date(day: date, era: Era) -> None:
    assert Era.of(day) is era


def test_certificate_without_subject_alt_name_is_refused(pki: TestPki) -> None:
    with pytest.raises(MalformedAttributes, match="no subjectAltName"):
        attributes.decode(pki.smartphone_auth.certificate)


@pytest.mark.parametrize("missing", ["NAME", "SEX", "DATE_OF_BIRTH", "ADDRESS"])
def test_missing_attribute_is_refused(pki: TestPki, missing: str) -> None:
    names = [entry for entry in taro_names() if entry.type_id != getattr(oids, missing)]
    with pytest.raises(MalformedAttributes, match=f"{getattr(oids, missing).dotted_string} is missing"):
        attributes.decode(certificate_with(pki, names))


def test_duplicated_attribute_is_refused(pki: TestPki) -> None:
    names = [*taro_names(), utf8(oids.NAME, "鈴木　次郎")]
    with pytest.raises(MalformedAttributes, match="appears twice"):
        attributes.decode(certificate_with(pki, names))


def test_attribute_that_is_not_a_utf8_string_is_refused(pki: TestPki) -> None:
    names = [
        x509.OtherName(oids.NAME, core.PrintableString("YAMADA TARO").dump()) if entry.type_id == oids.NAME
        else entry
        for entry in taro_names()
    ]
    with pytest.raises(MalformedAttributes, match="not a UTF8String"):
        attributes.decode(certificate_with(pki, names))


@pytest.mark.parametrize(
    "value",
    ["19900515", "4199005155", "41990051X", "419901301", "419900230"],
    ids=["no-era", "too-long", "not-digits", "month-13", "30-february"],
)
def test_bad_date_of_birth_is_refused(pki: TestPki, value: str) -> None:
    with pytest.raises(MalformedAttributes, match="date of birth"):
        attributes.decode(certificate_with(pki, taro_names(DATE_OF_BIRTH=value)))


def test_unknown_era_digit_is_refused(pki: TestPki) -> None:
    with pytest.raises(MalformedAttributes, match="date of birth"):
        attributes.decode(certificate_with(pki, taro_names(DATE_OF_BIRTH="919900515")))


def test_era_that_does_not_match_the_date_is_refused(pki: TestPki) -> None:
    with pytest.raises(MalformedAttributes, match="era digit does not match"):
        attributes.decode(certificate_with(pki, taro_names(DATE_OF_BIRTH="319900515")))


def test_era_unknown_is_accepted_for_any_date(pki: TestPki) -> None:
    decoded = attributes.decode(certificate_with(pki, taro_names(DATE_OF_BIRTH="019900515")))
    assert decoded.date_of_birth == date(1990, 5, 15)


@pytest.mark.parametrize("value", ["0", "4", "M", "12"])
def test_bad_sex_is_refused(pki: TestPki, value: str) -> None:
    with pytest.raises(MalformedAttributes, match="sex must be 1, 2 or 3"):
        attributes.decode(certificate_with(pki, taro_names(SEX=value)))


def test_substitute_flags_of_the_wrong_length_are_refused(pki: TestPki) -> None:
    with pytest.raises(MalformedAttributes, match="name substitute flags"):
        attributes.decode(certificate_with(pki, taro_names(NAME_SUBSTITUTES="0000")))


def test_substitute_flags_other_than_0_or_1_are_refused() -> None:
    with pytest.raises(MalformedAttributes, match="address substitute flags"):
        BasicAttributes(
            name="山田　太郎", address="東京都", address_substitutes="002", date_of_birth=date(1990, 5, 15),
            sex=Sex.MALE,
        )


def test_empty_name_is_refused() -> None:
    with pytest.raises(MalformedAttributes, match="name must not be empty"):
        BasicAttributes(name="　", address="東京都", date_of_birth=date(1990, 5, 15), sex=Sex.MALE)


def test_address_longer_than_200_characters_is_refused() -> None:
    with pytest.raises(MalformedAttributes, match="address must have 1 to 200"):
        BasicAttributes(name="山田　太郎", address="東" * 201, date_of_birth=date(1990, 5, 15), sex=Sex.MALE)


def test_other_names_outside_the_jlis_arc_are_ignored(pki: TestPki) -> None:
    names = [*taro_names(), utf8(x509.ObjectIdentifier("1.2.3.4"), "anything"), x509.DNSName("example.jp")]
    assert attributes.decode(certificate_with(pki, names)) == TARO


def test_user_authentication_certificate_carries_no_personal_data(pki: TestPki) -> None:
    for certificate in (pki.card_auth.certificate, pki.smartphone_auth.certificate):
        with pytest.raises(x509.ExtensionNotFound):
            certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert SMARTPHONE_AUTH.carries_attributes is False
