"""J-LIS revocation information for card certificates: cached CRLs (RFC 5280 §5) and live OCSP (RFC 6960).

``idp pki sync-revocations`` fills the cache: it fetches the CRL at every distribution point of
the configured J-LIS certificates (and ``pki.jlis_crl_urls``), verifies each CRL's signature
against the configured J-LIS CA that issued it, refuses one older than the stored one (a lower
CRL number, RFC 5280 §5.2.3), and stores it in ``jlis_crls``. At enrollment ``card_status``
gathers what vouches for the card certificates under ``pki.card_revocation``
(``CardRevocationPolicy``): by default it asks each card certificate's OCSP responder (its AIA
URL) with a short timeout and falls back to the cached CRLs while they are fresh
(``pki.card_crl_max_age``, and before nextUpdate). What it could not find for a certificate is a
``RevocationGap``, the reason an enrollment refused for want of status is logged with. The
network is behind ``RevocationFetcher``.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idp.ceremonies.records import ExternalCrl

__all__ = [
    "MAX_RESPONSE_BYTES",
    "CardRevocationPolicy",
    "CardStatusSources",
    "CrlRefused",
    "FetchFailed",
    "HttpRevocationFetcher",
    "JlisRevocationCache",
    "RefusalReason",
    "RevocationFetcher",
    "RevocationGap",
    "SyncOutcome",
    "distribution_points",
]

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest CRL or OCSP response read; a real J-LIS CRL is a few megabytes."""
OCSP_NONCE_BYTES = 16

logger = logging.getLogger(__name__)


class FetchFailed(Exception):
    """A URL could not be fetched: unreachable, timed out, not 200, or too large."""


class RevocationFetcher(Protocol):
    """The network, as the cache needs it."""

    def fetch_crl(self, url: str) -> bytes:
        """The body at ``url`` (GET). Raises FetchFailed."""
        ...

    def query_ocsp(self, url: str, request_der: bytes) -> bytes:
        """POST an ``application/ocsp-request`` to ``url`` and return the body. Raises FetchFailed."""
        ...


class HttpRevocationFetcher:
    """``RevocationFetcher`` over HTTP with ``requests``; every call has ``timeout``."""

    def __init__(self, *, timeout: timedelta, session: requests.Session | None = None) -> None:
        self._timeout = timeout.total_seconds()
        self._session = session or requests.Session()

    def __repr__(self) -> str:
        return f"HttpRevocationFetcher(timeout={self._timeout}s)"

    def fetch_crl(self, url: str) -> bytes:
        """GET ``url``."""
        return self._read(lambda: self._session.get(url, timeout=self._timeout, stream=True), url)

    def query_ocsp(self, url: str, request_der: bytes) -> bytes:
        """POST the request (RFC 6960 A.1)."""
        return self._read(lambda: self._session.post(
            url, data=request_der, headers={"Content-Type": "application/ocsp-request"},
            timeout=self._timeout, stream=True,
        ), url)

    @staticmethod
    def _read(call: object, url: str) -> bytes:
        try:
            with call() as response:  # type: ignore[operator]
                if response.status_code != 200:  # noqa: PLR2004 - HTTP OK
                    raise FetchFailed(f"{url} answered HTTP {response.status_code}")
                body = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise FetchFailed(f"{url} cannot be reached: {type(exc).__name__}") from exc
        if len(body) > MAX_RESPONSE_BYTES:
            raise FetchFailed(f"{url} answered more than {MAX_RESPONSE_BYTES} bytes")
        return bytes(body)


class RefusalReason(enum.StrEnum):
    """Why a fetched CRL was not stored."""

    FETCH_FAILED = "fetch_failed"
    MALFORMED = "malformed"
    UNKNOWN_ISSUER = "unknown_issuer"
    BAD_SIGNATURE = "bad_signature"
    NO_NUMBER = "no_number"
    OLDER = "older"


class CrlRefused(Exception):
    """A CRL was not stored; ``reason`` says why."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncOutcome:
    """What happened to the CRL at one URL."""

    url: str
    stored: bool = False
    """True when the CRL replaced an older one or was the first; False when unchanged or refused."""
    issuer: str | None = None
    number: int | None = None
    next_update: datetime | None = None
    refused: CrlRefused | None = None


class CardRevocationPolicy(enum.StrEnum):
    """Where a card certificate's status may come from at enrollment (``pki.card_revocation``)."""

    OCSP_THEN_FRESH_CRL = "ocsp-then-fresh-crl"
    OCSP_ONLY = "ocsp-only"
    CRL_ONLY = "crl-only"

    @property
    def asks_ocsp(self) -> bool:
        """Whether J-LIS OCSP is asked."""
        return self is not CardRevocationPolicy.CRL_ONLY

    @property
    def trusts_crl(self) -> bool:
        """Whether a cached CRL may vouch for a card certificate (a CA certificate's always may)."""
        return self is not CardRevocationPolicy.OCSP_ONLY


class RevocationGap(enum.StrEnum):
    """Why no status could be found for a card certificate under the policy."""

    OCSP_UNAVAILABLE = "ocsp_unavailable"
    """``ocsp-only``: the responder could not be reached, or its answer was unusable."""
    CRL_MISSING = "crl_missing"
    """No CRL of the certificate's issuer is cached (``idp pki sync-revocations`` never ran)."""
    CRL_STALE = "crl_stale"
    """The cached CRL is past its nextUpdate or older than ``pki.card_crl_max_age``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CardStatusSources:
    """What may vouch for the card certificates, and what is missing for which (by serial number)."""

    crls: tuple[bytes, ...]
    ocsp_responses: tuple[bytes, ...]
    gaps: Mapping[int, RevocationGap] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class _CachedCrl:
    der: bytes
    issuer: str
    fresh: bool


def distribution_points(certificates: Sequence[x509.Certificate]) -> list[str]:
    """The http(s) CRL distribution point URLs named in ``certificates``, in order, once each."""
    urls: dict[str, None] = {}
    for certificate in certificates:
        try:
            points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        except x509.ExtensionNotFound:
            continue
        for point in points:
            for name in point.full_name or ():
                if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(("http://", "https://")):
                    urls[name.value] = None
    return list(urls)


class JlisRevocationCache:
    """The fetched J-LIS CRLs in SQL, and live OCSP for card certificates."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        authorities: Sequence[x509.Certificate],
        extra_crl_urls: Sequence[str] = (),
        fetcher: RevocationFetcher,
    ) -> None:
        """``authorities``: the configured J-LIS roots and issuing CAs, the only CRL issuers accepted."""
        self._sessions = sessions
        self._authorities = tuple(authorities)
        self._extra = tuple(extra_crl_urls)
        self._fetcher = fetcher

    def __repr__(self) -> str:
        return f"JlisRevocationCache(authorities={len(self._authorities)})"

    def urls(self) -> list[str]:
        """Every CRL URL ``sync`` fetches."""
        return list(dict.fromkeys([*distribution_points(self._authorities), *self._extra]))

    def sync(self, *, now: datetime) -> list[SyncOutcome]:
        """Fetch, check and store the CRL at every URL; one outcome per URL, errors included."""
        outcomes = []
        for url in self.urls():
            try:
                der = self._fetcher.fetch_crl(url)
            except FetchFailed as exc:
                outcomes.append(SyncOutcome(url=url, refused=CrlRefused(RefusalReason.FETCH_FAILED, str(exc))))
                continue
            try:
                outcomes.append(self.store(der, url=url, now=now))
            except CrlRefused as exc:
                outcomes.append(SyncOutcome(url=url, refused=exc))
        return outcomes

    def store(self, der: bytes, *, url: str, now: datetime) -> SyncOutcome:
        """Check a CRL and keep it unless the stored one is newer. Raises CrlRefused; then nothing changes."""
        try:
            crl = x509.load_der_x509_crl(der)
            next_update = crl.next_update_utc
        except ValueError as exc:
            raise CrlRefused(RefusalReason.MALFORMED, f"{url} did not answer a DER CRL") from exc
        if next_update is None:
            raise CrlRefused(RefusalReason.MALFORMED, f"the CRL at {url} has no nextUpdate")
        named = [candidate for candidate in self._authorities if candidate.subject == crl.issuer]
        if not named:
            raise CrlRefused(
                RefusalReason.UNKNOWN_ISSUER,
                f"the CRL at {url} is issued by {crl.issuer.rfc4514_string()}, not a configured J-LIS CA",
            )
        issuer = self._issuer_of(crl)
        if issuer is None:
            raise CrlRefused(RefusalReason.BAD_SIGNATURE, f"the CRL at {url} does not verify with its issuer's key")
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound as exc:
            raise CrlRefused(RefusalReason.NO_NUMBER, f"the CRL at {url} has no CRL number") from exc
        key_id = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
        with self._sessions.begin() as session:
            row = session.get(ExternalCrl, key_id, with_for_update=True)
            if row is not None and number < row.number:
                raise CrlRefused(
                    RefusalReason.OLDER,
                    f"the CRL at {url} is number {number}, older than the stored number {row.number}",
                )
            stored = row is None or number > row.number
            if row is None:
                row = ExternalCrl(issuer_key_id=key_id)
                session.add(row)
            if stored:
                row.issuer_name, row.url, row.number, row.der = issuer.subject.rfc4514_string(), url, number, der
                row.this_update, row.next_update, row.fetched_at = crl.last_update_utc, next_update, now
        return SyncOutcome(
            url=url, stored=stored, issuer=issuer.subject.rfc4514_string(), number=number, next_update=next_update,
        )

    def crls(self) -> tuple[bytes, ...]:
        """Every stored CRL (DER); the validator picks the current ones."""
        with self._sessions.begin() as session:
            return tuple(session.scalars(select(ExternalCrl.der).order_by(ExternalCrl.issuer_key_id)).all())

    def card_status(
        self,
        certificates: Sequence[x509.Certificate],
        *,
        policy: CardRevocationPolicy,
        crl_max_age: timedelta,
        now: datetime,
    ) -> CardStatusSources:
        """The OCSP answers and CRLs that may vouch for card ``certificates`` under ``policy``.

        A cached CRL counts while it is fresh: before its nextUpdate and issued at most
        ``crl_max_age`` before ``now``. Under ``ocsp-only`` the card certificates' issuers' CRLs
        are left out (the root's CRL still vouches for the issuing CAs). Path validation decides;
        the gaps say why it will find nothing for a certificate, and each is logged.
        """
        cached = self._cached_crls(crl_max_age=crl_max_age, now=now)
        leaf_issuers = {certificate.issuer.rfc4514_string() for certificate in certificates}
        crls = tuple(crl.der for crl in cached
                     if crl.fresh and (policy.trusts_crl or crl.issuer not in leaf_issuers))
        answers: list[bytes] = []
        gaps: dict[int, RevocationGap] = {}
        for certificate in certificates:
            answer = self._ocsp(certificate) if policy.asks_ocsp else None
            if answer is not None:
                answers.append(answer)
                continue
            gap = _gap(certificate, cached, policy)
            if gap is not None:
                logger.warning("enrollment.revocation_unavailable policy=%s cause=%s", policy.value, gap.value)
                gaps[certificate.serial_number] = gap
        return CardStatusSources(crls=crls, ocsp_responses=tuple(answers), gaps=gaps)

    def _cached_crls(self, *, crl_max_age: timedelta, now: datetime) -> list[_CachedCrl]:
        query = select(ExternalCrl.der, ExternalCrl.issuer_name, ExternalCrl.this_update, ExternalCrl.next_update)
        with self._sessions.begin() as session:
            rows = session.execute(query.order_by(ExternalCrl.issuer_key_id)).all()
        return [_CachedCrl(der=row[0], issuer=row[1], fresh=now - crl_max_age <= row[2] and now < row[3])
                for row in rows]

    def ocsp_responses(self, certificates: Sequence[x509.Certificate]) -> tuple[bytes, ...]:
        """Live OCSP answers for ``certificates`` from their AIA responders, best effort.

        A certificate whose issuer is not configured, that names no responder, or whose
        responder cannot be reached or answers with another nonce gets no answer: the caller
        falls back to the cached CRLs. The answers are unverified here; path validation checks them.
        """
        answers = []
        for certificate in certificates:
            answer = self._ocsp(certificate)
            if answer is not None:
                answers.append(answer)
        return tuple(answers)

    def _ocsp(self, certificate: x509.Certificate) -> bytes | None:
        issuer = self._issuer_of(certificate)
        url = _ocsp_url(certificate)
        if issuer is None or url is None:
            return None
        nonce = secrets.token_bytes(OCSP_NONCE_BYTES)
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(certificate, issuer, hashes.SHA256())
            .add_extension(x509.OCSPNonce(nonce), critical=False)
            .build()
        )
        try:
            answer = self._fetcher.query_ocsp(url, request.public_bytes(serialization.Encoding.DER))
            response = ocsp.load_der_ocsp_response(answer)
        except (FetchFailed, ValueError) as exc:
            logger.warning("enrollment.ocsp_unavailable url=%s error=%s", url, type(exc).__name__)
            return None
        # RFC 6960 §4.4.1: the nonce "cryptographically binds a request and a response".
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL or _nonce(response) != nonce:
            logger.warning("enrollment.ocsp_unavailable url=%s error=unusable_response", url)
            return None
        return answer

    def _issuer_of(self, signed: x509.Certificate | x509.CertificateRevocationList) -> x509.Certificate | None:
        """The configured authority whose key signed ``signed`` (by signature, never by name alone)."""
        for candidate in self._authorities:
            if candidate.subject != signed.issuer:
                continue
            if _signed_by(signed, candidate):
                return candidate
        return None


def _gap(
    certificate: x509.Certificate, cached: Sequence[_CachedCrl], policy: CardRevocationPolicy,
) -> RevocationGap | None:
    """What is missing for ``certificate`` once OCSP gave nothing; None when a fresh CRL may vouch."""
    if not policy.trusts_crl:
        return RevocationGap.OCSP_UNAVAILABLE
    issuer = certificate.issuer.rfc4514_string()
    own = [crl for crl in cached if crl.issuer == issuer]
    if not own:
        return RevocationGap.CRL_MISSING
    if not any(crl.fresh for crl in own):
        return RevocationGap.CRL_STALE
    return None


def _signed_by(signed: x509.Certificate | x509.CertificateRevocationList, candidate: x509.Certificate) -> bool:
    if isinstance(signed, x509.CertificateRevocationList):
        return signed.is_signature_valid(candidate.public_key())  # type: ignore[arg-type]
    try:
        signed.verify_directly_issued_by(candidate)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _nonce(response: ocsp.OCSPResponse) -> bytes | None:
    try:
        return response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _ocsp_url(certificate: x509.Certificate) -> str | None:
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for description in access:
        location = description.access_location
        if (description.access_method == AuthorityInformationAccessOID.OCSP
                and isinstance(location, x509.UniformResourceIdentifier)):
            return location.value
    return None
