"""Enrollment over real HTTP: the simulated phone and card against the portal and J-LIS, on SQLite
with the in-process store and on PostgreSQL with Redis."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from enrollment_portal import AUTH_PIN, SIGN_PIN, running_portal
from openapi_spec_validator import validate
from sqlalchemy import func, select

from idp.app import services
from idp.ceremonies.records import DeviceRecord, PersonCardCertificate, PersonRecord
from idp.clock import FixedClock
from idp.pki import attributes as basic_attributes
from idp.pki.registry import CertificateState
from smartphone.portal_client import PortalClient, PortalError, enroll
from smartphone.webauthn_data import b64url

PROBLEMS = "https://id.myna.example/problems/"


@pytest.fixture
def portal(world, tmp_path, stores):
    with running_portal(world, tmp_path / "instance", **stores) as portal:
        yield portal


def enroll_phone(world, portal, *, phone="pixel", card="taro"):
    element, holder = world.state.load_phone(phone), world.state.load_card(card)
    enrolled = enroll(client=PortalClient(portal.url), element=element, card=holder, auth_pin=AUTH_PIN,
                      sign_pin=SIGN_PIN)
    world.state.save_phone(phone, element)
    return enrolled


def counts(portal) -> tuple[int, int]:
    with services(portal.app).sessions.begin() as session:
        persons = session.scalar(select(func.count()).select_from(PersonRecord))
        devices = session.scalar(select(func.count()).select_from(DeviceRecord))
    return persons, devices


def assert_problem(response: requests.Response, status: int, kind: str) -> dict:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == PROBLEMS + kind
    assert body["status"] == status
    return body


def completion_body(world, portal) -> tuple[str, dict]:
    """A valid completion, made as the phone makes it, not yet sent."""
    sent: dict = {}

    class Recording(PortalClient):
        def complete_enrollment(self, enrollment_id, body):
            sent.update(id=enrollment_id, body=body)
            raise PortalError(0, "about:blank", "not sent")

    with pytest.raises(PortalError):
        enroll(client=Recording(portal.url), element=world.state.load_phone("pixel"),
               card=world.state.load_card("taro"), auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    return sent["id"], sent["body"]


def test_phone_enrolls_and_receives_certificates_chaining_to_the_portal(world, portal):
    enrollment = enroll_phone(world, portal)
    pki = services(portal.app).pki
    assert enrollment.chain == (pki.authority.certificate,)
    for certificate in (enrollment.auth_certificate, enrollment.sign_certificate):
        certificate.verify_directly_issued_by(pki.authority.certificate)
        assert pki.status(certificate.serial_number).state is CertificateState.GOOD
    assert basic_attributes.decode(enrollment.sign_certificate).name == "山田　太郎"
    phone = world.state.load_phone("pixel")
    assert isinstance(enrollment.auth_certificate.public_key(), ec.EllipticCurvePublicKey)
    assert enrollment.auth_certificate.public_key() == phone.public_key(enrollment.auth_credential_id)
    assert enrollment.sign_certificate.public_key() == phone.public_key(enrollment.sign_credential_id)
    card = world.state.card_certificates("taro")
    sources = {ref.serial_number for ref in pki.status(enrollment.sign_certificate.serial_number).issued_from}
    assert sources == {card.auth.serial_number, card.sign.serial_number}
    with services(portal.app).sessions.begin() as session:
        device = session.get(DeviceRecord, enrollment.device_id)
        assert device is not None
        assert device.status == "active"
        assert device.auth_credential_id == enrollment.auth_credential_id
        assert device.sign_certificate_serial == str(enrollment.sign_certificate.serial_number)
        links = session.scalars(select(PersonCardCertificate)).all()
        assert {(link.kind, link.person_id) for link in links} == {
            ("auth", device.person_id), ("sign", device.person_id),
        }


def test_second_phone_with_the_same_card_is_the_same_person(world, portal):
    first = enroll_phone(world, portal)
    world.add_phone("tablet")
    second = enroll_phone(world, portal, phone="tablet")
    with services(portal.app).sessions.begin() as session:
        persons = {session.get(DeviceRecord, device).person_id for device in (first.device_id, second.device_id)}
    assert len(persons) == 1
    assert counts(portal) == (1, 2)


def test_replayed_completion_is_refused_with_409(world, portal):
    enrollment_id, body = completion_body(world, portal)
    url = f"{portal.url}/device/v1/enrollments/{enrollment_id}"
    assert requests.post(url, json=body, timeout=10).status_code == 201
    assert_problem(requests.post(url, json=body, timeout=10), 409, "enrollment-already-used")
    assert counts(portal) == (1, 1)


def test_refused_completion_is_not_retried(world, portal):
    enrollment_id, body = completion_body(world, portal)
    body["card"]["auth_signature"] = b64url(b"\x00" * 256)
    url = f"{portal.url}/device/v1/enrollments/{enrollment_id}"
    assert_problem(requests.post(url, json=body, timeout=10), 403, "card-signature-rejected")
    assert_problem(requests.post(url, json=body, timeout=10), 409, "enrollment-already-used")


def test_revoked_card_is_refused_with_a_public_type_and_a_logged_reason(world, portal, caplog):
    world.state.load_jlis().revoke_card(
        world.state.card_certificates("taro"), reason=x509.ReasonFlags.key_compromise, now=datetime.now(UTC),
    )
    with caplog.at_level(logging.WARNING, logger="idp.ceremonies.device_api"), pytest.raises(PortalError) as refused:
        enroll_phone(world, portal)
    assert refused.value.status == 403
    assert refused.value.type == PROBLEMS + "card-certificate-rejected"
    assert refused.value.detail is None
    assert "enrollment.rejected reason=card_certificate_revoked subject='card auth certificate'" in caplog.text
    assert counts(portal) == (0, 0)


def test_malformed_completions_get_400_problems_and_keep_the_enrollment(world, portal):
    enrollment_id, body = completion_body(world, portal)
    url = f"{portal.url}/device/v1/enrollments/{enrollment_id}"
    bad_json = requests.post(url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
    assert_problem(bad_json, 400, "invalid-device-request")
    no_card = {key: value for key, value in body.items() if key != "card"}
    assert assert_problem(requests.post(url, json=no_card, timeout=10), 400, "invalid-device-request")["detail"] == (
        "card must be a JSON object"
    )
    broken = json.loads(json.dumps(body))
    broken["auth_credential"]["response"]["attestationObject"] = "!!"
    assert_problem(requests.post(url, json=broken, timeout=10), 400, "invalid-device-request")
    bad_certificate = json.loads(json.dumps(body))
    bad_certificate["card"]["sign_certificate"] = "AAAA"
    detail = assert_problem(requests.post(url, json=bad_certificate, timeout=10), 400, "invalid-device-request")
    assert detail["detail"] == "card.sign_certificate must be a DER certificate in base64"
    as_text = requests.post(url, data=json.dumps(body), headers={"Content-Type": "text/plain"}, timeout=10)
    assert_problem(as_text, 415, "unsupported-media-type")
    assert requests.post(url, json=body, timeout=10).status_code == 201


def test_unknown_enrollment_is_404(world, portal):
    _, body = completion_body(world, portal)
    response = requests.post(f"{portal.url}/device/v1/enrollments/{'A' * 22}", json=body, timeout=10)
    assert_problem(response, 404, "unknown-enrollment")
    assert_problem(requests.get(f"{portal.url}/device/v1/nothing", timeout=10), 404, "not-found")
    assert_problem(requests.get(f"{portal.url}/device/v1/enrollments", timeout=10), 405, "method-not-allowed")


def test_start_returns_options_challenge_and_location(portal):
    response = requests.post(f"{portal.url}/device/v1/enrollments", timeout=10)
    assert response.status_code == 201
    body = response.json()
    assert response.headers["Location"] == f"/device/v1/enrollments/{body['enrollment_id']}"
    assert body["auth_options"]["rp"] == {"id": "127.0.0.1", "name": "Myna Gateway"}
    assert body["auth_options"]["challenge"] != body["sign_options"]["challenge"]
    assert len(body["card_challenge"]) == 43
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC)


def test_openapi_document_is_served_and_valid(portal):
    response = requests.get(f"{portal.url}/device/v1/openapi.json", timeout=10)
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert {"/enrollments", "/enrollments/{enrollment_id}"} <= set(document["paths"])


def test_expired_enrollment_is_410(world, tmp_path):
    clock = FixedClock(datetime.now(UTC))
    with running_portal(world, tmp_path / "expiring", clock=clock) as portal:
        enrollment_id, body = completion_body(world, portal)
        clock.advance(timedelta(minutes=5, seconds=1))
        response = requests.post(f"{portal.url}/device/v1/enrollments/{enrollment_id}", json=body, timeout=10)
        assert_problem(response, 410, "enrollment-expired")


@pytest.mark.redis
def test_expired_enrollment_is_410_on_redis(world, tmp_path, redis_url, redis_prefix):
    with running_portal(world, tmp_path / "redis", redis_url=redis_url, enrollment_ttl=timedelta(seconds=1)) as portal:
        enrollment_id, body = completion_body(world, portal)
        import time  # noqa: PLC0415 - only this test waits for Redis to expire a key

        time.sleep(1.2)
        response = requests.post(f"{portal.url}/device/v1/enrollments/{enrollment_id}", json=body, timeout=10)
        assert_problem(response, 410, "enrollment-expired")


def test_unreachable_ephemeral_store_is_503(world, tmp_path):
    with running_portal(world, tmp_path / "no-redis", redis_url="redis://127.0.0.1:1/0") as portal:
        response = requests.post(f"{portal.url}/device/v1/enrollments", timeout=10)
        assert_problem(response, 503, "service-unavailable")
        assert response.headers["Retry-After"] == "5"
