"""The simulated SE: packed attestation, assertions, counters, user verification, key purposes.

py_webauthn is the judge: what it accepts and rejects here is what the portal will see.
"""

import hashlib
import secrets

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID
from webauthn import verify_authentication_response, verify_registration_response
from webauthn.helpers import base64url_to_bytes, parse_attestation_object
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import AttestationFormat, CredentialDeviceType

from idp.pki import oids
from smartphone.keys import InvalidDigest, WrongPassphrase
from smartphone.secure_element import (
    KeyPurpose,
    SecureElement,
    UnknownCredential,
    UserVerification,
    UserVerificationFailed,
    WrongKeyPurpose,
)

RP_ID = "id.myna.example"
ORIGIN = "https://id.myna.example"
PASSPHRASE = b"correct horse battery staple"
DIGEST = hashlib.sha256(b"signed attributes").digest()


def _register(element: SecureElement, purpose: str = "auth", **kwargs) -> tuple[dict, bytes]:
    challenge = secrets.token_bytes(32)
    response = element.make_credential(rp_id=RP_ID, challenge=challenge, origin=ORIGIN, purpose=purpose, **kwargs)
    return response, challenge


def _verify_registration(response: dict, challenge: bytes, root_pem: bytes, *, require_uv: bool = True):
    return verify_registration_response(
        credential=response,
        expected_challenge=challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        require_user_verification=require_uv,
        pem_root_certs_bytes_by_fmt={AttestationFormat.PACKED: [root_pem]},
    )


def _assert(element: SecureElement, credential_id: bytes, **kwargs) -> tuple[dict, bytes]:
    challenge = secrets.token_bytes(32)
    response = element.get_assertion(
        credential_id=credential_id, rp_id=RP_ID, challenge=challenge, origin=ORIGIN, **kwargs,
    )
    return response, challenge


def _verify_assertion(response: dict, challenge: bytes, public_key: bytes, current_count: int, *,
                      require_uv: bool = True):
    return verify_authentication_response(
        credential=response,
        expected_challenge=challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        credential_public_key=public_key,
        credential_current_sign_count=current_count,
        require_user_verification=require_uv,
    )


@pytest.fixture
def registered(element, vendor):
    """An authentication credential whose registration py_webauthn verified."""
    response, challenge = _register(element)
    return _verify_registration(response, challenge, vendor.root_pem)


def _auth_data(response: dict) -> bytes:
    return parse_attestation_object(base64url_to_bytes(response["response"]["attestationObject"])).auth_data


def test_registration_verifies_against_the_vendor_root(element, vendor):
    response, challenge = _register(element)
    verified = _verify_registration(response, challenge, vendor.root_pem)
    assert verified.fmt == AttestationFormat.PACKED
    assert verified.user_verified is True
    assert verified.sign_count == 0
    assert verified.aaguid == str(vendor.aaguid)


def test_registration_fails_against_another_vendors_root(element, other_vendor):
    response, challenge = _register(element)
    with pytest.raises(InvalidRegistrationResponse) as rejected:
        _verify_registration(response, challenge, other_vendor.root_pem)
    assert str(rejected.value) == "Certificate chain could not be validated. See __cause__ for more info (Packed)"


def test_registration_of_the_sign_key_verifies_against_the_vendor_root(element, vendor):
    response, challenge = _register(element, "sign")
    assert _verify_registration(response, challenge, vendor.root_pem).fmt == AttestationFormat.PACKED


def test_attestation_statement_is_packed_x5c_es256(element, vendor):
    response, _ = _register(element)
    attestation = cbor2.loads(base64url_to_bytes(response["response"]["attestationObject"]))
    assert list(attestation) == ["fmt", "attStmt", "authData"]
    assert attestation["fmt"] == "packed"
    assert attestation["attStmt"]["alg"] == -7
    assert [x509.load_der_x509_certificate(der) for der in attestation["attStmt"]["x5c"]] == [
        vendor.attestation_certificate,
    ]


def test_attestation_certificate_follows_the_packed_requirements(vendor):
    certificate = vendor.attestation_certificate
    unit = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [attribute.value for attribute in unit] == ["Authenticator Attestation"]
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    aaguid = certificate.extensions.get_extension_for_oid(oids.FIDO_AAGUID).value.value
    assert aaguid == b"\x04\x10" + vendor.aaguid.bytes


def test_authenticator_data_sets_up_uv_at_and_clears_the_backup_bits(element):
    response, _ = _register(element)
    flags = _auth_data(response).flags
    assert (flags.up, flags.uv, flags.at, flags.be, flags.bs, flags.ed) == (True, True, True, False, False, False)


def test_credential_is_device_bound(element, vendor):
    response, challenge = _register(element)
    verified = _verify_registration(response, challenge, vendor.root_pem)
    assert verified.credential_device_type is CredentialDeviceType.SINGLE_DEVICE
    assert verified.credential_backed_up is False


def test_attested_credential_data_carries_the_models_aaguid_and_the_key(element):
    response, _ = _register(element)
    attested = _auth_data(response).attested_credential_data
    credential_id = base64url_to_bytes(response["rawId"])
    assert attested.aaguid == element.aaguid.bytes
    assert attested.credential_id == credential_id
    key = cbor2.loads(attested.credential_public_key)
    numbers = element.public_key(credential_id).public_numbers()
    assert key == {1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}


def test_registration_response_is_registration_response_json(element):
    response, _ = _register(element)
    assert response["id"] == response["rawId"]
    assert response["type"] == "public-key"
    assert response["authenticatorAttachment"] == "platform"
    assert response["clientExtensionResults"] == {}
    assert response["response"]["transports"] == ["internal"]
    assert response["response"]["publicKeyAlgorithm"] == -7
    client_data = base64url_to_bytes(response["response"]["clientDataJSON"])
    assert client_data.startswith(b'{"type":"webauthn.create","challenge":"')
    attestation = cbor2.loads(base64url_to_bytes(response["response"]["attestationObject"]))
    assert base64url_to_bytes(response["response"]["authenticatorData"]) == attestation["authData"]


def test_assertion_verifies_with_the_credential_public_key(element, registered):
    response, challenge = _assert(element, registered.credential_id)
    verified = _verify_assertion(response, challenge, registered.credential_public_key, registered.sign_count)
    assert verified.new_sign_count == 1
    assert verified.user_verified is True


def test_each_assertion_raises_the_counter_by_one(element, registered):
    counts = []
    for _ in range(3):
        response, challenge = _assert(element, registered.credential_id)
        counts.append(_verify_assertion(response, challenge, registered.credential_public_key, 0).new_sign_count)
    assert counts == [1, 2, 3]


def test_rewound_counter_is_rejected_by_py_webauthn(element, registered):
    for _ in range(2):
        _assert(element, registered.credential_id)
    element.restore_counter(registered.credential_id, 0)
    response, challenge = _assert(element, registered.credential_id)
    with pytest.raises(InvalidAuthenticationResponse) as rejected:
        _verify_assertion(response, challenge, registered.credential_public_key, 2)
    assert str(rejected.value) == "Response sign count of 1 was not greater than current count of 2"


def test_assertion_for_another_challenge_is_rejected(element, registered):
    response, _ = _assert(element, registered.credential_id)
    with pytest.raises(InvalidAuthenticationResponse) as rejected:
        _verify_assertion(response, secrets.token_bytes(32), registered.credential_public_key, 0)
    assert str(rejected.value) == "Client data challenge was not expected challenge"


def test_failed_biometrics_refuse_registration(element):
    element.user_verification = UserVerification.FAIL
    with pytest.raises(UserVerificationFailed) as refused:
        _register(element)
    assert str(refused.value) == "biometric user verification failed"
    assert element.credentials() == []


def test_failed_biometrics_refuse_an_assertion(element, registered):
    element.user_verification = UserVerification.FAIL
    with pytest.raises(UserVerificationFailed):
        _assert(element, registered.credential_id)
    assert element.credential(registered.credential_id).sign_count == 0


def test_failed_biometrics_refuse_digest_signing(element):
    response, _ = _register(element, "sign")
    element.user_verification = UserVerification.FAIL
    with pytest.raises(UserVerificationFailed):
        element.sign_digest(credential_id=base64url_to_bytes(response["rawId"]), digest=DIGEST)


def test_presence_only_assertion_is_rejected_where_verification_is_required(element, registered):
    element.user_verification = UserVerification.FAIL
    response, challenge = _assert(element, registered.credential_id, presence_only=True)
    with pytest.raises(InvalidAuthenticationResponse) as rejected:
        _verify_assertion(response, challenge, registered.credential_public_key, 0)
    assert str(rejected.value) == "User verification is required but user was not verified during authentication"


def test_presence_only_assertion_is_signed_with_uv_clear(element, registered):
    response, challenge = _assert(element, registered.credential_id, presence_only=True)
    verified = _verify_assertion(response, challenge, registered.credential_public_key, 0, require_uv=False)
    assert verified.user_verified is False


def test_presence_only_registration_is_rejected_where_verification_is_required(element, vendor):
    response, challenge = _register(element, presence_only=True)
    with pytest.raises(InvalidRegistrationResponse) as rejected:
        _verify_registration(response, challenge, vendor.root_pem)
    assert str(rejected.value) == "User verification is required but user was not verified during attestation"


def test_sign_key_never_signs_a_login_assertion(element):
    response, _ = _register(element, "sign")
    credential_id = base64url_to_bytes(response["rawId"])
    with pytest.raises(WrongKeyPurpose) as refused:
        _assert(element, credential_id)
    assert str(refused.value) == "the signature key never signs a login assertion"


def test_auth_key_never_signs_a_raw_digest(element, registered):
    with pytest.raises(WrongKeyPurpose) as refused:
        element.sign_digest(credential_id=registered.credential_id, digest=DIGEST)
    assert str(refused.value) == "the authentication key never signs a raw digest"


def test_digest_signature_verifies_with_the_sign_key(element):
    response, _ = _register(element, "sign")
    credential_id = base64url_to_bytes(response["rawId"])
    signature = element.sign_digest(credential_id=credential_id, digest=DIGEST)
    element.public_key(credential_id).verify(signature, DIGEST, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_digest_signature_does_not_verify_for_another_digest(element):
    response, _ = _register(element, "sign")
    credential_id = base64url_to_bytes(response["rawId"])
    signature = element.sign_digest(credential_id=credential_id, digest=DIGEST)
    with pytest.raises(InvalidSignature):
        element.public_key(credential_id).verify(
            signature, hashlib.sha256(b"other").digest(), ec.ECDSA(Prehashed(hashes.SHA256())),
        )


def test_digest_signing_raises_the_sign_keys_counter(element):
    response, _ = _register(element, "sign")
    credential_id = base64url_to_bytes(response["rawId"])
    element.sign_digest(credential_id=credential_id, digest=DIGEST)
    element.sign_digest(credential_id=credential_id, digest=DIGEST)
    assert element.credential(credential_id).sign_count == 2


def test_counters_are_per_key(element, registered):
    response, _ = _register(element, "sign")
    element.sign_digest(credential_id=base64url_to_bytes(response["rawId"]), digest=DIGEST)
    assert element.credential(registered.credential_id).sign_count == 0


@pytest.mark.parametrize("digest", [DIGEST[:31], DIGEST + b"\x00", b""])
def test_digest_that_is_not_32_bytes_is_refused(element, digest):
    response, _ = _register(element, "sign")
    credential_id = base64url_to_bytes(response["rawId"])
    with pytest.raises(InvalidDigest):
        element.sign_digest(credential_id=credential_id, digest=digest)
    assert element.credential(credential_id).sign_count == 0


def test_assertion_for_another_rp_id_finds_no_credential(element, registered):
    with pytest.raises(UnknownCredential) as refused:
        element.get_assertion(
            credential_id=registered.credential_id, rp_id="evil.example", challenge=b"c" * 32, origin=ORIGIN,
        )
    assert str(refused.value) == "no such credential in this secure element"


def test_unknown_credential_is_refused(element):
    with pytest.raises(UnknownCredential):
        element.sign_digest(credential_id=secrets.token_bytes(32), digest=DIGEST)


def test_unknown_purpose_is_refused(element):
    with pytest.raises(ValueError) as raised:
        _register(element, "login")
    assert str(raised.value) == "'login' is not a valid KeyPurpose"


@pytest.mark.parametrize("value", [-1, 2**32])
def test_counter_outside_32_bits_cannot_be_restored(element, registered, value):
    with pytest.raises(ValueError) as raised:
        element.restore_counter(registered.credential_id, value)
    assert str(raised.value) == "a signature counter is a 32-bit unsigned integer"


def test_credentials_list_purpose_and_rp_id(element, registered):
    response, _ = _register(element, "sign")
    listed = [(info.purpose, info.rp_id) for info in element.credentials()]
    assert listed == [(KeyPurpose.AUTH, RP_ID), (KeyPurpose.SIGN, RP_ID)]
    assert base64url_to_bytes(response["rawId"]) == element.credentials()[1].credential_id


def test_secure_element_exposes_no_private_key(element, registered):
    assert not hasattr(element, "__dict__")
    public = [getattr(element, name) for name in dir(element) if not name.startswith("_")]
    info = element.credential(registered.credential_id)
    public += [getattr(info, name) for name in dir(info) if not name.startswith("_")]
    assert not any(isinstance(value, ec.EllipticCurvePrivateKey) for value in public)
    assert "PRIVATE" not in repr(element)


def test_stored_state_keeps_keys_and_counters(element, registered):
    _assert(element, registered.credential_id)
    restored = SecureElement.from_state(element.to_state(PASSPHRASE), PASSPHRASE)
    response, challenge = _assert(restored, registered.credential_id)
    verified = _verify_assertion(response, challenge, registered.credential_public_key, 1)
    assert verified.new_sign_count == 2


def test_stored_state_keeps_the_biometric_switch(element):
    element.user_verification = UserVerification.FAIL
    restored = SecureElement.from_state(element.to_state(PASSPHRASE), PASSPHRASE)
    assert restored.user_verification is UserVerification.FAIL


def test_stored_state_encrypts_every_private_key(element, registered):
    state = element.to_state(PASSPHRASE)
    keys = [state["attestation"]["key"]] + [credential["key"] for credential in state["credentials"]]
    for key in keys:
        with pytest.raises(TypeError, match="private key is encrypted"):
            serialization.load_pem_private_key(key.encode(), password=None)


def test_stored_state_with_the_wrong_passphrase_is_refused(element, registered):
    with pytest.raises(WrongPassphrase):
        SecureElement.from_state(element.to_state(PASSPHRASE), b"wrong")
