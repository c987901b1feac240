"""The simulated J-LIS linking data: which card certificates belong to one person, and which replaces which.

Two kinds of link, as J-LIS gives them to verifiers (``docs/linking.md``):

- ``same_person``: this user-authentication certificate and this signature certificate are one
  person's (every issuance, renewal, move and reissue writes one);
- ``successor``: this new certificate replaces that old one (renewal ``superseded``, a move
  ``affiliationChanged``, a lost card's reissue ``keyCompromise``).

Each link gets the next sequence number in ``linking.json`` (appended under an advisory lock,
written atomically). A feed page is a compact JWS (RFC 7515, joserfc) signed RS256 by the J-LIS
linking-data signer, whose certificate (profile ``jlis-linking-signer``, issued by the J-LIS
root) travels in ``x5c``. Certificates are named by issuer key identifier and serial, never by name.
"""

from __future__ import annotations

import base64
import enum
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.jwk import RSAKey

from idp.pki.authority import CertificateAuthority
from idp.pki.profiles import JLIS_LINKING_SIGNER, Issuer, KeyAlgorithm, generate_key, jlis_name
from idp.pki.registry import CertificateRef
from smartphone.files import CorruptState, locked, write_atomically
from smartphone.keys import seal_key, unseal_key

__all__ = [
    "FEED_TYPE",
    "MAX_PAGE_SIZE",
    "SIGNER_VALIDITY",
    "CardRef",
    "LinkKind",
    "LinkingLog",
    "load_or_issue_signer",
    "sign_page",
]

FEED_TYPE = "jlis-linking+json"
"""The JWS ``typ`` of a feed page, so a J-LIS signature made for anything else is never a page."""
MAX_PAGE_SIZE = 1000
"""The most entries one page holds; a verifier asks again from the page's ``next``."""
SIGNER_VALIDITY = timedelta(days=5 * 365)
"""How long a linking-data signer certificate is valid; a new one is issued when it has run out."""
SIGNER_UNIT = "JPKI linking data"

_FORMAT = 1
_SIGNER_FILE = "linking-signer.json"


class LinkKind(enum.StrEnum):
    """The two kinds of link J-LIS publishes."""

    SAME_PERSON = "same_person"
    SUCCESSOR = "successor"


@dataclass(frozen=True, slots=True, kw_only=True)
class CardRef:
    """A card certificate as a link names it: which key, its issuer's key id and serial, its end."""

    kind: str
    """``auth`` or ``sign``."""
    issuer_key_id: bytes
    serial_number: int
    not_after: datetime

    @classmethod
    def of(cls, certificate: x509.Certificate, kind: str) -> CardRef:
        """The reference to ``certificate``. Raises ValueError when it names no authority key."""
        ref = CertificateRef.of(certificate)
        return cls(kind=kind, issuer_key_id=ref.issuer_key_id, serial_number=ref.serial_number,
                   not_after=certificate.not_valid_after_utc)

    def to_json(self) -> dict[str, str]:
        """The reference as the feed carries it (the serial in decimal, as a string: JSON numbers lose bits)."""
        return {"kind": self.kind, "issuer": self.issuer_key_id.hex(), "serial": str(self.serial_number),
                "not_after": self.not_after.isoformat()}


class LinkingLog:
    """Every link J-LIS has published, numbered from 1, in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"LinkingLog({str(self.path)!r})"

    def same_person(self, *, auth: CardRef, sign: CardRef, now: datetime) -> dict[str, Any]:
        """Publish that ``auth`` and ``sign`` are one person's; returns the entry."""
        return self._append({"kind": LinkKind.SAME_PERSON.value, "auth": auth.to_json(), "sign": sign.to_json()}, now)

    def successor(self, *, old: CardRef, new: CardRef, reason: x509.ReasonFlags, now: datetime) -> dict[str, Any]:
        """Publish that ``new`` replaces ``old`` (revoked for ``reason``); returns the entry."""
        if old.kind != new.kind:
            raise ValueError("a certificate is succeeded by one of the same kind")
        return self._append({"kind": LinkKind.SUCCESSOR.value, "old": old.to_json(), "new": new.to_json(),
                             "reason": reason.value}, now)

    def since(self, since: int, *, limit: int = MAX_PAGE_SIZE) -> tuple[list[dict[str, Any]], bool]:
        """The entries after sequence number ``since``, at most ``limit``, and whether more follow."""
        entries = [entry for entry in self._read()["entries"] if entry["seq"] > since]
        return entries[:limit], len(entries) > limit

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, in order."""
        return list(self._read()["entries"])

    def _append(self, link: dict[str, Any], now: datetime) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path):
            data = self._read()
            entry = {"seq": len(data["entries"]) + 1, **link, "at": now.isoformat()}
            data["entries"].append(entry)
            write_atomically(self.path, json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"))
        return entry

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {"format": _FORMAT, "entries": []}
        except ValueError as exc:
            raise CorruptState(f"{self.path} is not a linking log") from exc
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("entries"), list):
            raise CorruptState(f"{self.path} is not a linking log")
        return data


def sign_page(*, signer: Issuer, entries: Sequence[Mapping[str, Any]], since: int, more: bool, issuer_url: str,
              now: datetime) -> str:
    """One feed page as a compact JWS (RS256, ``x5c`` = the signer certificate).

    ``since`` is the cursor the page starts after; ``next`` the last sequence number it holds
    (``since`` when it holds none), which the verifier asks from next time.
    """
    payload = {
        "iss": issuer_url,
        "iat": int(now.timestamp()),
        "since": since,
        "next": entries[-1]["seq"] if entries else since,
        "more": more,
        "entries": list(entries),
    }
    header = {
        "alg": "RS256",
        "typ": FEED_TYPE,
        "x5c": [base64.b64encode(signer.certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")],
    }
    if not isinstance(signer.private_key, rsa.RSAPrivateKey):
        raise CorruptState("the linking-data signer key must be an RSA key")
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return jws.serialize_compact(header, body, RSAKey.import_key(signer.private_key), algorithms=["RS256"])


def load_or_issue_signer(directory: Path, *, root: CertificateAuthority, passphrase: bytes, now: datetime) -> Issuer:
    """The linking-data signer kept in ``directory/linking-signer.json``, issued by ``root`` (and
    stored: the certificate in PEM, the key as encrypted PKCS#8 PEM inline, as ``vendor.json``
    keeps the vendor's) when there is none yet or the stored one has expired.

    Raises WrongPassphrase or CorruptState.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / _SIGNER_FILE
    with locked(path):
        stored = _stored_signer(path, passphrase)
        if stored is not None and stored.certificate.not_valid_after_utc > now:
            return stored
        key = generate_key(KeyAlgorithm.RSA_2048)
        certificate = root.issue(
            profile=JLIS_LINKING_SIGNER, subject=_signer_subject(), public_key=key.public_key(),
            now=now, not_after=now + SIGNER_VALIDITY,
        )
        record = {
            "format": _FORMAT,
            "certificate": certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            "key": seal_key(key, passphrase).decode("ascii"),
        }
        write_atomically(path, json.dumps(record, indent=2).encode("utf-8"))
    return Issuer(certificate, key)


def _stored_signer(path: Path, passphrase: bytes) -> Issuer | None:
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise CorruptState(f"{path} is not a linking-data signer record") from exc
    try:
        certificate = x509.load_pem_x509_certificate(record["certificate"].encode("ascii"))
        wrapped = record["key"].encode("ascii")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CorruptState(f"{path} is not a linking-data signer record") from exc
    key = unseal_key(wrapped, passphrase)
    if certificate.public_key() != key.public_key():
        raise CorruptState("the stored linking-data signer key does not match its certificate")
    return Issuer(certificate, key)


def _signer_subject() -> x509.Name:
    """``C=JP, O=JPKI-TEST, OU=JPKI linking data, OU=<agency>, CN=<random id>``: one name per signer."""
    return x509.Name([*jlis_name(SIGNER_UNIT), x509.NameAttribute(x509.NameOID.COMMON_NAME, secrets.token_hex(8))])

