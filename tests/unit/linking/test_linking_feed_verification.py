"""``verify_page``: the portal takes a linking-data page only from the J-LIS linking signer, fresh,
and exactly where its cursor stands. Each attack starts from a page J-LIS signed and changes one thing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from linking_world import NOW, issue_taro, page_of, payload_of, signed_payload, unsigned, with_payload

from idp.ceremonies.linking import LinkingRefused, LinkKind, Reason, verify_page
from idp.pki.registry import CertificateRef


def verify(jlis, page, *, cursor=0, now=NOW, crls=()):
    return verify_page(page=page, roots=(jlis.root.certificate,), crls=crls, cursor=cursor, now=now)


def refused(jlis, page, **kwargs) -> LinkingRefused:
    with pytest.raises(LinkingRefused) as caught:
        verify(jlis, page, **kwargs)
    return caught.value


def test_a_page_jlis_signed_is_read_link_by_link(jlis, card):
    jlis.renew_card(card, now=NOW)
    verified = verify(jlis, page_of(jlis))
    assert (verified.since, verified.next, verified.more) == (0, 4, False)
    assert [link.kind for link in verified.links] == [LinkKind.SAME_PERSON, LinkKind.SAME_PERSON,
                                                      LinkKind.SUCCESSOR, LinkKind.SUCCESSOR]
    renewal = verified.links[2]
    assert renewal.reason == "superseded"
    assert renewal.second.serial_number == CertificateRef.of(card.certificates.auth).serial_number


def test_an_empty_page_at_the_cursor_is_accepted(jlis, card):
    verified = verify(jlis, page_of(jlis, since=1), cursor=1)
    assert (verified.since, verified.next, verified.links) == (1, 1, ())


def test_an_unsigned_page_is_refused(jlis, card):
    assert refused(jlis, unsigned(page_of(jlis))).reason is Reason.UNSIGNED


def test_a_forged_page_is_refused(jlis, card):
    payload = payload_of(page_of(jlis))
    payload["entries"][0]["sign"]["serial"] = "12345"
    assert refused(jlis, with_payload(page_of(jlis), payload)).reason is Reason.BAD_SIGNATURE


def test_a_page_that_is_not_a_jws_is_refused(jlis):
    assert refused(jlis, "<html>maintenance</html>").reason is Reason.MALFORMED


def test_a_page_signed_by_another_pki_is_refused(jlis, other_jlis, card):
    assert refused(jlis, page_of(jlis, signer=other_jlis.linking_signer)).reason is Reason.UNTRUSTED_SIGNER


@pytest.mark.parametrize("authority", ["jlis-root", "jlis-auth-ca", "jlis-sign-ca"])
def test_a_page_signed_by_a_jlis_key_that_is_not_the_linking_signer_is_refused(jlis, card, authority):
    """The J-LIS root and issuing CAs chain to the root too; their keys sign certificates, not linking data."""
    page = page_of(jlis, signer=jlis.authority(authority).issuer)
    assert refused(jlis, page).reason is Reason.NOT_A_LINKING_SIGNER


def test_a_page_without_the_signer_certificate_is_refused(jlis, card):
    page = signed_payload(jlis, payload_of(page_of(jlis)), x5c=None)
    assert refused(jlis, page).reason is Reason.NO_SIGNER_CERTIFICATE


def test_a_document_of_another_type_signed_by_the_signer_is_refused(jlis, card):
    page = signed_payload(jlis, payload_of(page_of(jlis)), typ="JWT")
    assert refused(jlis, page).reason is Reason.WRONG_TYPE


def test_a_page_signed_after_the_signer_expired_is_refused(jlis, card):
    later = jlis.linking_signer.certificate.not_valid_after_utc + timedelta(days=1)
    assert refused(jlis, page_of(jlis, now=later), now=later).reason is Reason.SIGNER_EXPIRED


def test_a_page_signed_by_a_revoked_signer_is_refused(jlis, card):
    jlis.root.revoke(jlis.linking_signer.certificate.serial_number, reason=x509.ReasonFlags.key_compromise, now=NOW)
    crl = jlis.crl("jlis-root", now=NOW).public_bytes(serialization.Encoding.DER)
    assert refused(jlis, page_of(jlis), crls=(crl,)).reason is Reason.SIGNER_REVOKED


def test_a_crl_of_another_issuer_does_not_revoke_the_signer(jlis, other_jlis, card):
    crl = other_jlis.crl("jlis-root", now=NOW).public_bytes(serialization.Encoding.DER)
    assert verify(jlis, page_of(jlis), crls=(crl,)).next == 1


def test_a_page_older_than_ten_minutes_is_refused(jlis, card):
    page = page_of(jlis, now=NOW - timedelta(minutes=11))
    assert refused(jlis, page).reason is Reason.STALE


def test_a_page_from_the_future_is_refused(jlis, card):
    assert refused(jlis, page_of(jlis, now=NOW + timedelta(minutes=2))).reason is Reason.STALE


def test_a_replayed_page_is_refused(jlis, card):
    issue_taro(jlis)
    first = page_of(jlis)
    assert verify(jlis, first).next == 2
    assert refused(jlis, first, cursor=2).reason is Reason.REPLAYED


def test_a_page_after_a_gap_is_refused(jlis, card):
    issue_taro(jlis)
    assert refused(jlis, page_of(jlis, since=1), cursor=0).reason is Reason.GAP


def test_a_reordered_page_is_refused(jlis, card):
    jlis.renew_card(card, now=NOW)
    entries, _ = jlis.linking.since(0)
    entries[1], entries[2] = entries[2], entries[1]
    assert refused(jlis, page_of(jlis, entries=entries)).reason is Reason.OUT_OF_ORDER


def test_a_page_that_skips_a_link_is_refused(jlis, card):
    jlis.renew_card(card, now=NOW)
    entries, _ = jlis.linking.since(0)
    del entries[1]
    assert refused(jlis, page_of(jlis, entries=entries)).reason is Reason.OUT_OF_ORDER


def test_a_page_whose_next_is_not_its_last_link_is_refused(jlis, card):
    payload = payload_of(page_of(jlis))
    payload["next"] = 5
    assert refused(jlis, signed_payload(jlis, payload)).reason is Reason.OUT_OF_ORDER


@pytest.mark.parametrize("mutate", [
    lambda entry: entry.update(kind="merge"),
    lambda entry: entry["auth"].update(kind="sign"),
    lambda entry: entry["sign"].update(serial="0x12"),
    lambda entry: entry.pop("sign"),
    lambda entry: entry["auth"].update(not_after="2030-01-01T00:00:00"),
], ids=["unknown_kind", "two_sign_certificates", "hex_serial", "one_sided", "naive_time"])
def test_a_malformed_link_is_refused(jlis, card, mutate):
    payload = payload_of(page_of(jlis))
    mutate(payload["entries"][0])
    assert refused(jlis, signed_payload(jlis, payload)).reason is Reason.MALFORMED



@pytest.mark.parametrize("field", ["since", "next", "iat", "more", "entries"])
@pytest.mark.parametrize("value", [None, "1", -1, True])
def test_a_payload_field_of_the_wrong_type_is_refused(jlis, card, field, value):
    payload = payload_of(page_of(jlis))
    if field == "more" and value is True:
        value = "yes"
    payload[field] = value
    assert refused(jlis, signed_payload(jlis, payload)).reason is Reason.MALFORMED


def test_a_page_dated_beyond_any_calendar_is_refused(jlis, card):
    payload = payload_of(page_of(jlis))
    payload["iat"] = 10**30
    assert refused(jlis, signed_payload(jlis, payload)).reason is Reason.MALFORMED
