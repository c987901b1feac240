"""``LinkingStore``: verified links are stored all or nothing, and each attaches a new certificate to
the person who holds the certificate it is linked to; a link between two persons is refused."""

from __future__ import annotations

import pytest
from linking_world import HANAKO, NOW, issue_taro, page_of
from sqlalchemy import func, select

from idp.ceremonies.linking import LinkingRefused, LinkingStore, Reason, sync_linking, verify_page
from idp.ceremonies.linking_records import JlisLink
from idp.ceremonies.records import LinkSource, PersonCardCertificate, PersonRecord
from idp.pki.registry import CertificateRef
from idp.store.database import make_engine, make_session_factory, upgrade


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'idp.db'}")
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(sessions):
    return LinkingStore(sessions)


def enrolled(sessions, person_id, certificates):
    """What an enrollment records: the person and the card certificates it presented."""
    with sessions.begin() as session:
        session.add(PersonRecord(id=person_id, created_at=NOW))
        session.flush()
        for kind, certificate in (("auth", certificates.auth), ("sign", certificates.sign)):
            ref = CertificateRef.of(certificate)
            session.add(PersonCardCertificate(
                issuer_key_id=ref.issuer_key_id, serial=str(ref.serial_number), person_id=person_id, kind=kind,
                not_after=certificate.not_valid_after_utc, linked_by=LinkSource.ENROLLMENT.value, linked_at=NOW,
            ))


def person_of(sessions, certificate):
    ref = CertificateRef.of(certificate)
    with sessions.begin() as session:
        row = session.get(PersonCardCertificate, (ref.issuer_key_id, str(ref.serial_number)))
        return None if row is None else (row.person_id, row.linked_by)


def apply(jlis, store, *, since=None):
    cursor = store.cursor() if since is None else since
    page = verify_page(page=page_of(jlis, since=cursor), roots=(jlis.root.certificate,), crls=(), cursor=cursor,
                       now=NOW)
    return store.apply(page, now=NOW)


def stored_links(sessions) -> int:
    with sessions.begin() as session:
        return session.scalar(select(func.count()).select_from(JlisLink))


def test_a_renewed_card_belongs_to_the_person_who_enrolled_with_the_old_one(jlis, card, sessions, store):
    enrolled(sessions, "taro", card.certificates)
    apply(jlis, store)  # the issuance's own link
    renewed = jlis.renew_card(card, now=NOW)
    assert apply(jlis, store) == 2
    assert person_of(sessions, renewed.auth) == ("taro", "jlis_linking")
    assert person_of(sessions, renewed.sign) == ("taro", "jlis_linking")
    assert store.cursor() == 4


def test_a_moved_signature_certificate_belongs_to_the_same_person(jlis, card, sessions, store):
    enrolled(sessions, "taro", card.certificates)
    moved = jlis.move_card(card, address="大阪府大阪市北区梅田1-1", prefecture="大阪府", city="大阪市", now=NOW)
    assert apply(jlis, store) == 1
    assert person_of(sessions, moved.sign) == ("taro", "jlis_linking")


def test_a_reissued_card_belongs_to_the_same_person(jlis, card, sessions, store):
    enrolled(sessions, "taro", card.certificates)
    reissued = jlis.reissue_card(card.certificates, auth_pin="5678", sign_pin="NEW123", now=NOW)
    assert apply(jlis, store) == 2
    assert person_of(sessions, reissued.certificates.auth)[0] == "taro"


def test_links_of_a_card_nobody_enrolled_are_kept_but_attach_nobody(jlis, card, sessions, store):
    renewed = jlis.renew_card(card, now=NOW)
    assert apply(jlis, store) == 0
    assert stored_links(sessions) == 4
    assert person_of(sessions, renewed.auth) is None


def test_a_successor_link_to_another_persons_certificate_is_refused_and_nothing_is_stored(
    jlis, card, sessions, store,
):
    """J-LIS says taro's new card succeeds his old one, but the portal already holds it as hanako's."""
    enrolled(sessions, "taro", card.certificates)
    apply(jlis, store)
    old = card.certificates
    renewed = jlis.renew_card(card, now=NOW)
    enrolled(sessions, "hanako", renewed)
    with pytest.raises(LinkingRefused) as refused:
        apply(jlis, store)
    assert refused.value.reason is Reason.OTHER_PERSON
    assert str(refused.value) == "link 3: a successor link points to another person's certificate"
    assert (store.cursor(), stored_links(sessions)) == (1, 1)
    assert person_of(sessions, old.auth) == ("taro", "enrollment")


def test_a_same_person_link_across_two_persons_is_refused(jlis, sessions, store):
    taro, hanako = issue_taro(jlis), issue_taro(jlis, HANAKO)
    enrolled(sessions, "taro", taro.certificates)
    enrolled(sessions, "hanako", hanako.certificates)
    entries, _ = jlis.linking.since(0)
    entries[0]["sign"] = entries[1]["sign"]  # taro's auth with hanako's sign, as if J-LIS said so
    page = verify_page(page=page_of(jlis, entries=entries[:1]), roots=(jlis.root.certificate,), crls=(), cursor=0,
                       now=NOW)
    with pytest.raises(LinkingRefused) as refused:
        store.apply(page, now=NOW)
    assert refused.value.reason is Reason.OTHER_PERSON
    assert store.cursor() == 0


def test_a_page_verified_before_another_sync_stored_it_is_refused_as_a_replay(jlis, card, store):
    page = verify_page(page=page_of(jlis), roots=(jlis.root.certificate,), crls=(), cursor=0, now=NOW)
    store.apply(page, now=NOW)
    with pytest.raises(LinkingRefused) as refused:
        store.apply(page, now=NOW)
    assert refused.value.reason is Reason.REPLAYED


class InProcessFeed:
    """The J-LIS feed without HTTP, two links a page (the HTTP path is tested in tests/functional)."""

    def __init__(self, jlis):
        self.jlis = jlis
        self.asked: list[int] = []

    def fetch_page(self, url, *, since):
        assert url == "http://jlis.test/linking"
        self.asked.append(since)
        return self.jlis.linking_page(since=since, limit=2, now=NOW)


def test_a_sync_reads_page_after_page_from_its_cursor(jlis, card, sessions, store):
    enrolled(sessions, "taro", card.certificates)
    jlis.renew_card(card, now=NOW)
    feed = InProcessFeed(jlis)
    result = sync_linking(url="http://jlis.test/linking", fetcher=feed, store=store, roots=(jlis.root.certificate,),
                          crls=(), now=NOW)
    assert (result.pages, result.links, result.attached, result.cursor) == (2, 4, 2, 4)
    assert feed.asked == [0, 2]
    again = sync_linking(url="http://jlis.test/linking", fetcher=feed, store=store, roots=(jlis.root.certificate,),
                         crls=(), now=NOW)
    assert (again.pages, again.links, again.cursor) == (1, 0, 4)


def test_an_operator_sees_the_certificates_and_links_of_a_person(jlis, card, sessions, store):
    enrolled(sessions, "taro", card.certificates)
    jlis.renew_card(card, now=NOW)
    apply(jlis, store)
    person = store.person("taro")
    assert [(row.kind, row.linked_by) for row in person.certificates] == [
        ("auth", "enrollment"), ("sign", "enrollment"), ("auth", "jlis_linking"), ("sign", "jlis_linking"),
    ]
    assert [link.seq for link in person.links] == [1, 2, 3, 4]
    assert store.person("nobody") is None
