"""J-LIS linking data: fetch the feed, verify each page, store the links and follow a person through them.

J-LIS publishes which card certificates are one person's (``same_person``: a user-authentication
and a signature certificate) and which new certificate replaces which old one (``successor``:
renewal, a move, a lost card's reissue). The feed is a sequence of pages, each a compact JWS
(RFC 7515) signed RS256 by the J-LIS linking-data signer, whose certificate travels in ``x5c``
and must be issued by a configured J-LIS root with the linking-data extended key usage
(``docs/linking.md``). ``verify_page`` is the pure check; ``LinkingStore.apply`` stores a verified
page, all or nothing, and attaches each newly linked certificate to the person who holds the
other one, so an enrollment with a renewed, moved or reissued card finds that person.

The portal keeps a cursor: the sequence number of the last link stored. A page must start exactly
there (``since``), hold consecutive sequence numbers and end at its ``next``; anything else is a
replay, a gap or a reordering and is refused. Certificates are named by issuer key identifier and
serial, and neither ever leaves the portal.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import RSAKey
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from idp.ceremonies.linking_records import JlisLink, JlisLinkingCursor
from idp.ceremonies.records import CardCertificateKind, LinkSource, PersonCardCertificate
from idp.pki.profiles import LINKING_DATA_SIGNING

__all__ = [
    "FEED",
    "FEED_TYPE",
    "MAX_PAGE_AGE",
    "MAX_PAGE_BYTES",
    "CardRef",
    "HttpLinkingFetcher",
    "Link",
    "LinkKind",
    "LinkingFetcher",
    "LinkingRefused",
    "LinkingStore",
    "PersonCertificates",
    "Reason",
    "SyncResult",
    "VerifiedPage",
    "sync_linking",
    "verify_page",
]

FEED = "jlis"
FEED_TYPE = "jlis-linking+json"
"""The JWS ``typ`` of a feed page: a J-LIS signature over anything else is not a page."""
MAX_PAGE_AGE = timedelta(minutes=10)
"""How old a page may be (its ``iat``) when verified: a page captured earlier cannot be served again."""
CLOCK_SKEW = timedelta(minutes=1)
"""How far in the future a page's ``iat`` may be, for clocks that disagree a little."""
MAX_PAGE_BYTES = 4 * 1024 * 1024
"""Largest page read; a full page of 1000 links is about 600 kB."""
MAX_PAGES_PER_SYNC = 1000
_SERIAL_DIGITS = 48
MAX_HEADER_BYTES = 8 * 1024
"""A page's protected header carries the signer certificate (``x5c``): about 1.5 kB for RSA-2048."""


def _registry() -> jws.JWSRegistry:
    """joserfc's registry for RS256 only, with room for ``x5c`` and a full page (its defaults are
    512 bytes of header and 128 kB of payload)."""
    registry = jws.JWSRegistry(algorithms=["RS256"])
    registry.max_header_length = MAX_HEADER_BYTES
    registry.max_payload_length = MAX_PAGE_BYTES
    return registry


_REGISTRY = _registry()

logger = logging.getLogger(__name__)


class Reason(enum.StrEnum):
    """Why a feed page, or a link on it, was refused."""

    FETCH_FAILED = "fetch_failed"
    MALFORMED = "malformed"
    UNSIGNED = "unsigned"
    WRONG_TYPE = "wrong_type"
    NO_SIGNER_CERTIFICATE = "no_signer_certificate"
    UNTRUSTED_SIGNER = "untrusted_signer"
    NOT_A_LINKING_SIGNER = "not_a_linking_signer"
    SIGNER_EXPIRED = "signer_expired"
    SIGNER_REVOKED = "signer_revoked"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"
    REPLAYED = "replayed"
    GAP = "gap"
    OUT_OF_ORDER = "out_of_order"
    OTHER_PERSON = "other_person"
    """A link ties a certificate of one person to a certificate of another: never merged."""


class LinkingRefused(Exception):
    """A feed page was not stored (nothing of it was); ``reason`` says why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LinkKind(enum.StrEnum):
    """The two kinds of link J-LIS publishes."""

    SAME_PERSON = "same_person"
    SUCCESSOR = "successor"


@dataclass(frozen=True, slots=True, kw_only=True)
class CardRef:
    """A card certificate named by a link: which key, its issuer's key identifier and serial, its end."""

    kind: CardCertificateKind
    issuer_key_id: bytes
    serial_number: int
    not_after: datetime

    @property
    def key(self) -> tuple[bytes, str]:
        """The primary key of ``person_card_certificates``."""
        return self.issuer_key_id, str(self.serial_number)


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """One verified link. ``same_person``: first is the user-authentication certificate, second the
    signature certificate; ``successor``: first is the old certificate, second the new one."""

    seq: int
    kind: LinkKind
    first: CardRef
    second: CardRef
    reason: str | None
    published_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedPage:
    """A feed page whose signature, signer and order were checked; only ``verify_page`` makes one."""

    since: int
    next: int
    more: bool
    links: tuple[Link, ...]


def verify_page(
    *, page: str, roots: Sequence[x509.Certificate], crls: Sequence[bytes], cursor: int, now: datetime,
) -> VerifiedPage:
    """Check one feed page: its signature, its signer, its freshness and its place after ``cursor``.

    ``roots`` are the configured J-LIS roots (the signer must be issued by one); ``crls`` the
    J-LIS CRLs the revocation cache verified. Checks come in this order, one reason each:
    a compact JWS, signed (not ``alg: none``), of type ``jlis-linking+json``, with the signer
    certificate in ``x5c``, issued by a J-LIS root, carrying the linking-data purpose, valid
    now, not revoked, whose key verifies the RS256 signature; then the payload: fresh, starting
    at ``cursor``, consecutive, ending at ``next``. Raises LinkingRefused; reads and writes no storage.
    """
    try:
        token = jws.extract_compact(page.encode("ascii"), registry=_REGISTRY)
        header = token.headers()
    except (JoseError, UnicodeEncodeError, ValueError) as exc:
        raise LinkingRefused(Reason.MALFORMED, "the linking feed page is not a compact JWS") from exc
    if header.get("alg") == "none" or not page.rsplit(".", 1)[-1]:
        raise LinkingRefused(Reason.UNSIGNED, "the linking feed page is not signed")
    if header.get("typ") != FEED_TYPE:
        raise LinkingRefused(Reason.WRONG_TYPE, f"the signed document is not a linking feed page ({FEED_TYPE})")
    signer = _signer_certificate(header)
    _check_signer(signer, roots=roots, crls=crls, now=now)
    # Unverified until deserialize_compact returns: only the signer's key, only RS256.
    try:
        verified = jws.deserialize_compact(page, RSAKey.import_key(signer.public_key()),  # type: ignore[arg-type]
                                           algorithms=["RS256"], registry=_REGISTRY)
    except (BadSignatureError, JoseError, ValueError) as exc:
        raise LinkingRefused(Reason.BAD_SIGNATURE, "the linking feed page's signature does not verify") from exc
    return _read_payload(verified.payload, cursor=cursor, now=now)


def _signer_certificate(header: Mapping[str, Any]) -> x509.Certificate:
    chain = header.get("x5c")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
        raise LinkingRefused(Reason.NO_SIGNER_CERTIFICATE, "the linking feed page carries no signer certificate")
    try:
        return x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (ValueError, binascii.Error) as exc:
        raise LinkingRefused(Reason.MALFORMED, "the linking feed page's signer certificate is unreadable") from exc


def _check_signer(
    signer: x509.Certificate, *, roots: Sequence[x509.Certificate], crls: Sequence[bytes], now: datetime,
) -> None:
    """The signer must be issued by a configured J-LIS root (by signature, never by name alone),
    be meant for linking data, be valid now and not be on that root's CRL."""
    issuer = next((root for root in roots if _issued_by(signer, root)), None)
    if issuer is None:
        raise LinkingRefused(Reason.UNTRUSTED_SIGNER, "the linking feed page is not signed by a J-LIS key")
    try:
        purposes = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        purposes = x509.ExtendedKeyUsage([])
    if LINKING_DATA_SIGNING not in purposes:
        raise LinkingRefused(Reason.NOT_A_LINKING_SIGNER, "the J-LIS key that signed the page is not for linking data")
    if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
        raise LinkingRefused(Reason.SIGNER_EXPIRED, "the linking-data signer certificate is not valid now")
    if _revoked(signer, issuer, crls):
        raise LinkingRefused(Reason.SIGNER_REVOKED, "the linking-data signer certificate is revoked")


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _revoked(signer: x509.Certificate, issuer: x509.Certificate, crls: Sequence[bytes]) -> bool:
    for der in crls:
        crl = x509.load_der_x509_crl(der)
        if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            continue
        if crl.get_revoked_certificate_by_serial_number(signer.serial_number) is not None:
            return True
    return False


def _read_payload(payload: bytes, *, cursor: int, now: datetime) -> VerifiedPage:
    try:
        body = json.loads(payload)
        since, last, more, issued_at = body["since"], body["next"], body["more"], body["iat"]
        entries = body["entries"]
    except (ValueError, TypeError, KeyError) as exc:
        raise LinkingRefused(Reason.MALFORMED, "the linking feed page is not a feed page") from exc
    if not all(_is_int(value) for value in (since, last, issued_at)) or not isinstance(more, bool) \
            or not isinstance(entries, list):
        raise LinkingRefused(Reason.MALFORMED, "the linking feed page is not a feed page")
    try:
        issued = datetime.fromtimestamp(issued_at, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise LinkingRefused(Reason.MALFORMED, "the linking feed page is not a feed page") from exc
    if issued < now - MAX_PAGE_AGE or issued > now + CLOCK_SKEW:
        raise LinkingRefused(Reason.STALE, "the linking feed page is too old, or from the future")
    if since < cursor:
        raise LinkingRefused(Reason.REPLAYED, f"the page starts after link {since}, already stored up to {cursor}")
    if since > cursor:
        raise LinkingRefused(Reason.GAP, f"the page starts after link {since}, but only {cursor} are stored")
    links = tuple(_read_link(entry) for entry in entries)
    expected = list(range(since + 1, since + 1 + len(links)))
    if [link.seq for link in links] != expected or last != (expected[-1] if expected else since):
        raise LinkingRefused(Reason.OUT_OF_ORDER, "the page's links are not consecutive from its start to its end")
    return VerifiedPage(since=since, next=last, more=more, links=links)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_link(entry: object) -> Link:
    if not isinstance(entry, Mapping):
        raise LinkingRefused(Reason.MALFORMED, "a link on the feed page is malformed")
    try:
        kind = LinkKind(entry["kind"])
        first, second = ("auth", "sign") if kind is LinkKind.SAME_PERSON else ("old", "new")
        link = Link(
            seq=entry["seq"], kind=kind, first=_read_ref(entry[first]), second=_read_ref(entry[second]),
            reason=entry.get("reason"), published_at=datetime.fromisoformat(entry["at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LinkingRefused(Reason.MALFORMED, "a link on the feed page is malformed") from exc
    if not _is_int(link.seq) or link.published_at.tzinfo is None or not (
        link.reason is None or isinstance(link.reason, str)
    ):
        raise LinkingRefused(Reason.MALFORMED, "a link on the feed page is malformed")
    # same_person: an auth and a sign certificate, in that order; successor: two of one kind.
    expected_second = CardCertificateKind.SIGN if kind is LinkKind.SAME_PERSON else link.first.kind
    if link.second.kind is not expected_second or (kind is LinkKind.SAME_PERSON
                                                   and link.first.kind is not CardCertificateKind.AUTH):
        raise LinkingRefused(Reason.MALFORMED, "a link on the feed page names certificates of the wrong kinds")
    return link


def _read_ref(ref: Mapping[str, Any]) -> CardRef:
    serial = ref["serial"]
    if not isinstance(serial, str) or not serial.isdigit() or len(serial) > _SERIAL_DIGITS:
        raise ValueError("a serial is a decimal string")
    not_after = datetime.fromisoformat(ref["not_after"])
    if not_after.tzinfo is None:
        raise ValueError("not_after needs a time zone")
    return CardRef(kind=CardCertificateKind(ref["kind"]), issuer_key_id=bytes.fromhex(ref["issuer"]),
                   serial_number=int(serial), not_after=not_after)


# -- storing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonCertificates:
    """For an operator: the card certificates that make up a person, and the links between them."""

    person_id: str
    certificates: tuple[PersonCardCertificate, ...]
    links: tuple[JlisLink, ...]


class LinkingStore:
    """The stored links and the feed's cursor, in SQL."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __repr__(self) -> str:
        return "LinkingStore()"

    def cursor(self) -> int:
        """The sequence number of the last link stored (0 before the first page)."""
        with self._sessions.begin() as session:
            row = session.get(JlisLinkingCursor, FEED)
            return 0 if row is None else row.position

    def apply(self, page: VerifiedPage, *, now: datetime) -> int:
        """Store ``page``'s links and attach each new certificate to its person, in one transaction.

        Returns how many certificates were attached to a person. Raises LinkingRefused (REPLAYED,
        GAP: the cursor moved since the page was verified; OTHER_PERSON) and then stores nothing.
        """
        try:
            return self._apply(page, now=now)
        except IntegrityError as exc:  # a concurrent sync stored the cursor or a certificate first
            raise LinkingRefused(Reason.REPLAYED, "another sync stored this page meanwhile") from exc

    def _apply(self, page: VerifiedPage, *, now: datetime) -> int:
        with self._sessions.begin() as session:
            row = session.get(JlisLinkingCursor, FEED, with_for_update=True)
            position = 0 if row is None else row.position
            if page.since != position:
                reason = Reason.REPLAYED if page.since < position else Reason.GAP
                raise LinkingRefused(reason, f"the page starts after link {page.since}, the cursor is at {position}")
            attached = 0
            for link in page.links:
                session.add(_record(link, now))
                attached += _attach(session, link, now)
            if row is None:
                session.add(JlisLinkingCursor(feed=FEED, position=page.next, updated_at=now))
            else:
                row.position, row.updated_at = page.next, now
        return attached

    def person(self, person_id: str) -> PersonCertificates | None:
        """The person's card certificates and the stored links that name any of them; None if unknown."""
        with self._sessions.begin() as session:
            certificates = tuple(session.scalars(
                select(PersonCardCertificate)
                .where(PersonCardCertificate.person_id == person_id)
                .order_by(PersonCardCertificate.linked_at, PersonCardCertificate.linked_by, PersonCardCertificate.kind),
            ).all())
            if not certificates:
                return None
            sides = [
                (JlisLink.first_issuer_key_id == row.issuer_key_id) & (JlisLink.first_serial == row.serial)
                for row in certificates
            ] + [
                (JlisLink.second_issuer_key_id == row.issuer_key_id) & (JlisLink.second_serial == row.serial)
                for row in certificates
            ]
            links = tuple(session.scalars(select(JlisLink).where(or_(*sides)).order_by(JlisLink.seq)).all())
            session.expunge_all()
        return PersonCertificates(person_id=person_id, certificates=certificates, links=links)


def _record(link: Link, now: datetime) -> JlisLink:
    return JlisLink(
        seq=link.seq, kind=link.kind.value,
        first_kind=link.first.kind.value, first_issuer_key_id=link.first.issuer_key_id,
        first_serial=str(link.first.serial_number),
        second_kind=link.second.kind.value, second_issuer_key_id=link.second.issuer_key_id,
        second_serial=str(link.second.serial_number),
        reason=link.reason, published_at=link.published_at, received_at=now,
    )


def _attach(session: Session, link: Link, now: datetime) -> int:
    """Give the certificate a link adds the person of the certificate it is linked to.

    A link between certificates of two different persons is refused: J-LIS says they are one
    person, the portal holds two, and merging persons is an operator's decision, never automatic.
    Only the new side of a successor link is attached: an old certificate is never added.
    """
    first = session.get(PersonCardCertificate, link.first.key)
    second = session.get(PersonCardCertificate, link.second.key)
    if first is not None and second is not None and first.person_id != second.person_id:
        what = "a successor link points to" if link.kind is LinkKind.SUCCESSOR else "a same-person link names"
        raise LinkingRefused(Reason.OTHER_PERSON, f"link {link.seq}: {what} another person's certificate")
    if first is not None and second is None:
        return _add(session, link.second, first.person_id, now)
    if second is not None and first is None and link.kind is LinkKind.SAME_PERSON:
        return _add(session, link.first, second.person_id, now)
    return 0


def _add(session: Session, ref: CardRef, person_id: str, now: datetime) -> int:
    session.add(PersonCardCertificate(
        issuer_key_id=ref.issuer_key_id, serial=str(ref.serial_number), person_id=person_id, kind=ref.kind.value,
        not_after=ref.not_after, linked_by=LinkSource.JLIS_LINKING.value, linked_at=now,
    ))
    session.flush()
    return 1


# -- fetching -----------------------------------------------------------------------------------


class LinkingFetcher(Protocol):
    """The network, as the linking sync needs it."""

    def fetch_page(self, url: str, *, since: int) -> str:
        """The page at ``url`` after ``since``. Raises LinkingRefused(FETCH_FAILED)."""
        ...


class HttpLinkingFetcher:
    """``LinkingFetcher`` over HTTP with ``requests``; every call has ``timeout``."""

    def __init__(self, *, timeout: timedelta, session: requests.Session | None = None) -> None:
        self._timeout = timeout.total_seconds()
        self._session = session or requests.Session()

    def __repr__(self) -> str:
        return f"HttpLinkingFetcher(timeout={self._timeout}s)"

    def fetch_page(self, url: str, *, since: int) -> str:
        """GET ``url?since=<since>``."""
        try:
            with self._session.get(url, params={"since": since}, timeout=self._timeout, stream=True) as response:
                if response.status_code != 200:  # noqa: PLR2004 - HTTP OK
                    raise LinkingRefused(Reason.FETCH_FAILED, f"{url} answered HTTP {response.status_code}")
                body = response.raw.read(MAX_PAGE_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise LinkingRefused(Reason.FETCH_FAILED, f"{url} cannot be reached: {type(exc).__name__}") from exc
        if len(body) > MAX_PAGE_BYTES:
            raise LinkingRefused(Reason.FETCH_FAILED, f"{url} answered more than {MAX_PAGE_BYTES} bytes")
        try:
            return bytes(body).decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise LinkingRefused(Reason.MALFORMED, "the linking feed page is not a compact JWS") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncResult:
    """What one linking sync stored."""

    pages: int
    links: int
    attached: int
    cursor: int


def sync_linking(
    *,
    url: str,
    fetcher: LinkingFetcher,
    store: LinkingStore,
    roots: Sequence[x509.Certificate],
    crls: Sequence[bytes],
    now: datetime,
) -> SyncResult:
    """Read the feed from the stored cursor until J-LIS says there is no more.

    Each page is verified and stored on its own; the first refusal stops the sync (the pages
    before it stay stored) and is raised as LinkingRefused.
    """
    pages = links = attached = 0
    for _ in range(MAX_PAGES_PER_SYNC):
        cursor = store.cursor()
        try:
            page = verify_page(page=fetcher.fetch_page(url, since=cursor), roots=roots, crls=crls, cursor=cursor,
                               now=now)
            attached += store.apply(page, now=now)
        except LinkingRefused as exc:
            logger.warning("linking.refused reason=%s cursor=%d", exc.reason.value, cursor)
            raise
        pages, links = pages + 1, links + len(page.links)
        if not page.more or not page.links:
            break
    logger.info("linking.synced pages=%d links=%d attached=%d", pages, links, attached)
    return SyncResult(pages=pages, links=links, attached=attached, cursor=store.cursor())
