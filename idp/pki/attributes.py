"""The four basic attributes (基本4情報) as JPKI encodes them in a signature certificate.

Each is a subjectAltName otherName under the J-LIS arc 1.2.392.200149.8.5.5 whose value is a
UTF8String (see ``docs/pki-profile.md``). ``encode`` and ``decode`` are exact inverses, and
``decode`` refuses a certificate whose attributes are missing, repeated or malformed rather
than guessing: identity claims come only from a well-formed certificate.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from typing import Any

from asn1crypto import core
from cryptography import x509

from idp.pki import oids

__all__ = [
    "BasicAttributes",
    "Era",
    "MalformedAttributes",
    "Sex",
    "decode",
    "encode",
]

FULL_WIDTH_SPACE = "\u3000"
MAX_ADDRESS_LENGTH = 200


class MalformedAttributes(ValueError):
    """A certificate's basic attributes are missing or malformed."""


class Sex(enum.Enum):
    """JPKI's sex code (OID .3)."""

    MALE = "1"
    FEMALE = "2"
    UNKNOWN = "3"


class Era(enum.Enum):
    """The era digit that opens a JPKI date of birth (OID .4)."""

    UNKNOWN = "0"
    MEIJI = "1"
    TAISHO = "2"
    SHOWA = "3"
    HEISEI = "4"
    REIWA = "5"

    @classmethod
    def of(cls, day: date) -> Era:
        """The Japanese era a Gregorian date falls in."""
        for start, era in _ERA_STARTS:
            if day >= start:
                return era
        return cls.UNKNOWN


_ERA_STARTS = (
    (date(2019, 5, 1), Era.REIWA),
    (date(1989, 1, 8), Era.HEISEI),
    (date(1926, 12, 25), Era.SHOWA),
    (date(1912, 7, 30), Era.TAISHO),
    (date(1868, 10, 23), Era.MEIJI),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BasicAttributes:
    """Name, address, date of birth and sex, exactly as a signature certificate states them."""

    name: str
    """Family and given name separated by a full-width space."""
    address: str
    """From the prefecture on, no postcode."""
    date_of_birth: date
    sex: Sex
    name_substitutes: str = ""
    """One digit per character of the name; empty means no character was substituted."""
    address_substitutes: str = ""
    """One digit per character of the address; empty means none was substituted."""

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise MalformedAttributes("name must not be empty")
        if not self.address or len(self.address) > MAX_ADDRESS_LENGTH:
            raise MalformedAttributes(f"address must have 1 to {MAX_ADDRESS_LENGTH} characters")
        if not self.name_substitutes:
            object.__setattr__(self, "name_substitutes", "0" * len(self.name))
        if not self.address_substitutes:
            object.__setattr__(self, "address_substitutes", "0" * len(self.address))
        _check_flags(self.name_substitutes, self.name, "name")
        _check_flags(self.address_substitutes, self.address, "address")

    @property
    def era(self) -> Era:
        """The era of the date of birth."""
        return Era.of(self.date_of_birth)

    def to_claims(self) -> dict[str, Any]:
        """The OpenID Connect standard claims: name, address.formatted, birthdate, gender.

        ``gender`` is omitted when JPKI records the sex as unknown.
        """
        claims: dict[str, Any] = {
            "name": self.name,
            "address": {"formatted": self.address},
            "birthdate": self.date_of_birth.isoformat(),
        }
        if self.sex is Sex.MALE:
            claims["gender"] = "male"
        elif self.sex is Sex.FEMALE:
            claims["gender"] = "female"
        return claims


def _check_flags(flags: str, text: str, what: str) -> None:
    if len(flags) != len(text) or set(flags) - {"0", "1"}:
        raise MalformedAttributes(f"{what} substitute flags must be one 0 or 1 per character of the {what}")


def encode(attributes: BasicAttributes) -> list[x509.GeneralName]:
    """The subjectAltName entries that carry ``attributes``, in OID order."""
    values = (
        (oids.NAME, attributes.name),
        (oids.NAME_SUBSTITUTES, attributes.name_substitutes),
        (oids.SEX, attributes.sex.value),
        (oids.DATE_OF_BIRTH, attributes.era.value + attributes.date_of_birth.strftime("%Y%m%d")),
        (oids.ADDRESS, attributes.address),
        (oids.ADDRESS_SUBSTITUTES, attributes.address_substitutes),
    )
    return [x509.OtherName(oid, core.UTF8String(value).dump()) for oid, value in values]


def decode(certificate: x509.Certificate) -> BasicAttributes:
    """Read the four attributes from a signature certificate.

    Raises MalformedAttributes when the subjectAltName is absent, an attribute is missing or
    repeated, a value is not a UTF8String, or a value breaks its format.
    """
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise MalformedAttributes("the certificate has no subjectAltName") from exc
    found: dict[x509.ObjectIdentifier, str] = {}
    for other in names.get_values_for_type(x509.OtherName):
        if not other.type_id.dotted_string.startswith("1.2.392.200149.8.5.5."):
            continue
        if other.type_id in found:
            raise MalformedAttributes(f"attribute {other.type_id.dotted_string} appears twice")
        found[other.type_id] = _utf8(other.value, other.type_id)
    missing = [oid.dotted_string for oid in (oids.NAME, oids.SEX, oids.DATE_OF_BIRTH, oids.ADDRESS)
               if oid not in found]
    if missing:
        raise MalformedAttributes(f"attribute {missing[0]} is missing")
    try:
        sex = Sex(found[oids.SEX])
    except ValueError as exc:
        raise MalformedAttributes("sex must be 1, 2 or 3") from exc
    return BasicAttributes(
        name=found[oids.NAME],
        address=found[oids.ADDRESS],
        date_of_birth=_date_of_birth(found[oids.DATE_OF_BIRTH]),
        sex=sex,
        name_substitutes=found.get(oids.NAME_SUBSTITUTES, ""),
        address_substitutes=found.get(oids.ADDRESS_SUBSTITUTES, ""),
    )


def _utf8(value: bytes, oid: x509.ObjectIdentifier) -> str:
    try:
        parsed = core.UTF8String.load(value, strict=True)
        return str(parsed.native)
    except (ValueError, TypeError) as exc:
        raise MalformedAttributes(f"attribute {oid.dotted_string} is not a UTF8String") from exc


def _date_of_birth(text: str) -> date:
    if len(text) != 9 or not text.isdigit():  # noqa: PLR2004 - EYYYYMMDD
        raise MalformedAttributes("date of birth must be an era digit and YYYYMMDD")
    try:
        era = Era(text[0])
        day = date(int(text[1:5]), int(text[5:7]), int(text[7:9]))
    except ValueError as exc:
        raise MalformedAttributes("date of birth must be an era digit and a valid YYYYMMDD") from exc
    if era is not Era.UNKNOWN and Era.of(day) is not era:
        raise MalformedAttributes("date of birth's era digit does not match its date")
    return day
