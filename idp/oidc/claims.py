"""Identity claims: the consented basic attributes, as standard claims and as ``verified_claims``.

Attributes come only from the person's smartphone signature certificate, decoded by
``idp.pki.attributes``, and only those the person approved for this client on the phone. Each
release carries them twice: as OIDC Core §5.1 standard claims and as OpenID Connect for Identity
Assurance 1.0 ``verified_claims`` whose evidence is the certificate-based electronic signature
(evidence type ``electronic_signature``: issuer, serial number, time). The serial number is
released only inside that evidence (architecture.md: a serial never identifies the person).

``trust_framework`` is ``jp_jpki``: the Public Certification Service for Individuals (JPKI) run
by J-LIS under the Act on Certification Services for Electronic Signatures by J-LIS; OIDC4IDA's
predefined values have no entry for it, and this is the value the portal documents.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509

from idp.oidc.authorization import ATTRIBUTE_SCOPES
from idp.pki import attributes

__all__ = [
    "ATTRIBUTE_CLAIMS",
    "EVIDENCE_TYPE",
    "SIGNATURE_TYPE",
    "TRUST_FRAMEWORK",
    "identity_claims",
    "requested_claims",
]

TRUST_FRAMEWORK = "jp_jpki"
EVIDENCE_TYPE = "electronic_signature"
SIGNATURE_TYPE = "jp_jpki_smartphone_signature"
"""The smartphone edition of the JPKI signature certificate (署名用電子証明書)."""
ATTRIBUTE_CLAIMS = tuple(ATTRIBUTE_SCOPES.values())


def requested_claims(*, scope: Iterable[str], claims: Mapping[str, Any] | None, location: str) -> frozenset[str]:
    """The attribute claims asked for at ``location`` (userinfo or id_token), OIDC Core §5.4/§5.5.

    Scopes ask for their claims at userinfo; the ``claims`` parameter asks at either.
    """
    wanted: set[str] = set()
    if location == "userinfo":
        wanted.update(ATTRIBUTE_SCOPES[item] for item in scope if item in ATTRIBUTE_SCOPES)
    requested = (claims or {}).get(location) or {}
    wanted.update(name for name in requested if name in ATTRIBUTE_CLAIMS)
    verified = requested.get("verified_claims")
    if isinstance(verified, dict) and isinstance(verified.get("claims"), dict):
        wanted.update(name for name in verified["claims"] if name in ATTRIBUTE_CLAIMS)
    return frozenset(wanted)


def identity_claims(
    *, certificate: x509.Certificate, release: Iterable[str], verified_at: datetime,
) -> dict[str, Any]:
    """The standard claims in ``release`` read from ``certificate``, and their ``verified_claims``.

    Empty when nothing is to be released. Raises ``attributes.MalformedAttributes`` for a
    certificate whose attributes cannot be read.
    """
    released = frozenset(release)
    if not released:
        return {}
    everything, issuer = _read(certificate)
    standard = {name: value for name, value in everything.items() if name in released}
    if not standard:
        return {}
    time = verified_at.isoformat(timespec="seconds")
    return {
        **standard,
        "verified_claims": {
            "verification": {
                "trust_framework": TRUST_FRAMEWORK,
                "time": time,
                "evidence": [{
                    "type": EVIDENCE_TYPE,
                    "signature_type": SIGNATURE_TYPE,
                    "issuer": issuer,
                    "serial_number": format(certificate.serial_number, "X"),
                    "created_at": time,
                }],
            },
            "claims": standard,
        },
    }


@functools.lru_cache(maxsize=4096)
def _read(certificate: x509.Certificate) -> tuple[Mapping[str, Any], str]:
    """The certificate's attribute claims and issuer name, read once per certificate.

    A certificate never changes (it hashes and compares by its DER), and every userinfo call of
    every grant on it would otherwise decode the same subjectAltName again.
    """
    return MappingProxyType(attributes.decode(certificate).to_claims()), certificate.issuer.rfc4514_string()
