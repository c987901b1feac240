"""The simulated My Number Card: PIN rules, retry counters, lock-out, digest signing."""

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from smartphone.card import (
    CardKey,
    CertificateMismatch,
    InvalidPin,
    MyNumberCard,
    NoCertificate,
    PinLocked,
    WrongPin,
    check_pin,
    tries_in,
)
from smartphone.keys import InvalidDigest, WrongPassphrase

AUTH_PIN, SIGN_PIN = "1234", "ABC123"  # as the card fixture issues it
PASSPHRASE = b"correct horse battery staple"
DIGEST = hashlib.sha256(b"enrollment binding").digest()


@pytest.fixture
def blank() -> MyNumberCard:
    """A card before J-LIS has written certificates: enough for the PIN rules."""
    return MyNumberCard.manufacture(auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)


def _verify(certificate, signature: bytes, digest: bytes = DIGEST) -> None:
    certificate.public_key().verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


@pytest.mark.parametrize("pin", ["123", "12345", "abcd", "12a4", "１２３４", "", " 1234"])
def test_auth_pin_that_is_not_four_digits_is_refused(pin):
    with pytest.raises(InvalidPin) as refused:
        check_pin(CardKey.AUTH, pin)
    assert str(refused.value) == "the user-authentication PIN must be 4 digits"


@pytest.mark.parametrize("pin", ["ABC12", "ABCDEFGH", "12345678", "abc123", "ABC-123", "A1" * 8 + "B", "ＡＢＣ１２３"])
def test_sign_pin_that_breaks_the_jpki_rule_is_refused(pin):
    with pytest.raises(InvalidPin) as refused:
        check_pin(CardKey.SIGN, pin)
    assert str(refused.value) == (
        "the signature PIN must be 6 to 16 upper-case letters and digits, with at least one of each"
    )


@pytest.mark.parametrize("pin", ["ABC123", "A1" * 8, "1A2B3C4D"])
def test_sign_pin_of_six_to_sixteen_letters_and_digits_is_accepted(pin):
    check_pin(CardKey.SIGN, pin)


def test_manufacture_with_a_bad_pin_is_refused():
    with pytest.raises(InvalidPin):
        MyNumberCard.manufacture(auth_pin="12345", sign_pin=SIGN_PIN)


def test_card_keys_are_rsa_2048_with_exponent_65537(blank):
    for key in CardKey:
        public_key = blank.public_key(key)
        assert isinstance(public_key, rsa.RSAPublicKey)
        assert public_key.key_size == 2048
        assert public_key.public_numbers().e == 65537


def test_the_two_card_keys_differ(blank):
    assert blank.public_key(CardKey.AUTH) != blank.public_key(CardKey.SIGN)


def test_wrong_auth_pin_costs_one_try(blank):
    with pytest.raises(WrongPin) as wrong:
        blank.sign_digest(CardKey.AUTH, DIGEST, pin="9999")
    assert wrong.value.tries_left == 2
    assert str(wrong.value) == "wrong user-authentication PIN: 2 tries left"
    assert blank.tries_left(CardKey.AUTH) == 2


def test_third_wrong_auth_pin_locks_the_key(blank):
    for _ in range(2):
        with pytest.raises(WrongPin):
            blank.sign_digest(CardKey.AUTH, DIGEST, pin="9999")
    with pytest.raises(WrongPin) as wrong:
        blank.sign_digest(CardKey.AUTH, DIGEST, pin="9999")
    assert wrong.value.tries_left == 0
    assert str(wrong.value) == "wrong user-authentication PIN: the key is now locked"
    assert blank.is_locked(CardKey.AUTH)


def test_locked_key_refuses_even_the_right_pin(blank):
    for _ in range(3):
        with pytest.raises(WrongPin):
            blank.sign_digest(CardKey.AUTH, DIGEST, pin="9999")
    with pytest.raises(PinLocked) as locked:
        blank.sign_digest(CardKey.AUTH, DIGEST, pin=AUTH_PIN)
    assert str(locked.value) == "the user-authentication PIN is locked after too many wrong PINs"


def test_signature_pin_allows_five_tries(blank):
    for tries_left in (4, 3, 2, 1, 0):
        with pytest.raises(WrongPin) as wrong:
            blank.sign_digest(CardKey.SIGN, DIGEST, pin="ZZZ999")
        assert wrong.value.tries_left == tries_left
    with pytest.raises(PinLocked):
        blank.sign_digest(CardKey.SIGN, DIGEST, pin=SIGN_PIN)


def test_right_pin_restores_every_try(blank):
    for _ in range(2):
        with pytest.raises(WrongPin):
            blank.sign_digest(CardKey.AUTH, DIGEST, pin="9999")
    blank.sign_digest(CardKey.AUTH, DIGEST, pin=AUTH_PIN)
    assert blank.tries_left(CardKey.AUTH) == 3


def test_malformed_pin_costs_no_try(blank):
    with pytest.raises(InvalidPin):
        blank.sign_digest(CardKey.AUTH, DIGEST, pin="12")
    assert blank.tries_left(CardKey.AUTH) == 3


def test_locking_one_key_leaves_the_other_usable(blank):
    for _ in range(3):
        with pytest.raises(WrongPin):
            blank.sign_digest(CardKey.AUTH, DIGEST, pin="9999")
    blank.sign_digest(CardKey.SIGN, DIGEST, pin=SIGN_PIN)
    assert blank.tries_left(CardKey.SIGN) == 5


def test_one_keys_pin_does_not_open_the_other(blank):
    with pytest.raises(WrongPin):
        blank.sign_digest(CardKey.SIGN, DIGEST, pin="1234AB")
    with pytest.raises(InvalidPin):
        blank.sign_digest(CardKey.SIGN, DIGEST, pin=AUTH_PIN)


def test_auth_signature_verifies_with_the_auth_certificate(card):
    signature = card.sign_digest(CardKey.AUTH, DIGEST, pin=AUTH_PIN)
    _verify(card.certificates.auth, signature)


def test_sign_signature_verifies_with_the_sign_certificate(card):
    signature = card.sign_digest(CardKey.SIGN, DIGEST, pin=SIGN_PIN)
    _verify(card.certificates.sign, signature)


def test_signature_is_over_the_digest_given(card):
    signature = card.sign_digest(CardKey.AUTH, DIGEST, pin=AUTH_PIN)
    with pytest.raises(InvalidSignature):
        _verify(card.certificates.auth, signature, hashlib.sha256(b"another binding").digest())


@pytest.mark.parametrize("digest", [DIGEST[:31], DIGEST + b"\x00", DIGEST * 2, b"", "a" * 32])
def test_digest_that_is_not_32_bytes_is_refused_without_costing_a_try(blank, digest):
    with pytest.raises(InvalidDigest) as refused:
        blank.sign_digest(CardKey.AUTH, digest, pin="9999")
    assert str(refused.value) == "a SHA-256 digest is 32 bytes"
    assert blank.tries_left(CardKey.AUTH) == 3


def test_certificates_are_readable_without_a_pin(card, jlis):
    assert card.certificate(CardKey.AUTH).issuer == jlis.auth_ca.certificate.subject
    assert card.certificate(CardKey.SIGN).issuer == jlis.sign_ca.certificate.subject


def test_card_without_certificates_says_so(blank):
    with pytest.raises(NoCertificate) as missing:
        blank.certificate(CardKey.AUTH)
    assert str(missing.value) == "no certificates have been written onto this card"


def test_certificate_for_another_key_is_refused(card):
    other = MyNumberCard.manufacture(auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    with pytest.raises(CertificateMismatch) as refused:
        other.install_certificates(auth=card.certificates.auth, sign=card.certificates.sign)
    assert str(refused.value) == "the user-authentication certificate is not for this card's user-authentication key"
    with pytest.raises(NoCertificate):
        other.certificate(CardKey.SIGN)


def test_certificates_in_swapped_slots_are_refused(card):
    with pytest.raises(CertificateMismatch):
        card.install_certificates(auth=card.certificates.sign, sign=card.certificates.auth)


def test_card_exposes_no_private_key(card):
    assert not hasattr(card, "__dict__")
    public = [getattr(card, name) for name in dir(card) if not name.startswith("_")]
    assert not any(isinstance(value, rsa.RSAPrivateKey) for value in public)
    assert "PRIVATE" not in repr(card)
    assert "verifier" not in repr(card)


def test_wrapped_keys_are_encrypted_pkcs8(blank):
    for pem in blank.wrap_keys(PASSPHRASE).values():
        with pytest.raises(TypeError, match="private key is encrypted"):
            serialization.load_pem_private_key(pem, password=None)


def test_pin_state_holds_no_pin(blank):
    state = repr(blank.pin_state())
    assert AUTH_PIN not in state
    assert SIGN_PIN not in state


def test_restored_card_keeps_its_keys_and_retry_counters(card):
    with pytest.raises(WrongPin):
        card.sign_digest(CardKey.AUTH, DIGEST, pin="9999")
    restored = MyNumberCard.restore(
        wrapped_keys=card.wrap_keys(PASSPHRASE), passphrase=PASSPHRASE, pin_state=card.pin_state(),
        certificates=card.certificates,
    )
    assert restored.tries_left(CardKey.AUTH) == 2
    _verify(restored.certificates.auth, restored.sign_digest(CardKey.AUTH, DIGEST, pin=AUTH_PIN))


def test_stored_retry_counters_read_without_the_keys(blank):
    with pytest.raises(WrongPin):
        blank.sign_digest(CardKey.SIGN, DIGEST, pin="ZZZ999")
    assert tries_in(blank.pin_state()) == {CardKey.AUTH: 3, CardKey.SIGN: 4}


def test_restore_with_the_wrong_passphrase_is_refused(blank):
    with pytest.raises(WrongPassphrase) as refused:
        MyNumberCard.restore(
            wrapped_keys=blank.wrap_keys(PASSPHRASE), passphrase=b"wrong", pin_state=blank.pin_state(),
            certificates=None,
        )
    assert str(refused.value) == "the passphrase does not decrypt the stored private key"
