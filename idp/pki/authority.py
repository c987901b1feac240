"""An issuing certificate authority: issue, revoke, resume, and publish a CRL (RFC 5280 §5).

The same class serves the portal's smartphone CA (registry in SQL) and the simulated J-LIS
issuing CAs (registry in a file). It reads no clock: every step takes ``now``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from idp.pki.profiles import CertificateProfile, Issuer, ProfileError, PublicKey, build_certificate
from idp.pki.registry import CertificateRef, CertificateRegistry, CertificateStatus

__all__ = ["CertificateAuthority"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateAuthority:
    """One issuing CA: its certificate and key, its registry, and where it publishes."""

    name: str
    """Short name used in URLs and records (``smartphone-ca``, ``jlis-auth-ca``)."""
    issuer: Issuer
    registry: CertificateRegistry
    crl_url: str
    ocsp_url: str
    profiles: frozenset[str]
    """Names of the end-entity profiles this CA may issue; anything else is refused."""

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.name!r})"

    @property
    def certificate(self) -> x509.Certificate:
        """The CA's own certificate."""
        return self.issuer.certificate

    @property
    def key_id(self) -> bytes:
        """The CA's subjectKeyIdentifier, which its certificates name as their authority key."""
        return self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest

    def issue(
        self,
        *,
        profile: CertificateProfile,
        subject: x509.Name,
        public_key: PublicKey,
        now: datetime,
        not_after: datetime,
        alternative_names: Sequence[x509.GeneralName] = (),
        issued_from: Sequence[CertificateRef] = (),
        aaguid: UUID | None = None,
    ) -> x509.Certificate:
        """Issue a certificate of ``profile`` and record it as good.

        The certificate never outlives this CA's certificate: ``not_after`` is capped there.
        Raises ProfileError for a profile this CA does not issue or a key that does not fit.
        """
        if profile.name not in self.profiles:
            raise ProfileError(f"{self.name} does not issue {profile.name} certificates")
        certificate = build_certificate(
            profile=profile,
            subject=subject,
            public_key=public_key,
            issuer=self.issuer,
            not_before=now,
            not_after=min(not_after, self.certificate.not_valid_after_utc),
            alternative_names=alternative_names,
            crl_url=self.crl_url,
            ocsp_url=self.ocsp_url,
            aaguid=aaguid,
        )
        self.registry.record(certificate, profile=profile.name, issued_from=issued_from)
        return certificate

    def revoke(self, serial_number: int, *, reason: x509.ReasonFlags, now: datetime) -> CertificateStatus:
        """Revoke (or, with certificateHold, suspend) a certificate this CA issued.

        Raises UnknownCertificate or AlreadyRevoked from the registry.
        """
        if reason in {x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.aa_compromise}:
            raise ValueError(f"{reason.name} is not a reason to revoke a certificate")
        return self.registry.revoke(serial_number, reason=reason, at=now)

    def resume(self, serial_number: int) -> CertificateStatus:
        """Take a held certificate off hold; it reads good again in OCSP and leaves the CRL."""
        return self.registry.resume(serial_number)

    def build_crl(self, *, now: datetime, lifetime: timedelta) -> x509.CertificateRevocationList:
        """A complete CRL (RFC 5280 §5) of every revoked or held, unexpired certificate.

        Carries the CRL number and the authority key identifier; each entry its reason code
        (none for unspecified, as §5.3.1 recommends) and, for a hold, nothing more.
        """
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now)
            .next_update(now + lifetime)
            .add_extension(x509.CRLNumber(self.registry.next_crl_number()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuer.private_key.public_key()),
                critical=False,
            )
        )
        for status in self.registry.listed():
            assert status.revoked_at is not None  # noqa: S101 - the registry lists revoked ones only
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(status.serial_number)
                .revocation_date(status.revoked_at)
            )
            if status.reason not in {None, x509.ReasonFlags.unspecified}:
                entry = entry.add_extension(x509.CRLReason(status.reason), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self.issuer.private_key, hashes.SHA256())
