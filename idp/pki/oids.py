"""Object identifiers of the JPKI profile, of WebAuthn attestation, and of our own certificates.

Kept in one place so that a wrong arc (public code swaps ``.5``/``.6`` and reads ``.2`` as the
date of birth) is wrong once and pinned by tests that read known values back.
"""

from __future__ import annotations

from cryptography.x509 import ObjectIdentifier

__all__ = [
    "ADDRESS",
    "ADDRESS_SUBSTITUTES",
    "CARD_AUTH_POLICY",
    "CARD_SIGN_POLICY",
    "DATE_OF_BIRTH",
    "FIDO_AAGUID",
    "MYNA_ARC",
    "NAME",
    "NAME_SUBSTITUTES",
    "SEX",
    "SMARTPHONE_AUTH_POLICY",
    "SMARTPHONE_SIGN_POLICY",
]

# J-LIS basic-attribute arc: subjectAltName otherName type-ids, values UTF8String.
_JLIS_ATTRIBUTES = "1.2.392.200149.8.5.5"
NAME = ObjectIdentifier(f"{_JLIS_ATTRIBUTES}.1")
"""Family and given name separated by a full-width space (U+3000)."""
NAME_SUBSTITUTES = ObjectIdentifier(f"{_JLIS_ATTRIBUTES}.2")
"""One digit per character of the name: 1 where a substitute character was used, else 0."""
SEX = ObjectIdentifier(f"{_JLIS_ATTRIBUTES}.3")
"""1 male, 2 female, 3 unknown."""
DATE_OF_BIRTH = ObjectIdentifier(f"{_JLIS_ATTRIBUTES}.4")
"""Era digit then the Gregorian date: EYYYYMMDD."""
ADDRESS = ObjectIdentifier(f"{_JLIS_ATTRIBUTES}.5")
"""From the prefecture, no postcode, at most 200 characters."""
ADDRESS_SUBSTITUTES = ObjectIdentifier(f"{_JLIS_ATTRIBUTES}.6")
"""As NAME_SUBSTITUTES, one digit per character of the address."""

# J-LIS certificate policies of the card certificates.
CARD_AUTH_POLICY = ObjectIdentifier("1.2.392.200149.8.5.1.3.30")
CARD_SIGN_POLICY = ObjectIdentifier("1.2.392.200149.8.5.1.1.20")

# FIDO: the AAGUID extension of a packed attestation certificate (WebAuthn L3 §8.2.1).
FIDO_AAGUID = ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")

# Our own arc for the smartphone certificate policies, which JPKI does not publish. A UUID OID
# (ITU-T X.667, 2.25.<uuid as integer>) needs no registration and cannot collide.
MYNA_ARC = "2.25.75866854229242772120746479556451608109"
SMARTPHONE_AUTH_POLICY = ObjectIdentifier(f"{MYNA_ARC}.1.1")
SMARTPHONE_SIGN_POLICY = ObjectIdentifier(f"{MYNA_ARC}.1.2")
