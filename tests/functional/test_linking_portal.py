"""A person, not a certificate: after a renewal, a move or a lost card's reissue (made with the
``smartphone`` CLI), the portal reads the J-LIS linking data over HTTP and an enrollment with the
new card lands on the person who enrolled with the old one. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta

import pytest
import requests
from click.testing import CliRunner
from enrollment_portal import AUTH_PIN, PASSPHRASE, SIGN_PIN, running_portal, sync_revocations
from sqlalchemy import select

from idp.app import services
from idp.ceremonies.enrollment_service import load_certificates
from idp.ceremonies.linking import HttpLinkingFetcher, LinkingRefused, LinkingStore, Reason, sync_linking
from idp.ceremonies.records import DeviceRecord, PersonCardCertificate
from idp.ceremonies.revocation_cache import HttpRevocationFetcher, JlisRevocationCache
from smartphone.cli import main as smartphone_main
from smartphone.portal_client import PortalClient, enroll

LIFE_EVENTS = {
    "renew": ["card", "renew"],
    "move": ["card", "move", "--address", "大阪府大阪市北区梅田1-1", "--prefecture", "大阪府", "--city", "大阪市"],
    "reissue": ["card", "reissue", "--auth-pin", AUTH_PIN, "--sign-pin", SIGN_PIN],
}


@pytest.fixture
def portal(world, tmp_path, stores):
    with running_portal(world, tmp_path / "instance", **stores) as portal:
        yield portal


@pytest.fixture
def following_portal(world, tmp_path, stores):
    """A portal configured with the J-LIS linking feed (pki.jlis_linking_url)."""
    configured = world.pki_settings
    world.pki_settings = lambda: dataclasses.replace(configured(), jlis_linking_url=f"{world.jlis_url}/linking")
    with running_portal(world, tmp_path / "instance", **stores) as portal:
        yield portal


def enroll_phone(world, portal, phone):
    element, holder = world.state.load_phone(phone), world.state.load_card("taro")
    enrolled = enroll(client=PortalClient(portal.url), element=element, card=holder, auth_pin=AUTH_PIN,
                      sign_pin=SIGN_PIN)
    world.state.save_phone(phone, element)
    return enrolled


def person_of(portal, device_id) -> str:
    with services(portal.app).sessions.begin() as session:
        return session.get(DeviceRecord, device_id).person_id


def life_event(world, event: str) -> None:
    result = CliRunner().invoke(smartphone_main, [*LIFE_EVENTS[event], "--state", str(world.state.root),
                                                  "--card", "taro"], env={"SMARTPHONE_PASSPHRASE": PASSPHRASE.decode()})
    assert result.exit_code == 0, result.output


def sync_linking_data(world, portal):
    """What ``idp pki sync`` does after the CRLs: read the feed over HTTP into the portal's database."""
    sessions = services(portal.app).sessions
    settings = portal.settings
    cache = JlisRevocationCache(sessions, authorities=(), fetcher=HttpRevocationFetcher(timeout=timedelta(seconds=5)))
    return sync_linking(
        url=f"{world.jlis_url}/linking", fetcher=HttpLinkingFetcher(timeout=timedelta(seconds=5)),
        store=LinkingStore(sessions), roots=load_certificates(settings.pki.jlis_roots), crls=cache.crls(),
        now=datetime.now(UTC),
    )


@pytest.mark.parametrize("event", list(LIFE_EVENTS))
def test_enrolling_with_a_changed_card_lands_on_the_existing_person(world, portal, event):
    first = enroll_phone(world, portal, "pixel")
    person = person_of(portal, first.device_id)
    life_event(world, event)
    sync_revocations(portal.settings)
    result = sync_linking_data(world, portal)
    assert result.attached >= 1
    world.add_phone("pixel-2")
    second = enroll_phone(world, portal, "pixel-2")
    assert person_of(portal, second.device_id) == person
    with services(portal.app).sessions.begin() as session:
        rows = session.scalars(select(PersonCardCertificate).where(PersonCardCertificate.person_id == person)).all()
        assert {row.linked_by for row in rows} == {"enrollment", "jlis_linking"}


def test_without_the_linking_data_a_renewed_card_is_a_new_person(world, portal):
    """The control: what linking data changes. Nothing in a renewed certificate names its holder."""
    first = enroll_phone(world, portal, "pixel")
    life_event(world, "renew")
    world.add_phone("pixel-2")
    second = enroll_phone(world, portal, "pixel-2")
    assert person_of(portal, second.device_id) != person_of(portal, first.device_id)


def test_the_feed_replayed_by_an_attacker_is_refused(world, portal):
    """A relay answers with the first page J-LIS served, whatever cursor the portal asks from."""
    life_event(world, "renew")
    first_page = requests.get(f"{world.jlis_url}/linking", params={"since": 0}, timeout=5).text
    sync_linking_data(world, portal)

    class Replaying:
        def fetch_page(self, url, *, since):  # noqa: ARG002 - the relay ignores what it is asked
            return first_page

    sessions = services(portal.app).sessions
    with pytest.raises(LinkingRefused) as refused:
        sync_linking(url=f"{world.jlis_url}/linking", fetcher=Replaying(), store=LinkingStore(sessions),
                     roots=load_certificates(portal.settings.pki.jlis_roots), crls=(), now=datetime.now(UTC))
    assert refused.value.reason is Reason.REPLAYED
    assert LinkingStore(sessions).cursor() == 4


def test_an_unreachable_feed_is_a_fetch_failure(world, portal):
    sessions = services(portal.app).sessions
    with pytest.raises(LinkingRefused) as refused:
        sync_linking(url=f"{world.jlis_url}/nothing-here", fetcher=HttpLinkingFetcher(timeout=timedelta(seconds=5)),
                     store=LinkingStore(sessions), roots=(), crls=(), now=datetime.now(UTC))
    assert refused.value.reason is Reason.FETCH_FAILED
    assert str(refused.value) == f"{world.jlis_url}/nothing-here answered HTTP 404"


@pytest.mark.parametrize(("query", "detail"), [
    ({"since": "-1"}, "since must be a whole number"),
    ({"since": "x"}, "since must be a whole number"),
    ({"limit": "0"}, "limit must be 1 to 1000"),
    ({"limit": "1001"}, "limit must be at most 1000"),
])
def test_the_jlis_feed_refuses_a_bad_cursor_with_a_problem(world, query, detail):
    response = requests.get(f"{world.jlis_url}/linking", params=query, timeout=5)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == detail


def test_the_jlis_feed_is_a_signed_page(world):
    response = requests.get(f"{world.jlis_url}/linking", params={"since": 0, "limit": 5}, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/jose"
    assert response.text.count(".") == 2


def test_an_enrollment_reads_the_links_a_sync_has_not_read_yet(world, following_portal):
    """The card was renewed a minute ago; no ``idp pki sync`` ran since: the enrollment reads the feed itself."""
    first = enroll_phone(world, following_portal, "pixel")
    life_event(world, "renew")
    world.add_phone("pixel-2")
    second = enroll_phone(world, following_portal, "pixel-2")
    assert person_of(following_portal, second.device_id) == person_of(following_portal, first.device_id)
    assert LinkingStore(services(following_portal.app).sessions).cursor() == 4


def test_an_unreadable_feed_at_enrollment_is_logged_and_the_enrollment_goes_on(world, tmp_path, caplog):
    configured = world.pki_settings
    world.pki_settings = lambda: dataclasses.replace(configured(), jlis_linking_url=f"{world.jlis_url}/gone")
    with running_portal(world, tmp_path / "instance") as portal, caplog.at_level(logging.WARNING):
        enroll_phone(world, portal, "pixel")
    assert "enrollment.linking_unavailable reason=fetch_failed" in caplog.text
