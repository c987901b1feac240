"""Helpers for the linking tests: a fixed time, a card holder, and feed pages made (or forged) on purpose."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.jwk import RSAKey

from idp.pki.attributes import BasicAttributes, Sex
from idp.pki.profiles import Issuer
from smartphone.jlis import JLis
from smartphone.jlis_linking import sign_page

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
PASSPHRASE = b"linking test passphrase"
TARO = BasicAttributes(name="山田　太郎", address="東京都千代田区千代田1-1", date_of_birth=date(1990, 4, 1),
                       sex=Sex.MALE)
HANAKO = BasicAttributes(name="佐藤　花子", address="大阪府大阪市北区1-1", date_of_birth=date(1985, 7, 7),
                         sex=Sex.FEMALE)


def issue_taro(jlis: JLis, attributes: BasicAttributes = TARO):
    return jlis.issue_card(attributes=attributes, prefecture="東京都", city="千代田区", auth_pin="1234",
                           sign_pin="ABC123", now=NOW)


def page_of(jlis: JLis, *, since: int = 0, entries: list[dict[str, Any]] | None = None, more: bool = False,
            signer: Issuer | None = None, now: datetime = NOW) -> str:
    """A page as J-LIS signs it; ``entries``/``signer`` replace what J-LIS would put there."""
    if entries is None:
        entries, more = jlis.linking.since(since)
    return sign_page(signer=signer or jlis.linking_signer, entries=entries, since=since, more=more,
                     issuer_url=f"{jlis.base_url}/linking", now=now)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def payload_of(page: str) -> dict[str, Any]:
    return json.loads(unb64url(page.split(".")[1]))


def with_payload(page: str, payload: dict[str, Any]) -> str:
    """``page`` with its payload replaced and its signature kept: a forgery."""
    header, _, signature = page.split(".")
    return f"{header}.{b64url(json.dumps(payload).encode())}.{signature}"


def unsigned(page: str) -> str:
    """``page`` re-headed with ``alg: none`` and its signature dropped (RFC 7515 §A.5 style)."""
    header = json.loads(unb64url(page.split(".", maxsplit=1)[0]))
    header["alg"] = "none"
    return f"{b64url(json.dumps(header).encode())}.{page.split('.')[1]}."


def signed_payload(jlis: JLis, payload: dict[str, Any], *, signer: Issuer | None = None, **header: Any) -> str:
    """``payload`` signed as it is by the J-LIS linking signer (or ``signer``), with ``header``
    entries added or replaced: to reach the checks that come after the signature."""
    signer = signer or jlis.linking_signer
    der = signer.certificate.public_bytes(serialization.Encoding.DER)
    protected = {"alg": "RS256", "typ": "jlis-linking+json", "x5c": [base64.b64encode(der).decode()], **header}
    protected = {key: value for key, value in protected.items() if value is not None}
    return jws.serialize_compact(protected, json.dumps(payload).encode(), RSAKey.import_key(signer.private_key),
                                 algorithms=["RS256"])
