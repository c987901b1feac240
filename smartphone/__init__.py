"""The simulated world around the portal: J-LIS, My Number Cards, SE vendors and smartphones.

An outside party to ``idp``: it reuses only the portal's certificate-profile library
(``idp.pki.{oids,attributes,profiles,registry,authority,ocsp}``), never its services.
"""

from smartphone.card import (
    CardCertificates,
    CardKey,
    InvalidPin,
    MyNumberCard,
    PinLocked,
    WrongPin,
)
from smartphone.jlis import JLis, UnknownAuthority
from smartphone.keys import InvalidDigest, WrongPassphrase
from smartphone.registry import JsonFileRegistry
from smartphone.secure_element import (
    KeyPurpose,
    SecureElement,
    UnknownCredential,
    UserVerification,
    UserVerificationFailed,
    WrongKeyPurpose,
)
from smartphone.state import State, StateError
from smartphone.vendor import Vendor

__all__ = [
    "CardCertificates",
    "CardKey",
    "InvalidDigest",
    "InvalidPin",
    "JLis",
    "JsonFileRegistry",
    "KeyPurpose",
    "MyNumberCard",
    "PinLocked",
    "SecureElement",
    "State",
    "StateError",
    "UnknownAuthority",
    "UnknownCredential",
    "UserVerification",
    "UserVerificationFailed",
    "Vendor",
    "WrongKeyPurpose",
    "WrongPassphrase",
    "WrongPin",
]
