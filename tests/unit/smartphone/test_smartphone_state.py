"""The state directory: round trips, encryption at rest, passphrases, refusals that write nothing."""

import hashlib
import json
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from smartphone.card import CardKey, MyNumberCard, NoCertificate, WrongPin
from smartphone.state import (
    BadPassphrase,
    MissingPassphrase,
    State,
    StateCorrupt,
    StateExists,
    StateNotFound,
    read_passphrase,
)

PASSPHRASE = b"correct horse battery staple"
AUTH_PIN, SIGN_PIN = "1234", "ABC123"
DIGEST = hashlib.sha256(b"binding").digest()


def _tree(root) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture
def state(tmp_path, now) -> State:
    state = State(tmp_path / "world", PASSPHRASE)
    state.create_jlis(base_url="http://127.0.0.1:8100", now=now)
    return state


@pytest.fixture
def stored_card(state, attributes, now) -> str:
    card = state.load_jlis().issue_card(
        attributes=attributes, prefecture="東京都", city="千代田区", auth_pin=AUTH_PIN, sign_pin=SIGN_PIN, now=now,
    )
    state.add_card("taro", card)
    return "taro"


def test_jlis_round_trip_keeps_certificates_and_base_url(state):
    loaded = state.load_jlis()
    again = State(state.root, PASSPHRASE).load_jlis()
    assert loaded.base_url == again.base_url == "http://127.0.0.1:8100"
    assert [a.certificate for a in loaded.authorities] == [a.certificate for a in again.authorities]


def test_jlis_root_registry_records_both_issuing_cas(state):
    jlis = state.load_jlis()
    assert jlis.root.registry.status(jlis.auth_ca.certificate.serial_number) is not None
    assert jlis.root.registry.status(jlis.sign_ca.certificate.serial_number) is not None


def test_creating_the_jlis_twice_is_refused_and_overwrites_nothing(state, now):
    before = _tree(state.root)
    with pytest.raises(StateExists) as refused:
        state.create_jlis(base_url="http://127.0.0.1:8200", now=now)
    assert str(refused.value) == f"{state.root} already holds a J-LIS; it is never overwritten"
    assert _tree(state.root) == before


def test_creating_the_jlis_without_a_passphrase_is_refused_and_writes_nothing(tmp_path, now):
    with pytest.raises(MissingPassphrase):
        State(tmp_path / "world").create_jlis(base_url="http://127.0.0.1:8100", now=now)
    assert not (tmp_path / "world").exists()


def test_creating_the_jlis_with_a_bad_url_writes_nothing(tmp_path, now):
    with pytest.raises(ValueError) as refused:
        State(tmp_path / "world", PASSPHRASE).create_jlis(base_url="ftp://x", now=now)
    assert str(refused.value) == "the J-LIS URL must be an http:// or https:// URL with a host"
    assert not (tmp_path / "world").exists()


def test_loading_with_the_wrong_passphrase_is_refused_clearly(state):
    with pytest.raises(BadPassphrase) as refused:
        State(state.root, b"wrong").load_jlis()
    assert str(refused.value) == f"the passphrase does not decrypt the keys in {state.root}"


def test_loading_a_jlis_that_is_not_there_is_refused(tmp_path):
    with pytest.raises(StateNotFound) as refused:
        State(tmp_path, PASSPHRASE).load_jlis()
    assert str(refused.value) == f"{tmp_path} holds no J-LIS: run `smartphone jlis create` first"


def test_every_private_key_is_stored_encrypted(state, stored_card, now):
    state.add_phone("pixel", vendor=state.vendor("MynaDevices", model=None, now=now))
    key_files = list(state.root.rglob("*.key"))
    assert len(key_files) == 5  # three J-LIS CAs, two card keys
    for path in key_files:
        with pytest.raises(TypeError, match="private key is encrypted"):
            serialization.load_pem_private_key(path.read_bytes(), password=None)
    for path, content in _tree(state.root).items():
        kinds = re.findall(rb"BEGIN ([A-Z ]*)PRIVATE KEY", content)
        assert all(kind == b"ENCRYPTED " for kind in kinds), path


def test_card_round_trip_keeps_keys_and_certificates(state, stored_card):
    card = state.load_card(stored_card)
    signature = card.sign_digest(CardKey.AUTH, DIGEST, pin=AUTH_PIN)
    stored = state.card_certificates(stored_card).auth
    stored.public_key().verify(signature, DIGEST, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def test_pin_retry_counters_survive_a_reload(state, stored_card):
    for _ in range(3):  # three separate sessions, as three CLI calls are
        card = state.load_card(stored_card)
        with pytest.raises(WrongPin):
            card.sign_digest(CardKey.AUTH, DIGEST, pin="9999")
        state.save_card_pins(stored_card, card)
    assert state.load_card(stored_card).is_locked(CardKey.AUTH)
    assert state.card_tries(stored_card) == {CardKey.AUTH: 0, CardKey.SIGN: 5}


def test_adding_a_card_under_an_existing_name_is_refused(state, stored_card):
    other = MyNumberCard.manufacture(auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    before = _tree(state.root)
    with pytest.raises(StateExists) as refused:
        state.add_card(stored_card, other)
    assert str(refused.value) == f"a card called 'taro' already exists in {state.root}"
    assert _tree(state.root) == before


def test_card_that_fails_to_store_leaves_no_directory(state):
    blank = MyNumberCard.manufacture(auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    with pytest.raises(NoCertificate):
        state.add_card("blank", blank)
    assert sorted(path.name for path in (state.root / "cards").iterdir()) == []


@pytest.mark.parametrize("name", ["", "../escape", ".hidden", "a/b", "x" * 65, "名前"])
def test_card_name_that_cannot_name_a_directory_is_refused(state, name):
    with pytest.raises(ValueError) as refused:
        state.card_dir(name)
    assert str(refused.value) == (
        "a card name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )


def test_missing_card_is_reported(state):
    with pytest.raises(StateNotFound) as refused:
        state.load_card("nobody")
    assert str(refused.value) == f"no card called 'nobody' in {state.root}"


def test_card_file_that_is_not_json_is_reported(state, stored_card):
    (state.card_dir(stored_card) / "card.json").write_text("{")
    with pytest.raises(StateCorrupt) as refused:
        state.load_card(stored_card)
    assert str(refused.value) == f"{state.card_dir(stored_card) / 'card.json'} is not valid JSON"


def test_card_retry_counter_out_of_range_is_reported(state, stored_card):
    path = state.card_dir(stored_card) / "card.json"
    data = json.loads(path.read_text())
    data["pins"]["auth"]["tries_left"] = 9
    path.write_text(json.dumps(data))
    with pytest.raises(StateCorrupt) as refused:
        state.load_card(stored_card)
    assert str(refused.value) == f"{state.root}: the stored auth PIN retry counter is invalid"


def test_card_status_reads_the_jlis_registries_without_a_passphrase(state, stored_card, now):
    jlis = state.load_jlis()
    jlis.revoke_card(state.card_certificates(stored_card), reason=x509.ReasonFlags.key_compromise, now=now)
    statuses = State(state.root).card_status(stored_card)
    assert {key: status.state.value for key, status in statuses.items()} == {
        CardKey.AUTH: "revoked", CardKey.SIGN: "revoked",
    }


def test_phone_round_trip_keeps_credentials_and_counters(state, now):
    element = state.add_phone("pixel", vendor=state.vendor("MynaDevices", model=None, now=now))
    response = element.make_credential(rp_id="id.test", challenge=b"c" * 32, origin="https://id.test", purpose="auth")
    credential_id = element.credentials()[0].credential_id
    element.get_assertion(credential_id=credential_id, rp_id="id.test", challenge=b"d" * 32, origin="https://id.test")
    state.save_phone("pixel", element)
    loaded = state.load_phone("pixel")
    assert loaded.credential(credential_id).sign_count == 1
    assert loaded.public_key(credential_id) == element.public_key(credential_id)
    assert response["id"]


def test_phone_with_the_wrong_passphrase_is_refused(state, now):
    state.add_phone("pixel", vendor=state.vendor("MynaDevices", model=None, now=now))
    with pytest.raises(BadPassphrase):
        State(state.root, b"wrong").load_phone("pixel")


def test_second_phone_of_a_vendor_shares_its_model(state, now):
    first = state.add_phone("one", vendor=state.vendor("MynaDevices", model="SE-1", now=now))
    second = state.add_phone("two", vendor=state.vendor("MynaDevices", model=None, now=now))
    assert first.aaguid == second.aaguid


def test_vendor_asked_for_another_model_is_refused(state, now):
    state.vendor("MynaDevices", model="SE-1", now=now)
    with pytest.raises(StateExists) as refused:
        state.vendor("MynaDevices", model="SE-2", now=now)
    assert str(refused.value) == "vendor 'MynaDevices' already exists and makes model 'SE-1'"


def test_adding_a_phone_under_an_existing_name_is_refused(state, now):
    vendor = state.vendor("MynaDevices", model=None, now=now)
    state.add_phone("pixel", vendor=vendor)
    before = _tree(state.root)
    with pytest.raises(StateExists):
        state.add_phone("pixel", vendor=vendor)
    assert _tree(state.root) == before


def test_vendor_root_is_written_for_the_portal(state, now):
    vendor = state.vendor("MynaDevices", model=None, now=now)
    assert (state.vendor_dir("MynaDevices") / "root.crt").read_bytes() == vendor.root_pem


def test_passphrase_file_loses_its_trailing_newline(tmp_path):
    path = tmp_path / "passphrase"
    path.write_bytes(b"s3cret\n")
    assert read_passphrase(path, {}) == b"s3cret"


def test_passphrase_comes_from_the_environment(tmp_path):
    assert read_passphrase(None, {"SMARTPHONE_PASSPHRASE": "s3cret"}) == b"s3cret"


def test_missing_passphrase_is_refused_with_what_to_do():
    with pytest.raises(MissingPassphrase) as refused:
        read_passphrase(None, {})
    assert str(refused.value) == (
        "a passphrase is required to encrypt private keys: $SMARTPHONE_PASSPHRASE is empty or unset "
        "(use --passphrase-file or set SMARTPHONE_PASSPHRASE)"
    )


def test_empty_passphrase_file_is_refused(tmp_path):
    path = tmp_path / "passphrase"
    path.write_bytes(b"\n")
    with pytest.raises(MissingPassphrase):
        read_passphrase(path, {"SMARTPHONE_PASSPHRASE": "ignored"})


def test_unreadable_passphrase_file_is_refused(tmp_path):
    with pytest.raises(MissingPassphrase) as refused:
        read_passphrase(tmp_path / "absent", {})
    assert str(refused.value) == f"cannot read the passphrase file {tmp_path / 'absent'}: No such file or directory"
