"""The enrollment service: keeps pending enrollments, verifies completions, records persons and devices.

``EnrollmentService.start`` stores a ``PendingEnrollment`` in the ephemeral store;
``complete`` takes it (once: a replay finds it gone), gathers the card certificates' revocation
status (cached J-LIS CRLs, live OCSP), runs ``verify_enrollment`` and then, all or nothing,
issues the two smartphone certificates and records the person, the links from the card
certificates to that person, and the device. If anything after the first issuance fails, the
certificates already issued are revoked and no person or device row stays.

A person is the chain of linked card certificates (``linking``): when none of the presented card
certificates belongs to a person yet, the service first reads the J-LIS linking data published
since the last ``idp pki sync``, so that a card renewed, moved or reissued a minute ago still
lands on the person who enrolled with the old one, rather than making a new person.

One phone per person: the transaction that records a new device also marks the person's other
active devices revoked; once it has committed, their certificates are revoked (superseded) and
the grants issued on their logins are revoked, which also ends their portal sessions.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from webauthn.helpers.structs import RegistrationCredential

from idp.audit import AuditEvent, append_in, certificate_subject
from idp.ceremonies.enrollment import (
    EnrollmentTrust,
    PendingEnrollment,
    RevocationInfo,
    VerifiedEnrollment,
    start_enrollment,
    verify_enrollment,
)
from idp.ceremonies.enrollment_errors import (
    EnrollmentAlreadyUsed,
    EnrollmentNotFound,
    EnrollmentRejected,
    EnrollmentTimedOut,
    Reason,
)
from idp.ceremonies.linking import HttpLinkingFetcher, LinkingFetcher, LinkingRefused, LinkingStore, sync_linking
from idp.ceremonies.records import (
    CardCertificateKind,
    DeviceRecord,
    DeviceStatus,
    LinkSource,
    PersonCardCertificate,
    PersonRecord,
)
from idp.ceremonies.revocation_cache import (
    CardRevocationPolicy,
    CardStatusSources,
    HttpRevocationFetcher,
    JlisRevocationCache,
    RevocationFetcher,
)
from idp.clock import Clock
from idp.pki.profiles import SMARTPHONE_AUTH, SMARTPHONE_SIGN
from idp.pki.registry import AlreadyRevoked, CertificateRef
from idp.pki.service import PortalPki
from idp.settings import Settings
from idp.store.ephemeral import EphemeralStore

__all__ = ["CompletedEnrollment", "EnrollmentService", "load_certificates", "smartphone_subject"]

REMEMBERED_FOR = timedelta(days=1)
"""How long the portal remembers that an enrollment id existed, to answer 409 or 410 rather than 404."""

logger = logging.getLogger(__name__)


def load_certificates(paths: Sequence[Path]) -> tuple[x509.Certificate, ...]:
    """Every certificate in the PEM files ``paths`` (a file may hold several). Raises OSError, ValueError."""
    certificates: list[x509.Certificate] = []
    for path in paths:
        certificates.extend(x509.load_pem_x509_certificates(path.read_bytes()))
    return tuple(certificates)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompletedEnrollment:
    """What a completed enrollment made: the device, and the certificates the phone installs."""

    person_id: str
    device_id: str
    auth_certificate: x509.Certificate
    sign_certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    """The smartphone CA certificate: what the phone sends with its certificates (not the root)."""
    superseded: tuple[str, ...] = ()
    """The person's earlier devices this enrollment replaced (one phone per person)."""


class EnrollmentService:
    """Enrollment for one application: settings, stores, the portal's CA and the J-LIS status cache."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        ephemeral: EphemeralStore,
        pki: PortalPki,
        clock: Clock,
        fetcher: RevocationFetcher | None = None,
        linking_fetcher: LinkingFetcher | None = None,
        revoke_grants: Callable[[str], object] | None = None,
    ) -> None:
        """Load the trust anchors named in ``settings.pki`` once. Raises OSError or ValueError for a bad PEM file.

        ``revoke_grants(device_id)`` revokes the OAuth grants issued on a replaced device (``idp.oidc``).
        """
        self._revoke_grants = revoke_grants
        self._settings = settings
        self._sessions = sessions
        self._ephemeral = ephemeral
        self._pki = pki
        self._clock = clock
        self.trust = EnrollmentTrust(
            attestation_roots=load_certificates(settings.pki.attestation_roots),
            jlis_roots=load_certificates(settings.pki.jlis_roots),
            jlis_intermediates=load_certificates(settings.pki.jlis_intermediates),
        )
        self.revocation = JlisRevocationCache(
            sessions,
            authorities=(*self.trust.jlis_roots, *self.trust.jlis_intermediates),
            extra_crl_urls=settings.pki.jlis_crl_urls,
            fetcher=fetcher or HttpRevocationFetcher(timeout=settings.pki.jlis_fetch_timeout),
        )
        self._linking_fetcher = linking_fetcher or HttpLinkingFetcher(timeout=settings.pki.jlis_fetch_timeout)

    def __repr__(self) -> str:
        return f"EnrollmentService({self._settings.issuer!r})"

    def start(self) -> PendingEnrollment:
        """Open an enrollment for the phone; it lives ``device.enrollment_ttl``. Raises EphemeralStoreError."""
        ttl = self._settings.device.enrollment_ttl
        pending = start_enrollment(
            rp_id=urlsplit(self._settings.issuer).hostname or "",
            origin=self._settings.issuer,
            ttl=ttl,
            now=self._clock.now(),
        )
        if not self._ephemeral.put_new(pending.key, pending.to_json(), ttl=ttl):
            raise RuntimeError("enrollment id collision")  # 128 random bits: never in practice
        self._ephemeral.put(f"{pending.key}:started", b"1", ttl=max(ttl, REMEMBERED_FOR))
        return pending

    def take(self, enrollment_id: str) -> PendingEnrollment:
        """Consume the pending enrollment: of concurrent completions exactly one gets it.

        Raises EnrollmentNotFound, EnrollmentAlreadyUsed or EnrollmentTimedOut.
        """
        key = f"enrollment:{enrollment_id}"
        raw = self._ephemeral.take(key)
        if raw is None:
            if self._ephemeral.get(f"{key}:used") is not None:
                raise EnrollmentAlreadyUsed(enrollment_id)
            if self._ephemeral.get(f"{key}:started") is not None:
                raise EnrollmentTimedOut(enrollment_id)
            raise EnrollmentNotFound(enrollment_id)
        self._ephemeral.put(f"{key}:used", b"1", ttl=REMEMBERED_FOR)
        pending = PendingEnrollment.from_json(raw)
        if self._clock.now() >= pending.expires_at:
            raise EnrollmentTimedOut(enrollment_id)
        return pending

    def complete(
        self,
        *,
        enrollment_id: str,
        auth_attestation: RegistrationCredential,
        sign_attestation: RegistrationCredential,
        card_auth_certificate: x509.Certificate,
        card_sign_certificate: x509.Certificate,
        card_auth_signature: bytes,
        card_sign_signature: bytes,
    ) -> CompletedEnrollment:
        """Verify the phone's answer and enroll the device.

        Raises what ``take`` raises, EnrollmentRejected (nothing is stored), or the issuing CA's
        and the database's errors (then no person or device row is left, and any certificate
        already issued is revoked).
        """
        pending = self.take(enrollment_id)
        sources = self.revocation.card_status(
            [card_auth_certificate, card_sign_certificate],
            policy=CardRevocationPolicy(self._settings.pki.card_revocation),
            crl_max_age=self._settings.pki.card_crl_max_age, now=self._clock.now(),
        )
        try:
            verified = verify_enrollment(
                pending=pending,
                auth_attestation=auth_attestation,
                sign_attestation=sign_attestation,
                card_auth_certificate=card_auth_certificate,
                card_sign_certificate=card_sign_certificate,
                card_auth_signature=card_auth_signature,
                card_sign_signature=card_sign_signature,
                trust=self.trust,
                revocation=RevocationInfo(crls=sources.crls, ocsp_responses=sources.ocsp_responses),
                now=self._clock.now(),
            )
        except EnrollmentRejected as rejected:
            raise _with_revocation_gap(rejected, sources, auth=card_auth_certificate, sign=card_sign_certificate) \
                from rejected.__cause__
        self._follow_linking_data(verified)
        return self.enroll(verified)

    def _follow_linking_data(self, verified: VerifiedEnrollment) -> None:
        """Read the J-LIS links published since the last sync when neither card certificate is a
        person's yet (a first enrollment, or a card changed since the last ``idp pki sync``).

        Best effort, like OCSP at enrollment: a feed that cannot be read or is refused is logged
        and the enrollment goes on; the next ``idp pki sync`` reports the refusal.
        """
        if not self._belongs_to_a_person(verified):
            self.follow_linking_data()

    def follow_linking_data(self) -> None:
        """Read the J-LIS links published since the last sync (``pki.jlis_linking_url``), best effort."""
        url = self._settings.pki.jlis_linking_url
        if not url:
            return
        try:
            sync_linking(url=url, fetcher=self._linking_fetcher, store=LinkingStore(self._sessions),
                         roots=self.trust.jlis_roots, crls=self.revocation.crls(), now=self._clock.now())
        except LinkingRefused as exc:
            logger.warning("enrollment.linking_unavailable reason=%s", exc.reason.value)

    def _belongs_to_a_person(self, verified: VerifiedEnrollment) -> bool:
        refs = [CertificateRef.of(verified.card_auth.leaf), CertificateRef.of(verified.card_sign.leaf)]
        with self._sessions.begin() as session:
            return session.scalar(select(PersonCardCertificate.person_id).where(or_(*(
                and_(PersonCardCertificate.issuer_key_id == ref.issuer_key_id,
                     PersonCardCertificate.serial == str(ref.serial_number))
                for ref in refs
            ))).limit(1)) is not None

    def enroll(self, verified: VerifiedEnrollment) -> CompletedEnrollment:
        """Issue both smartphone certificates and record the person and the device, all or nothing."""
        cards = [verified.card_auth.leaf, verified.card_sign.leaf]
        issued: list[x509.Certificate] = []
        try:
            auth_certificate = self._pki.issue_smartphone_certificate(
                profile=SMARTPHONE_AUTH, subject=smartphone_subject(), public_key=verified.auth.public_key,
                card_certificates=cards,
            )
            issued.append(auth_certificate)
            sign_certificate = self._pki.issue_smartphone_certificate(
                profile=SMARTPHONE_SIGN, subject=smartphone_subject(), public_key=verified.sign.public_key,
                card_certificates=cards, attributes=verified.attributes,
            )
            issued.append(sign_certificate)
            person_id, device_id, superseded = self._record(verified, auth_certificate, sign_certificate)
        except BaseException:
            self._withdraw(issued)
            raise
        for old in superseded:
            self._retire(old, by=device_id)
        return CompletedEnrollment(
            person_id=person_id,
            device_id=device_id,
            superseded=tuple(old.id for old in superseded),
            auth_certificate=auth_certificate,
            sign_certificate=sign_certificate,
            chain=(self._pki.authority.certificate,),
        )

    def _record(
        self, verified: VerifiedEnrollment, auth_certificate: x509.Certificate, sign_certificate: x509.Certificate,
    ) -> tuple[str, str, list[DeviceRecord]]:
        """One transaction: the person (found by a card certificate, else new), its links, the device,
        and the person's other active devices marked revoked (returned, to retire their certificates).

        Two first enrollments of one card racing each other both try to create the person; the
        loser's insert of the link fails and it tries once more, finding the winner's person.
        """
        for attempt in range(2):
            try:
                with self._sessions.begin() as session:
                    return self._write(session, verified, auth_certificate, sign_certificate)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def _write(
        self,
        session: Session,
        verified: VerifiedEnrollment,
        auth_certificate: x509.Certificate,
        sign_certificate: x509.Certificate,
    ) -> tuple[str, str, list[DeviceRecord]]:
        now = self._clock.now()
        cards = {
            CardCertificateKind.AUTH: verified.card_auth.leaf,
            CardCertificateKind.SIGN: verified.card_sign.leaf,
        }
        refs = {kind: CertificateRef.of(card) for kind, card in cards.items()}
        linked = session.scalars(select(PersonCardCertificate).where(or_(*(
            and_(PersonCardCertificate.issuer_key_id == ref.issuer_key_id,
                 PersonCardCertificate.serial == str(ref.serial_number))
            for ref in refs.values()
        )))).all()
        persons = {row.person_id for row in linked}
        if len(persons) > 1:
            raise EnrollmentRejected(Reason.CARD_CERTIFICATES_UNRELATED, "card certificates", "linked to two persons")
        if persons:
            person_id = persons.pop()
        else:
            person_id = secrets.token_urlsafe(16)
            session.add(PersonRecord(id=person_id, created_at=now))
            session.flush()
        known = {(row.issuer_key_id, row.serial) for row in linked}
        for kind, ref in refs.items():
            if (ref.issuer_key_id, str(ref.serial_number)) not in known:
                session.add(PersonCardCertificate(
                    issuer_key_id=ref.issuer_key_id, serial=str(ref.serial_number), person_id=person_id,
                    kind=kind.value, not_after=cards[kind].not_valid_after_utc,
                    linked_by=LinkSource.ENROLLMENT.value, linked_at=now,
                ))
        superseded = self._supersede_devices(session, person_id) if linked else []
        device_id = secrets.token_urlsafe(16)
        session.add(DeviceRecord(
            id=device_id,
            person_id=person_id,
            status=DeviceStatus.ACTIVE.value,
            created_at=now,
            revoked_at=None,
            aaguid=str(verified.auth.aaguid),
            auth_credential_id=verified.auth.credential_id,
            auth_public_key=verified.auth.cose_public_key,
            auth_sign_count=verified.auth.sign_count,
            sign_credential_id=verified.sign.credential_id,
            sign_public_key=verified.sign.cose_public_key,
            auth_certificate_serial=str(auth_certificate.serial_number),
            sign_certificate_serial=str(sign_certificate.serial_number),
        ))
        session.flush()
        append_in(  # last: the audit lock is held until this transaction commits
            session, AuditEvent.ENROLLMENT_COMPLETED, at=now, actor=f"phone:{device_id}",
            subject=[f"person:{person_id}", f"device:{device_id}", *(
                certificate_subject(self._pki.authority.name, certificate.serial_number)
                for certificate in (auth_certificate, sign_certificate)
            )],
            details={"new_person": not linked},
        )
        return person_id, device_id, superseded

    def _supersede_devices(self, session: Session, person_id: str) -> list[DeviceRecord]:
        """Mark the person's active devices revoked (one phone per person); the rows, detached."""
        old = list(session.scalars(select(DeviceRecord).where(
            DeviceRecord.person_id == person_id, DeviceRecord.status == DeviceStatus.ACTIVE.value,
        ).with_for_update()))
        if old:
            session.execute(update(DeviceRecord).where(DeviceRecord.id.in_([row.id for row in old])).values(
                status=DeviceStatus.REVOKED.value, revoked_at=self._clock.now(),
            ))
            for row in old:
                session.expunge(row)
        return old

    def _retire(self, old: DeviceRecord, *, by: str) -> None:
        """Revoke a replaced device's certificates (superseded) and its grants, and record it.

        After the new device committed: a failure here leaves the old device revoked (it cannot log
        in, its sessions end) with certificates an operator can still revoke; it is logged.
        """
        reason = x509.ReasonFlags.superseded
        try:
            for serial in (old.auth_certificate_serial, old.sign_certificate_serial):
                try:
                    self._pki.revoke(int(serial), reason)
                except AlreadyRevoked:
                    continue  # a card revocation got there first: it stays as it is
            with self._sessions.begin() as session:
                append_in(
                    session, AuditEvent.DEVICE_REVOKED, at=self._clock.now(), actor=f"phone:{by}",
                    subject=[f"device:{old.id}", *(
                        certificate_subject(self._pki.authority.name, serial)
                        for serial in (old.auth_certificate_serial, old.sign_certificate_serial)
                    )],
                    details={"reason": reason.value},
                )
            grants = self._revoke_grants(old.id) if self._revoke_grants is not None else 0
        except Exception:
            logger.exception("enrollment.supersede_failed device=%s", old.id)
            return
        logger.info("enrollment.superseded device=%s by=%s grants=%s", old.id, by, grants)

    def _withdraw(self, issued: Sequence[x509.Certificate]) -> None:
        """Revoke certificates of an enrollment that did not complete: none must stay usable."""
        for certificate in issued:
            try:
                self._pki.revoke(certificate.serial_number, x509.ReasonFlags.cessation_of_operation)
            except Exception:  # best effort: the original error is what the caller must see
                logger.exception("enrollment.withdraw_failed serial=%x", certificate.serial_number)


def smartphone_subject() -> x509.Name:
    """A smartphone certificate's subject: an opaque random id, never a person's data or a serial."""
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.COMMON_NAME, secrets.token_hex(12).upper()),
    ])


def _with_revocation_gap(
    rejected: EnrollmentRejected, sources: CardStatusSources, *, auth: x509.Certificate, sign: x509.Certificate,
) -> EnrollmentRejected:
    """``rejected``, with the policy's reason (a RevocationGap) as its detail when it is for want of status."""
    certificate = {"card auth certificate": auth, "card sign certificate": sign}.get(rejected.subject)
    gap = None if certificate is None else sources.gaps.get(certificate.serial_number)
    if rejected.reason is not Reason.CARD_REVOCATION_UNAVAILABLE or gap is None:
        return rejected
    return EnrollmentRejected(rejected.reason, rejected.subject, gap.value)
