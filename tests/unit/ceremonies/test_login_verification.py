"""verify_login: one valid approval made by the simulated SE, then one change per attack."""

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from webauthn import verify_registration_response
from webauthn.helpers.structs import AttestationFormat

from idp.ceremonies.login import DeviceCredential, LoginRejected, Reason, consent_digest, verify_login
from idp.ceremonies.transactions import AuthorizationRequest, TransactionStore
from idp.pki.profiles import (
    PORTAL_ROOT,
    SMARTPHONE_SIGN,
    Issuer,
    KeyAlgorithm,
    build_certificate,
    generate_key,
)
from idp.pki.registry import CertificateState, CertificateStatus
from idp.store.ephemeral import MemoryEphemeralStore
from smartphone.secure_element import SecureElement
from smartphone.vendor import Vendor

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
RP_ID = "id.myna.example"
ORIGIN = "https://id.myna.example"
ATTRIBUTES = ("address", "name")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def vendor() -> Vendor:
    return Vendor.create(name="Myna Devices", model="MynaSE-1", now=NOW)


class Phone:
    """An enrolled SE: its two credentials, and what the portal stored of them."""

    def __init__(self, element: SecureElement, vendor: Vendor) -> None:
        self.element = element
        registration = element.make_credential(rp_id=RP_ID, challenge=b"c" * 32, origin=ORIGIN, purpose="auth")
        verified = verify_registration_response(
            credential=registration, expected_challenge=b"c" * 32, expected_rp_id=RP_ID, expected_origin=ORIGIN,
            require_user_verification=True,
            pem_root_certs_bytes_by_fmt={AttestationFormat.PACKED: [vendor.root_pem]},
        )
        self.auth_id = verified.credential_id
        sign = element.make_credential(rp_id=RP_ID, challenge=b"d" * 32, origin=ORIGIN, purpose="sign")
        self.sign_id = _unb64(sign["rawId"])
        root_key = generate_key(KeyAlgorithm.EC_P256)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
        root = build_certificate(profile=PORTAL_ROOT, subject=name, public_key=root_key.public_key(), issuer=None,
                                 signing_key=root_key, not_before=NOW, not_after=NOW + timedelta(days=3650))
        sign_certificate = build_certificate(
            profile=SMARTPHONE_SIGN, subject=name, public_key=element.public_key(self.sign_id),
            issuer=Issuer(root, root_key), not_before=NOW, not_after=NOW + timedelta(days=365),
            alternative_names=[x509.DNSName("placeholder.example")], crl_url="http://x/crl", ocsp_url="http://x/ocsp",
        )
        self.device = DeviceCredential(
            device_id="device-1",
            person_id="person-1",
            credential_id=self.auth_id,
            public_key=verified.credential_public_key,
            sign_count=0,
            auth_certificate=CertificateStatus(serial_number=1, profile="smartphone-auth",
                                               not_after=NOW + timedelta(days=365)),
            sign_certificate=sign_certificate,
            sign_certificate_status=CertificateStatus(serial_number=sign_certificate.serial_number,
                                                      profile="smartphone-sign", not_after=NOW + timedelta(days=365)),
        )

    def approve(self, transaction, **overrides):
        options = {"credential_id": self.auth_id, "rp_id": RP_ID, "challenge": transaction.challenge,
                   "origin": ORIGIN, **overrides}
        return self.element.get_assertion(**options)

    def consent(self, transaction, attributes=ATTRIBUTES):
        return self.element.sign_digest(credential_id=self.sign_id,
                                        digest=consent_digest(transaction=transaction, attributes=attributes))


@pytest.fixture
def phone(vendor) -> Phone:
    return Phone(vendor.provision(), vendor)


def _transaction(requested=()):
    store = TransactionStore(MemoryEphemeralStore(), ttl=timedelta(minutes=5))
    request = AuthorizationRequest(client_id="shop", redirect_uri="https://shop.example/cb", scope=("openid",),
                                   state="s", nonce="n", code_challenge="x" * 43, requested_attributes=requested)
    return store.open(request=request, rp_name="Shop", browser_secret="b", now=NOW)


@pytest.fixture
def login():
    return _transaction()


@pytest.fixture
def consent_login():
    return _transaction(ATTRIBUTES)


def _verify(transaction, assertion, device, consent_signature=None, now=NOW):
    return verify_login(transaction=transaction, assertion=assertion, device=device,
                        consent_signature=consent_signature, rp_id=RP_ID, origin=ORIGIN, now=now)


def _rejected(*args, **kwargs) -> Reason:
    with pytest.raises(LoginRejected) as rejected:
        _verify(*args, **kwargs)
    return rejected.value.reason


def _edit_client_data(assertion, **changes):
    client_data = json.loads(_unb64(assertion["response"]["clientDataJSON"]))
    client_data.update(changes)
    edited = json.loads(json.dumps(assertion))
    edited["response"]["clientDataJSON"] = _b64(json.dumps(client_data).encode())
    return edited


def _edit_authenticator_data(assertion, offset, value):
    data = bytearray(_unb64(assertion["response"]["authenticatorData"]))
    data[offset] = value
    edited = json.loads(json.dumps(assertion))
    edited["response"]["authenticatorData"] = _b64(bytes(data))
    return edited


def test_valid_assertion_logs_the_person_in(phone, login):
    verified = _verify(login, phone.approve(login), phone.device)
    assert (verified.person_id, verified.device_id, verified.new_sign_count) == ("person-1", "device-1", 1)
    assert verified.consented_attributes == ()
    assert verified.signature_certificate_serial is None


def test_valid_consent_releases_exactly_the_requested_attributes(phone, consent_login):
    verified = _verify(consent_login, phone.approve(consent_login), phone.device, phone.consent(consent_login))
    assert verified.consented_attributes == ATTRIBUTES
    assert verified.signature_certificate_serial == phone.device.sign_certificate.serial_number


def test_assertion_signed_for_another_transaction_is_rejected(phone, login):
    other = _transaction()
    assert _rejected(login, phone.approve(other), phone.device) is Reason.CHALLENGE_MISMATCH


def test_registration_response_offered_as_assertion_is_rejected(phone, login):
    assertion = _edit_client_data(phone.approve(login), type="webauthn.create")
    assert _rejected(login, assertion, phone.device) is Reason.WRONG_TYPE


def test_assertion_from_another_origin_is_rejected(phone, login):
    assertion = phone.approve(login, origin="https://phish.example")
    assert _rejected(login, assertion, phone.device) is Reason.ORIGIN_MISMATCH


def test_assertion_for_another_rp_id_is_rejected(phone, login):
    assertion = _edit_authenticator_data(phone.approve(login), 0, 0)
    assert _rejected(login, assertion, phone.device) is Reason.RP_ID_MISMATCH


def test_assertion_without_user_presence_is_rejected(phone, login):
    assertion = phone.approve(login)
    flags = _unb64(assertion["response"]["authenticatorData"])[32]
    assert _rejected(login, _edit_authenticator_data(assertion, 32, flags & ~0x01), phone.device) \
        is Reason.USER_NOT_PRESENT


def test_assertion_without_user_verification_is_rejected(phone, login):
    assertion = phone.approve(login, presence_only=True)
    assert _rejected(login, assertion, phone.device) is Reason.USER_NOT_VERIFIED


def test_counter_that_went_backwards_is_rejected(phone, login):
    device = replace(phone.device, sign_count=5)
    phone.element.restore_counter(phone.auth_id, 3)
    assert _rejected(login, phone.approve(login), device) is Reason.SIGN_COUNT_NOT_INCREASED


def test_assertion_with_a_forged_signature_is_rejected(phone, login):
    assertion = phone.approve(login)
    signature = bytearray(_unb64(assertion["response"]["signature"]))
    signature[-1] ^= 0x01
    assertion["response"]["signature"] = _b64(bytes(signature))
    assert _rejected(login, assertion, phone.device) is Reason.BAD_SIGNATURE


def test_assertion_by_another_phone_is_rejected(phone, login, vendor):
    other = Phone(vendor.provision(), vendor)
    assert _rejected(login, other.approve(login), phone.device) is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "assertion",
    [{}, {"response": {}}, {"response": {"clientDataJSON": "!!", "authenticatorData": "AA"}}],
    ids=["empty", "no-fields", "garbage"],
)
def test_malformed_assertion_is_rejected(phone, login, assertion):
    assert _rejected(login, assertion, phone.device) is Reason.MALFORMED


@pytest.mark.parametrize("state", [CertificateState.REVOKED, CertificateState.ON_HOLD])
def test_revoked_or_held_smartphone_certificate_is_rejected(phone, login, state):
    device = replace(phone.device, auth_certificate=replace(phone.device.auth_certificate, state=state))
    assert _rejected(login, phone.approve(login), device) is Reason.CERTIFICATE_REVOKED


def test_expired_smartphone_certificate_is_rejected(phone, login):
    later = NOW + timedelta(days=366)
    assert _rejected(login, phone.approve(login), phone.device, now=later) is Reason.CERTIFICATE_EXPIRED


def test_attributes_without_consent_signature_are_rejected(phone, consent_login):
    assert _rejected(consent_login, phone.approve(consent_login), phone.device) is Reason.CONSENT_SIGNATURE_MISSING


def test_consent_to_a_shorter_attribute_list_is_rejected(phone, consent_login):
    signature = phone.consent(consent_login, attributes=("name",))
    assert _rejected(consent_login, phone.approve(consent_login), phone.device, signature) \
        is Reason.CONSENT_SIGNATURE_INVALID


def test_consent_signed_for_another_transaction_is_rejected(phone, consent_login):
    signature = phone.consent(_transaction(ATTRIBUTES))
    assert _rejected(consent_login, phone.approve(consent_login), phone.device, signature) \
        is Reason.CONSENT_SIGNATURE_INVALID


def test_consent_with_a_revoked_signature_certificate_is_rejected(phone, consent_login):
    status = replace(phone.device.sign_certificate_status, state=CertificateState.REVOKED)
    device = replace(phone.device, sign_certificate_status=status)
    signature = phone.consent(consent_login)
    assert _rejected(consent_login, phone.approve(consent_login), device, signature) is Reason.CERTIFICATE_REVOKED


def test_consent_without_an_enrolled_signature_key_is_rejected(phone, consent_login):
    device = replace(phone.device, sign_certificate=None, sign_certificate_status=None)
    signature = phone.consent(consent_login)
    assert _rejected(consent_login, phone.approve(consent_login), device, signature) \
        is Reason.CONSENT_SIGNATURE_MISSING
