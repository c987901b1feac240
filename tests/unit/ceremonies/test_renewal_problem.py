"""When an approval is refused for the signature certificate alone, the phone is told to renew its
signature key (``signature-key-renewal-required``), with why; never when the phone itself is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from idp.ceremonies.approval import SignatureKeyRenewalRequired, _signature_key_renewal
from idp.ceremonies.device_transactions import _problem_for
from idp.ceremonies.login import DeviceCredential
from idp.pki.registry import CertificateState, CertificateStatus

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def status(*, state: CertificateState = CertificateState.GOOD, reason: x509.ReasonFlags | None = None,
           not_after: datetime = NOW + timedelta(days=365)) -> CertificateStatus:
    return CertificateStatus(serial_number=1, profile="smartphone", not_after=not_after, state=state, reason=reason,
                             revoked_at=None if state is CertificateState.GOOD else NOW - timedelta(hours=1))


def device(*, auth: CertificateStatus | None = None, sign: CertificateStatus | None = None) -> DeviceCredential:
    return DeviceCredential(device_id="d1", person_id="p1", credential_id=b"c", public_key=b"k", sign_count=1,
                            auth_certificate=auth or status(), sign_certificate=None,
                            sign_certificate_status=sign or status())


def test_a_moved_persons_signature_certificate_asks_for_renewal_with_its_reason():
    renewal = _signature_key_renewal(device(sign=status(state=CertificateState.REVOKED,
                                                        reason=x509.ReasonFlags.affiliation_changed)), NOW)
    assert (renewal.status, renewal.reason) == ("revoked", "affiliationChanged")


def test_an_expired_signature_certificate_asks_for_renewal():
    renewal = _signature_key_renewal(device(sign=status(not_after=NOW)), NOW)
    assert (renewal.status, renewal.reason) == ("expired", None)


def test_a_good_signature_certificate_asks_for_nothing():
    assert _signature_key_renewal(device(), NOW) is None


@pytest.mark.parametrize("auth", [
    status(state=CertificateState.REVOKED, reason=x509.ReasonFlags.key_compromise),
    status(state=CertificateState.ON_HOLD, reason=x509.ReasonFlags.certificate_hold),
    status(not_after=NOW - timedelta(seconds=1)),
], ids=["auth-revoked", "auth-on-hold", "auth-expired"])
def test_a_phone_whose_authentication_certificate_is_not_good_is_not_told_about_its_signature_certificate(auth):
    sign = status(state=CertificateState.REVOKED, reason=x509.ReasonFlags.affiliation_changed)
    assert _signature_key_renewal(device(auth=auth, sign=sign), NOW) is None


def test_the_problem_says_why_in_an_extension_member():
    problem = _problem_for(SignatureKeyRenewalRequired(status="revoked", reason="affiliationChanged"))
    assert problem.to_dict() == {
        "type": "https://id.myna.example/problems/signature-key-renewal-required",
        "title": "The signature certificate is no longer valid; enroll a new signature key with the card",
        "status": 403,
        "signature_certificate": {"status": "revoked", "reason": "affiliationChanged"},
    }
