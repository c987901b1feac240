"""The simulated My Number Card: its JPKI application with two RSA-2048 keys and their PINs.

As on the real card (``jpki-profile.md``): the user-authentication key answers to a 4-digit PIN
with 3 tries, the signature key to a 6–16 character PIN of upper-case letters and digits (both
kinds required, as the JPKI portal states) with 5 tries; a wrong PIN costs a try, the right one
restores them all, and at zero the key is locked for good, even for the right PIN. Keys are made
on the card and sign only a SHA-256 digest (RSASSA-PKCS1-v1_5), only after the right PIN.
Certificates are readable without a PIN. No method returns a private key: the state module
stores them only as ``wrap_keys`` gives them, encrypted.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from idp.pki.profiles import KeyAlgorithm, generate_key
from smartphone.files import CorruptState
from smartphone.keys import PREHASHED_SHA256, require_sha256_digest, seal_key, unseal_key

__all__ = [
    "PIN_RULES",
    "CardCertificates",
    "CardError",
    "CardKey",
    "CertificateMismatch",
    "InvalidPin",
    "MyNumberCard",
    "NoCertificate",
    "PinLocked",
    "PinRule",
    "WrongPin",
    "check_pin",
    "tries_in",
]


class CardKey(enum.Enum):
    """The two keys of the card's JPKI application."""

    AUTH = "auth"
    """利用者証明用: the user-authentication key."""
    SIGN = "sign"
    """署名用: the signature key."""

    @property
    def label(self) -> str:
        """The key's name in messages."""
        return "user-authentication" if self is CardKey.AUTH else "signature"


class CardError(Exception):
    """The card refused an operation."""


class InvalidPin(CardError, ValueError):
    """The PIN breaks its format rule; the card is not asked, so no try is used."""


class WrongPin(CardError):
    """The PIN is wrong; ``tries_left`` more wrong PINs are allowed before the key locks."""

    def __init__(self, key: CardKey, tries_left: int) -> None:
        tries = "try" if tries_left == 1 else "tries"
        left = f"{tries_left} {tries} left" if tries_left else "the key is now locked"
        super().__init__(f"wrong {key.label} PIN: {left}")
        self.key = key
        self.tries_left = tries_left


class PinLocked(CardError):
    """The key is locked after too many wrong PINs; it stays locked even for the right PIN."""

    def __init__(self, key: CardKey) -> None:
        super().__init__(f"the {key.label} PIN is locked after too many wrong PINs")
        self.key = key


class NoCertificate(CardError):
    """J-LIS has not written the certificates onto the card yet."""


class CertificateMismatch(CardError, ValueError):
    """A certificate offered to the card is not for the card's key in that slot."""


@dataclass(frozen=True, slots=True)
class PinRule:
    """The format of one key's PIN and how many wrong tries lock it."""

    pattern: re.Pattern[str]
    tries: int
    description: str


PIN_RULES: Mapping[CardKey, PinRule] = {
    CardKey.AUTH: PinRule(re.compile(r"[0-9]{4}"), 3, "4 digits"),
    CardKey.SIGN: PinRule(
        re.compile(r"(?=[A-Z0-9]*[A-Z])(?=[A-Z0-9]*[0-9])[A-Z0-9]{6,16}"),
        5,
        "6 to 16 upper-case letters and digits, with at least one of each",
    ),
}


def check_pin(key: CardKey, pin: str) -> None:
    """Raise InvalidPin unless ``pin`` has the format ``key``'s PIN must have."""
    rule = PIN_RULES[key]
    if not isinstance(pin, str) or rule.pattern.fullmatch(pin) is None:
        raise InvalidPin(f"the {key.label} PIN must be {rule.description}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CardCertificates:
    """The two certificates J-LIS wrote onto a card."""

    auth: x509.Certificate
    sign: x509.Certificate

    def __getitem__(self, key: CardKey) -> x509.Certificate:
        return self.auth if key is CardKey.AUTH else self.sign


_SALT_BYTES = 16


def _pin_verifier(pin: str, salt: bytes) -> bytes:
    """scrypt of the PIN: the card compares verifiers, so no PIN is ever stored."""
    return hashlib.scrypt(pin.encode("ascii"), salt=salt, n=2**14, r=8, p=1, dklen=32)


class _Slot:
    """One key of the card with its PIN verifier and retry counter. Never leaves the card."""

    __slots__ = ("private_key", "salt", "tries_left", "verifier")

    def __init__(self, private_key: rsa.RSAPrivateKey, *, salt: bytes, verifier: bytes, tries_left: int) -> None:
        self.private_key = private_key
        self.salt = salt
        self.verifier = verifier
        self.tries_left = tries_left

    def __repr__(self) -> str:
        return f"_Slot(tries_left={self.tries_left})"


class MyNumberCard:
    """A My Number Card's JPKI application: two keys, two PINs, two certificates."""

    __slots__ = ("_certificates", "_slots")

    def __init__(self, slots: Mapping[CardKey, _Slot], certificates: CardCertificates | None = None) -> None:
        """Use ``manufacture`` or ``restore``; this takes the card's private slots."""
        self._slots = dict(slots)
        self._certificates = certificates

    def __repr__(self) -> str:
        if self._certificates is None:
            return "MyNumberCard(no certificates)"
        auth, sign = self._certificates.auth.serial_number, self._certificates.sign.serial_number
        return f"MyNumberCard(auth serial {auth:x}, sign serial {sign:x})"

    @classmethod
    def manufacture(cls, *, auth_pin: str, sign_pin: str) -> MyNumberCard:
        """A new card whose keys are made on it (RSA-2048, e = 65537), with the holder's PINs.

        Raises InvalidPin when either PIN breaks its format rule.
        """
        pins = {CardKey.AUTH: auth_pin, CardKey.SIGN: sign_pin}
        for key, pin in pins.items():
            check_pin(key, pin)
        slots = {}
        for key, pin in pins.items():
            private_key = generate_key(KeyAlgorithm.RSA_2048)
            assert isinstance(private_key, rsa.RSAPrivateKey)  # noqa: S101 - RSA_2048 makes RSA keys
            salt = secrets.token_bytes(_SALT_BYTES)
            slots[key] = _Slot(
                private_key, salt=salt, verifier=_pin_verifier(pin, salt), tries_left=PIN_RULES[key].tries,
            )
        return cls(slots)

    def public_key(self, key: CardKey) -> rsa.RSAPublicKey:
        """The public half of ``key``, which J-LIS certifies."""
        return self._slots[key].private_key.public_key()

    def install_certificates(self, *, auth: x509.Certificate, sign: x509.Certificate) -> None:
        """Write the two certificates J-LIS issued for this card's keys (at issuance, renewal).

        Raises CertificateMismatch when a certificate's public key is not the card's key in that
        slot; then neither is written.
        """
        for key, certificate in ((CardKey.AUTH, auth), (CardKey.SIGN, sign)):
            if certificate.public_key() != self.public_key(key):
                raise CertificateMismatch(f"the {key.label} certificate is not for this card's {key.label} key")
        self._certificates = CardCertificates(auth=auth, sign=sign)

    def renew_key(self, key: CardKey) -> None:
        """Make a new key pair in ``key``'s slot, as J-LIS does at a renewal or a move.

        The old key is gone for good; the PIN and its retry counter stay. The card holds no
        certificates until J-LIS writes the new ones (``install_certificates``): a certificate
        for the old key must never be read from it again.
        """
        private_key = generate_key(KeyAlgorithm.RSA_2048)
        assert isinstance(private_key, rsa.RSAPrivateKey)  # noqa: S101 - RSA_2048 makes RSA keys
        self._slots[key].private_key = private_key
        self._certificates = None

    @property
    def certificates(self) -> CardCertificates:
        """Both certificates; readable without a PIN, as on the real card. Raises NoCertificate."""
        if self._certificates is None:
            raise NoCertificate("no certificates have been written onto this card")
        return self._certificates

    def certificate(self, key: CardKey) -> x509.Certificate:
        """The certificate of ``key``. Raises NoCertificate."""
        return self.certificates[key]

    def tries_left(self, key: CardKey) -> int:
        """How many wrong PINs ``key`` still allows; 0 means locked."""
        return self._slots[key].tries_left

    def is_locked(self, key: CardKey) -> bool:
        """Whether ``key`` is locked after too many wrong PINs."""
        return self._slots[key].tries_left == 0

    def sign_digest(self, key: CardKey, digest: bytes, *, pin: str) -> bytes:
        """Sign a SHA-256 ``digest`` with ``key`` (RSASSA-PKCS1-v1_5) after checking ``pin``.

        Raises InvalidDigest (not 32 bytes; no try used), PinLocked, InvalidPin (wrong format;
        no try used), or WrongPin (a try used; the last one locks the key).
        """
        require_sha256_digest(digest)
        slot = self._slots[key]
        if slot.tries_left == 0:
            raise PinLocked(key)
        check_pin(key, pin)
        if not hmac.compare_digest(_pin_verifier(pin, slot.salt), slot.verifier):
            slot.tries_left -= 1
            raise WrongPin(key, slot.tries_left)
        slot.tries_left = PIN_RULES[key].tries
        return slot.private_key.sign(digest, padding.PKCS1v15(), PREHASHED_SHA256)

    def wrap_keys(self, passphrase: bytes) -> dict[CardKey, bytes]:
        """Both private keys as PKCS#8 PEM encrypted under ``passphrase``, for storage only."""
        return {key: seal_key(slot.private_key, passphrase) for key, slot in self._slots.items()}

    def pin_state(self) -> dict[str, Any]:
        """The PIN verifiers and retry counters as JSON values (no PIN, no key)."""
        return {
            key.value: {
                "salt": base64.b64encode(slot.salt).decode("ascii"),
                "verifier": base64.b64encode(slot.verifier).decode("ascii"),
                "tries_left": slot.tries_left,
            }
            for key, slot in self._slots.items()
        }

    @classmethod
    def restore(
        cls,
        *,
        wrapped_keys: Mapping[CardKey, bytes],
        passphrase: bytes,
        pin_state: Mapping[str, Any],
        certificates: CardCertificates | None,
    ) -> MyNumberCard:
        """A card from what ``wrap_keys``, ``pin_state`` and ``certificates`` gave.

        Raises WrongPassphrase, or CorruptState when the stored state is malformed.
        """
        slots = {}
        for key in CardKey:
            private_key = unseal_key(wrapped_keys[key], passphrase)
            if not isinstance(private_key, rsa.RSAPrivateKey):
                raise CorruptState(f"the stored {key.value} key is not an RSA key")
            salt, verifier, tries_left = _read_pin_record(pin_state.get(key.value), key)
            slots[key] = _Slot(private_key, salt=salt, verifier=verifier, tries_left=tries_left)
        card = cls(slots)
        if certificates is not None:
            card.install_certificates(auth=certificates.auth, sign=certificates.sign)
        return card


def tries_in(pin_state: Mapping[str, Any]) -> dict[CardKey, int]:
    """The retry counters in a stored ``pin_state``, read without the keys. Raises CorruptState."""
    return {key: _read_pin_record(pin_state.get(key.value), key)[2] for key in CardKey}


def _read_pin_record(record: object, key: CardKey) -> tuple[bytes, bytes, int]:
    if not isinstance(record, Mapping):
        raise CorruptState(f"the stored {key.value} PIN record is missing")
    tries_left = record.get("tries_left")
    if not isinstance(tries_left, int) or isinstance(tries_left, bool):
        raise CorruptState(f"the stored {key.value} PIN retry counter is invalid")
    if not 0 <= tries_left <= PIN_RULES[key].tries:
        raise CorruptState(f"the stored {key.value} PIN retry counter is invalid")
    try:
        salt = base64.b64decode(record["salt"], validate=True)
        verifier = base64.b64decode(record["verifier"], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise CorruptState(f"the stored {key.value} PIN record is invalid") from exc
    return salt, verifier, tries_left
