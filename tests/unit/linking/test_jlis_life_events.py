"""The simulated J-LIS's life events: each replaces certificates, revokes the old ones with the
right reason and publishes the links a verifier needs (docs/linking.md)."""

from __future__ import annotations

import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.jwk import RSAKey
from linking_world import NOW, PASSPHRASE, issue_taro, payload_of

from idp.pki import attributes as basic_attributes
from idp.pki.profiles import LINKING_DATA_SIGNING
from idp.pki.registry import CertificateRef, CertificateState, UnknownCertificate
from smartphone.card import CardKey
from smartphone.jlis import JLis, LifeEventRefused
from smartphone.jlis_linking import FEED_TYPE


def ref(certificate: x509.Certificate, kind: str) -> dict[str, str]:
    name = CertificateRef.of(certificate)
    return {"kind": kind, "issuer": name.issuer_key_id.hex(), "serial": str(name.serial_number),
            "not_after": certificate.not_valid_after_utc.isoformat()}


def links(jlis: JLis) -> list[dict]:
    return [{key: value for key, value in entry.items() if key != "at"} for entry in jlis.linking.entries()]


def test_issuing_a_card_publishes_that_its_two_certificates_are_one_person(jlis, card):
    assert links(jlis) == [{"seq": 1, "kind": "same_person", "auth": ref(card.certificates.auth, "auth"),
                            "sign": ref(card.certificates.sign, "sign")}]


def test_renewal_makes_new_keys_and_certificates_and_links_old_to_new(jlis, card):
    old = card.certificates
    old_keys = (card.public_key(CardKey.AUTH), card.public_key(CardKey.SIGN))
    new = jlis.renew_card(card, now=NOW)
    assert card.public_key(CardKey.AUTH) not in old_keys
    assert card.public_key(CardKey.SIGN) not in old_keys
    assert new.auth.public_key() == card.public_key(CardKey.AUTH)
    assert basic_attributes.decode(new.sign) == basic_attributes.decode(old.sign)
    for status in jlis.card_status(old).values():
        assert (status.state, status.reason) == (CertificateState.REVOKED, x509.ReasonFlags.superseded)
    assert [entry["kind"] for entry in links(jlis)] == ["same_person", "same_person", "successor", "successor"]
    assert links(jlis)[1:] == [
        {"seq": 2, "kind": "same_person", "auth": ref(new.auth, "auth"), "sign": ref(new.sign, "sign")},
        {"seq": 3, "kind": "successor", "old": ref(old.auth, "auth"), "new": ref(new.auth, "auth"),
         "reason": "superseded"},
        {"seq": 4, "kind": "successor", "old": ref(old.sign, "sign"), "new": ref(new.sign, "sign"),
         "reason": "superseded"},
    ]


def test_a_move_replaces_only_the_signature_certificate(jlis, card):
    old = card.certificates
    new = jlis.move_card(card, address="大阪府大阪市北区梅田1-1", prefecture="大阪府", city="大阪市", now=NOW)
    assert new.auth == old.auth
    assert basic_attributes.decode(new.sign).address == "大阪府大阪市北区梅田1-1"
    assert new.sign.subject.get_attributes_for_oid(x509.NameOID.LOCALITY_NAME)[0].value == "大阪府"
    statuses = jlis.card_status(old)
    assert statuses[CardKey.AUTH].state is CertificateState.GOOD
    assert statuses[CardKey.SIGN].reason is x509.ReasonFlags.affiliation_changed
    assert links(jlis)[1:] == [
        {"seq": 2, "kind": "same_person", "auth": ref(old.auth, "auth"), "sign": ref(new.sign, "sign")},
        {"seq": 3, "kind": "successor", "old": ref(old.sign, "sign"), "new": ref(new.sign, "sign"),
         "reason": "affiliationChanged"},
    ]


def test_reissuing_a_lost_card_revokes_the_old_one_for_key_compromise(jlis, card):
    old = card.certificates
    reissued = jlis.reissue_card(old, auth_pin="5678", sign_pin="NEW123", now=NOW)
    for status in jlis.card_status(old).values():
        assert status.reason is x509.ReasonFlags.key_compromise
    assert reissued.sign_digest(CardKey.AUTH, bytes(32), pin="5678")
    assert [entry["reason"] for entry in links(jlis) if entry["kind"] == "successor"] == ["keyCompromise"] * 2


def test_a_card_reported_lost_first_is_still_reissued_and_keeps_its_reason(jlis, card):
    old = card.certificates
    jlis.revoke_card(old, reason=x509.ReasonFlags.key_compromise, now=NOW)
    jlis.reissue_card(old, auth_pin="5678", sign_pin="NEW123", now=NOW)
    assert [entry["kind"] for entry in links(jlis)] == ["same_person", "same_person", "successor", "successor"]


def test_a_revoked_card_is_not_renewed_and_nothing_is_published(jlis, card):
    jlis.revoke_card(card.certificates, reason=x509.ReasonFlags.key_compromise, now=NOW)
    with pytest.raises(LifeEventRefused) as refused:
        jlis.renew_card(card, now=NOW)
    assert str(refused.value) == "the user-authentication certificate is revoked"
    assert len(links(jlis)) == 1


def test_a_moved_card_is_not_moved_again_from_its_old_signature_certificate(jlis, card):
    old = card.certificates
    jlis.move_card(card, address="大阪府大阪市北区梅田1-1", prefecture="大阪府", city="大阪市", now=NOW)
    with pytest.raises(LifeEventRefused) as refused:
        jlis.reissue_card(old, auth_pin="5678", sign_pin="NEW123", now=NOW)
    assert str(refused.value) == "the signature certificate was already replaced; reissue the current card"


def test_a_card_of_another_jlis_is_unknown(jlis, other_jlis):
    stranger = issue_taro(other_jlis)
    with pytest.raises(UnknownCertificate):
        jlis.renew_card(stranger, now=NOW)


def test_a_move_to_an_empty_city_is_refused_before_anything_changes(jlis, card):
    with pytest.raises(LifeEventRefused):
        jlis.move_card(card, address="大阪府大阪市北区梅田1-1", prefecture="大阪府", city=" ", now=NOW)
    assert len(links(jlis)) == 1
    assert card.certificates.sign.public_key() == card.public_key(CardKey.SIGN)


def test_a_page_is_a_jws_signed_by_the_linking_signer_the_root_certifies(jlis, card):
    page = jlis.linking_page(since=0, limit=10, now=NOW)
    signer = jlis.linking_signer.certificate
    signer.verify_directly_issued_by(jlis.root.certificate)
    assert LINKING_DATA_SIGNING in signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    registry = jws.JWSRegistry(algorithms=["RS256"])
    registry.max_header_length = 4096  # x5c holds an RSA-2048 certificate
    verified = jws.deserialize_compact(page, RSAKey.import_key(signer.public_key()), registry=registry)
    assert verified.headers()["typ"] == FEED_TYPE
    body = json.loads(verified.payload)
    assert (body["since"], body["next"], body["more"], len(body["entries"])) == (0, 1, False, 1)


def test_a_page_holds_at_most_limit_links_and_says_more_follow(jlis, card):
    jlis.renew_card(card, now=NOW)
    first = payload_of(jlis.linking_page(since=0, limit=3, now=NOW))
    assert ([entry["seq"] for entry in first["entries"]], first["next"], first["more"]) == ([1, 2, 3], 3, True)
    last = payload_of(jlis.linking_page(since=3, limit=3, now=NOW))
    assert ([entry["seq"] for entry in last["entries"]], last["next"], last["more"]) == ([4], 4, False)


def test_the_signer_survives_a_restore_and_its_key_is_stored_encrypted(tmp_path, jlis):
    stored = json.loads((tmp_path / "jlis" / "linking-signer.json").read_text())
    with pytest.raises(TypeError, match="encrypted"):  # unreadable without the passphrase
        serialization.load_pem_private_key(stored["key"].encode(), password=None)
    restored = JLis.restore(
        base_url=jlis.base_url, certificates={ca.name: ca.certificate for ca in jlis.authorities},
        wrapped_keys=jlis.wrap_keys(PASSPHRASE), passphrase=PASSPHRASE, registry_dir=tmp_path / "jlis", now=NOW,
    )
    assert restored.linking_signer.certificate == jlis.linking_signer.certificate
