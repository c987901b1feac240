"""A revoked card revokes the smartphone certificates issued from it (docs/pki-profile.md).

``idp pki sync-revocations`` stores the J-LIS CRLs (``revocation_cache``), then this step reads
every card certificate they list and revokes each good (or held) smartphone certificate that
records it as a source, with the card's own reason, so that the next login from that phone
fails on its certificate status. Running it twice changes nothing the second time.

One exception: a move revokes the card's signature certificate with affiliationChanged, and only
the phone's signature certificate (which carries the old address) follows it; the phone's
user-authentication certificate carries no attribute, so nothing it says has changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from cryptography import x509

from idp.pki.profiles import SMARTPHONE_AUTH
from idp.pki.registry import AlreadyRevoked, CertificateRef, CertificateState, CertificateStatus

__all__ = ["SmartphoneCertificates", "revoke_phones_of_revoked_cards"]


class SmartphoneCertificates(Protocol):
    """What this step needs of the portal's PKI (``idp.pki.service.PortalPki``)."""

    def issued_from(self, card: CertificateRef) -> list[CertificateStatus]: ...

    def revoke(self, serial_number: int, reason: x509.ReasonFlags) -> CertificateStatus: ...


def revoke_phones_of_revoked_cards(*, crls: Iterable[bytes], pki: SmartphoneCertificates) -> list[CertificateStatus]:
    """Revoke the smartphone certificates issued from any card certificate on ``crls``.

    ``crls`` are J-LIS CRLs the revocation cache has already verified. Returns what was revoked.
    """
    revoked: list[CertificateStatus] = []
    for der in crls:
        crl = x509.load_der_x509_crl(der)
        try:
            issuer_key_id = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        except x509.ExtensionNotFound:
            continue  # a CRL that does not name its issuer's key can name no card certificate we recorded
        if issuer_key_id is None:
            continue
        for entry in crl:
            reason = _reason(entry)
            card = CertificateRef(issuer_key_id=issuer_key_id, serial_number=entry.serial_number)
            for status in pki.issued_from(card):
                if status.state is CertificateState.REVOKED or (
                    status.state is CertificateState.ON_HOLD and reason is x509.ReasonFlags.certificate_hold
                ) or (reason is x509.ReasonFlags.affiliation_changed and status.profile == SMARTPHONE_AUTH.name):
                    continue
                try:
                    revoked.append(pki.revoke(status.serial_number, reason))
                except AlreadyRevoked:
                    continue  # revoked meanwhile by someone else: the outcome we wanted
    return revoked


def _reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return x509.ReasonFlags.unspecified
