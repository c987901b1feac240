"""Stored state that the simulator did not write is refused with a clear reason, never half-read."""

import json
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from idp.pki.attributes import BasicAttributes, Sex
from smartphone.card import CardKey, MyNumberCard
from smartphone.files import AlreadyExists, CorruptState, new_directory
from smartphone.keys import seal_key, unseal_key
from smartphone.secure_element import SecureElement, SecureElementError
from smartphone.state import State, StateCorrupt
from smartphone.vendor import Vendor

PASSPHRASE = b"correct horse battery staple"


@pytest.fixture(scope="module")
def template(tmp_path_factory, vendor) -> State:
    """A world with a J-LIS, the card 'taro' and the phone 'pixel' holding one credential."""
    now = datetime(2026, 6, 1, tzinfo=UTC)
    state = State(tmp_path_factory.mktemp("template") / "world", PASSPHRASE)
    state.create_jlis(base_url="http://127.0.0.1:8100", now=now)
    card = state.load_jlis().issue_card(
        attributes=BasicAttributes(name="山田　太郎", address="東京都", date_of_birth=date(1990, 4, 1), sex=Sex.MALE),
        prefecture="東京都", city="千代田区", auth_pin="1234", sign_pin="ABC123", now=now,
    )
    state.add_card("taro", card)
    element = state.add_phone("pixel", vendor=vendor)
    element.make_credential(rp_id="id.test", challenge=b"c" * 32, origin="https://id.test", purpose="auth")
    state.save_phone("pixel", element)
    return state


@pytest.fixture
def state(template, tmp_path) -> State:
    """A private copy of the template, for the test to break."""
    shutil.copytree(template.root, tmp_path / "world")
    return State(tmp_path / "world", PASSPHRASE)


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _refusal(load) -> str:
    with pytest.raises(StateCorrupt) as refused:
        load()
    return str(refused.value)


def test_jlis_without_a_base_url_is_corrupt(state):
    _edit_json(state.jlis_dir / "jlis.json", lambda data: data.pop("base_url"))
    assert _refusal(state.load_jlis) == f"{state.jlis_dir / 'jlis.json'} has no base URL"


def test_state_file_of_another_format_is_refused(state):
    _edit_json(state.jlis_dir / "jlis.json", lambda data: data.update(format=2))
    assert _refusal(state.load_jlis) == f"{state.jlis_dir / 'jlis.json'} is not a state file this version understands"


def test_jlis_key_of_another_ca_is_corrupt(state):
    (state.jlis_dir / "jlis-sign-ca.key").write_bytes((state.jlis_dir / "jlis-auth-ca.key").read_bytes())
    assert _refusal(state.load_jlis) == f"{state.root}: the stored jlis-sign-ca key does not match its certificate"


def test_certificate_file_that_is_not_pem_is_corrupt(state):
    (state.jlis_dir / "jlis-root.crt").write_text("not a certificate")
    assert _refusal(state.load_jlis) == f"{state.jlis_dir / 'jlis-root.crt'} is not a PEM certificate"


def test_missing_key_file_is_corrupt(state):
    (state.card_dir("taro") / "auth.key").unlink()
    assert _refusal(lambda: state.load_card("taro")) == f"{state.card_dir('taro') / 'auth.key'} is missing"


def test_unencrypted_key_file_is_corrupt(state):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (state.card_dir("taro") / "auth.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ))
    assert _refusal(lambda: state.load_card("taro")) == (
        f"{state.root}: the stored key is not an encrypted PKCS#8 key"
    )


def test_card_key_that_is_not_rsa_is_corrupt(state):
    (state.card_dir("taro") / "auth.key").write_bytes(seal_key(ec.generate_private_key(ec.SECP256R1()), PASSPHRASE))
    assert _refusal(lambda: state.load_card("taro")) == f"{state.root}: the stored auth key is not an RSA key"


def test_card_without_pin_records_is_corrupt(state):
    _edit_json(state.card_dir("taro") / "card.json", lambda data: data.pop("pins"))
    assert _refusal(lambda: state.load_card("taro")) == f"{state.card_dir('taro') / 'card.json'} has no PIN records"


def test_card_missing_one_pin_record_is_corrupt(state):
    _edit_json(state.card_dir("taro") / "card.json", lambda data: data["pins"].pop("sign"))
    assert _refusal(lambda: state.load_card("taro")) == f"{state.root}: the stored sign PIN record is missing"


def test_card_pin_verifier_that_is_not_base64_is_corrupt(state):
    _edit_json(state.card_dir("taro") / "card.json", lambda data: data["pins"]["auth"].update(salt="!!"))
    assert _refusal(lambda: state.load_card("taro")) == f"{state.root}: the stored auth PIN record is invalid"


def test_phone_naming_no_vendor_is_corrupt(state):
    _edit_json(state.phone_dir("pixel") / "phone.json", lambda data: data.pop("vendor"))
    assert _refusal(lambda: state.phone_vendor("pixel")) == f"{state.phone_dir('pixel') / 'phone.json'} names no vendor"


@pytest.mark.parametrize(("change", "reason"), [
    (lambda se: se.pop("credentials"), "the stored secure element is malformed"),
    (lambda se: se.update(credentials={}), "the stored credentials are malformed"),
    (lambda se: se.update(user_verification="maybe"), "the stored user-verification switch is invalid"),
    (lambda se: se["credentials"][0].pop("rp_id"), "the stored credential is malformed"),
    (lambda se: se["credentials"][0].update(sign_count=-1), "the stored credential is malformed"),
    (lambda se: se["credentials"][0].update(sign_count=True), "the stored credential is malformed"),
    (lambda se: se["credentials"][0].update(purpose="login"), "the stored credential is malformed"),
    (lambda se: se["credentials"][0].update(id=7), "the stored credential is malformed"),
    (lambda se: se["credentials"][0].update(key=7), "a stored PEM value is not text"),
    (lambda se: se["attestation"].update(aaguid="not-a-uuid"), "the stored attestation identity is malformed"),
])
def test_phone_state_that_is_malformed_is_corrupt(state, change, reason):
    _edit_json(state.phone_dir("pixel") / "phone.json", lambda data: change(data["secure_element"]))
    assert _refusal(lambda: state.load_phone("pixel")) == f"{state.root}: {reason}"


def test_se_key_that_is_not_p256_is_corrupt(element):
    stored = element.to_state(PASSPHRASE)
    stored["attestation"]["key"] = seal_key(ec.generate_private_key(ec.SECP384R1()), PASSPHRASE).decode()
    with pytest.raises(CorruptState) as refused:
        SecureElement.from_state(stored, PASSPHRASE)
    assert str(refused.value) == "an SE key must be a P-256 key"


def test_vendor_root_key_that_is_not_ec_is_corrupt(vendor):
    stored = vendor.to_state(PASSPHRASE)
    stored["root_key"] = seal_key(rsa.generate_private_key(public_exponent=65537, key_size=2048), PASSPHRASE).decode()
    with pytest.raises(CorruptState) as refused:
        Vendor.from_state(stored, PASSPHRASE)
    assert str(refused.value) == "a vendor key must be an EC key"


def test_vendor_root_that_is_not_a_certificate_is_corrupt(vendor):
    stored = {**vendor.to_state(PASSPHRASE), "root": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}
    with pytest.raises(CorruptState) as refused:
        Vendor.from_state(stored, PASSPHRASE)
    assert str(refused.value) == "the stored vendor root is not a certificate"


def test_vendor_name_that_is_not_text_is_corrupt(vendor):
    with pytest.raises(CorruptState) as refused:
        Vendor.from_state({**vendor.to_state(PASSPHRASE), "name": 7}, PASSPHRASE)
    assert str(refused.value) == "the stored vendor is malformed"


def test_key_is_never_sealed_without_a_passphrase():
    with pytest.raises(ValueError) as refused:
        seal_key(ec.generate_private_key(ec.SECP256R1()), b"")
    assert str(refused.value) == "a private key is never stored without a passphrase"


def test_sealed_key_of_another_type_is_corrupt():
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415 - only here

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE),
    )
    with pytest.raises(CorruptState) as refused:
        unseal_key(pem, PASSPHRASE)
    assert str(refused.value) == "the stored key is neither RSA nor EC"


def test_new_directory_refuses_an_existing_path(tmp_path):
    (tmp_path / "card").mkdir()
    with pytest.raises(AlreadyExists), new_directory(tmp_path / "card"):
        pass


def _lose_the_race(target: Path) -> None:
    with new_directory(target) as directory:
        (directory / "ours").write_text("ours")
        target.mkdir()  # another process finished first
        (target / "theirs").write_text("theirs")


def test_new_directory_that_loses_a_race_leaves_the_winner_and_no_temporary(tmp_path):
    target = tmp_path / "card"
    with pytest.raises(AlreadyExists):
        _lose_the_race(target)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["card"]
    assert sorted(path.name for path in target.iterdir()) == ["theirs"]


def test_card_restored_without_certificates_has_none():
    card = MyNumberCard.manufacture(auth_pin="1234", sign_pin="ABC123")
    restored = MyNumberCard.restore(
        wrapped_keys=card.wrap_keys(PASSPHRASE), passphrase=PASSPHRASE, pin_state=card.pin_state(), certificates=None,
    )
    assert repr(restored) == "MyNumberCard(no certificates)"
    assert restored.public_key(CardKey.AUTH) == card.public_key(CardKey.AUTH)


def test_exhausted_counter_refuses_to_sign(element):
    response = element.make_credential(rp_id="id.test", challenge=b"c" * 32, origin="https://id.test", purpose="auth")
    credential_id = element.credentials()[0].credential_id
    element.restore_counter(credential_id, 2**32 - 1)
    with pytest.raises(SecureElementError) as refused:
        element.get_assertion(credential_id=credential_id, rp_id="id.test", challenge=b"d" * 32,
                              origin="https://id.test")
    assert str(refused.value) == "the signature counter is exhausted"
    assert response["id"]
