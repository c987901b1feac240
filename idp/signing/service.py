"""The signing service: the pure signing steps wired to the portal's PKI, timestamping unit and keys.

One per application. The flow that talks to the phone calls ``prepare_*`` (and keeps the
pending state in the ephemeral store), then ``finish_*`` with the phone's signature, then
``make_assertion``. Everything that must be looked up at that moment comes from here: the
signer's chain, its OCSP status from the portal's own responder, the root's CRL, the
timestamping unit, the time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from idp.clock import Clock
from idp.oidc.keys import KeyStore
from idp.pki.service import ROOT_NAME, PortalPki
from idp.settings import Settings
from idp.signing.assertion import SignedDocument, make_assertion, verify_assertion
from idp.signing.cades import PendingCades, finish_cades, prepare_cades
from idp.signing.pades import PendingPades, finish_pades, prepare_pades
from idp.signing.signer import SignerChain
from idp.signing.status import SignerStatus, ocsp_request, read_status
from idp.signing.timestamping import TimestampAuthority
from idp.signing.verification import Verification, verify_cades, verify_pades

__all__ = ["SigningService"]


class SigningService:
    """Signatures made with the portal's PKI and checked against its roots."""

    def __init__(
        self, *, settings: Settings, pki: PortalPki, keys: Callable[[], KeyStore], clock: Clock,
    ) -> None:
        """``keys`` gives the OIDC provider's signing keys, read when first needed (an instance
        whose keys are not made yet still timestamps and verifies signatures)."""
        self._settings = settings
        self._pki = pki
        self._keys = keys
        self._clock = clock
        self.timestamps = TimestampAuthority(unit=pki.timestamping, policy=settings.signing.tsa_policy)
        """The portal's RFC 3161 unit, also served at ``/tsa``."""

    def __repr__(self) -> str:
        return f"SigningService({self._pki!r})"

    @property
    def trust_roots(self) -> tuple[x509.Certificate, ...]:
        """The roots a signature made here chains to (signer and timestamping unit alike)."""
        return (self._pki.root,)

    def chain(self, certificate: x509.Certificate) -> SignerChain:
        """The chain of a smartphone certificate: it, the smartphone CA, the portal root."""
        return SignerChain(leaf=certificate, issuer=self._pki.authority.certificate, root=self._pki.root)

    def status(self, certificate: x509.Certificate) -> SignerStatus:
        """The portal's OCSP answer about a smartphone certificate, now."""
        issuer = self._pki.authority.certificate
        response = self._pki.ocsp_response(ocsp_request(certificate, issuer))
        return read_status(response, certificate=certificate, issuer=issuer)

    def prepare_cades(
        self,
        *,
        document_digest: bytes,
        certificate: x509.Certificate,
        authentication_key: ec.EllipticCurvePublicKey | None = None,
    ) -> PendingCades:
        """Phase 1 of a detached CAdES signature (``cades.prepare_cades``), now."""
        return prepare_cades(
            document_digest=document_digest,
            chain=self.chain(certificate),
            now=self._clock.now(),
            authentication_key=authentication_key,
        )

    def finish_cades(self, pending: PendingCades, signature: bytes) -> bytes:
        """Phase 2 (``cades.finish_cades``) with the signer's status, the root's CRL and a timestamp."""
        return finish_cades(
            pending=pending,
            signature=signature,
            ocsp_response=self.status(pending.chain.leaf).response,
            crls=self._ca_crls(),
            timestamps=self.timestamps,
            now=self._clock.now(),
        )

    def prepare_pades(
        self,
        *,
        pdf: bytes,
        certificate: x509.Certificate,
        expected_digest: bytes | None = None,
        authentication_key: ec.EllipticCurvePublicKey | None = None,
    ) -> PendingPades:
        """Phase 1 of a PAdES signature (``pades.prepare_pades``), now."""
        return prepare_pades(
            pdf=pdf,
            chain=self.chain(certificate),
            now=self._clock.now(),
            expected_digest=expected_digest,
            authentication_key=authentication_key,
            timestamps=self.timestamps,
            max_bytes=self._settings.signing.max_document_bytes,
        )

    def finish_pades(self, pending: PendingPades, signature: bytes) -> bytes:
        """Phase 2 (``pades.finish_pades``): the signed PDF, timestamped, with its revocation data."""
        return finish_pades(
            pending=pending,
            signature=signature,
            ocsp_response=self.status(pending.chain.leaf).response,
            crls=self._ca_crls(),
            timestamps=self.timestamps,
            now=self._clock.now(),
        )

    def make_assertion(
        self,
        *,
        client_id: str,
        subject: str,
        documents: Sequence[SignedDocument],
        release: Sequence[str] = (),
    ) -> str:
        """The signed-document assertion (``assertion.make_assertion``) with the portal's keys.

        Each document's ``verification`` comes from ``verify_cades`` / ``verify_pades`` of the
        signature just assembled; the signer chain is the leaf's, up to the portal root.
        """
        signer = documents[0].verification.signer if documents else None
        if signer is None:
            raise ValueError("an assertion states at least one verified document")
        return make_assertion(
            keys=self._require_keys(),
            alg=self._settings.signing.assertion_alg,
            issuer=self._settings.issuer,
            client_id=client_id,
            subject=subject,
            documents=documents,
            chain=self.chain(signer).certificates,
            release=release,
            now=self._clock.now(),
        )

    def verify_cades(
        self, *, signature: bytes, document: bytes | None = None, document_digest: bytes | None = None,
    ) -> Verification:
        """``verification.verify_cades`` against the portal's roots."""
        return verify_cades(
            signature=signature, document=document, document_digest=document_digest, trust_roots=self.trust_roots,
        )

    def verify_pades(self, pdf: bytes) -> Verification:
        """``verification.verify_pades`` against the portal's roots."""
        return verify_pades(pdf, trust_roots=self.trust_roots)

    def verify_assertion(self, token: str, *, document: bytes | None = None) -> Verification:
        """``assertion.verify_assertion`` against the portal's published JWK Set."""
        return verify_assertion(token, jwks=self.jwks(), issuer=self._settings.issuer, document=document)

    def jwks(self) -> dict[str, Any]:
        """The portal's public JWK Set (the one served at ``/jwks``)."""
        return self._require_keys().jwks()

    def _require_keys(self) -> KeyStore:
        return self._keys()

    def _ca_crls(self) -> list[bytes]:
        """The root's CRL: it covers the smartphone CA and the timestamping unit certificates."""
        return [self._pki.current_crl(ROOT_NAME)]
