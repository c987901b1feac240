"""The OpenID Connect provider's services, built once per application from the settings.

``OidcProvider`` holds what the endpoints share (client registry, signing keys, the stores of
transactions, codes, pushed requests, access tokens, grants and consents) and the few steps
that span them: finishing a login into an authorization code, revoking a grant everywhere, and
reading the identity claims a grant may release.
"""

from __future__ import annotations

import logging
import secrets
from functools import cached_property
from typing import Any

from cryptography import x509
from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from idp.ceremonies.devices import SqlDeviceDirectory
from idp.ceremonies.transactions import EXPIRED_KEPT, AuthorizationRequest, LoginTransaction, Outcome, TransactionStore
from idp.clock import Clock
from idp.oidc.access_tokens import AccessTokenStore
from idp.oidc.claims import identity_claims, requested_claims
from idp.oidc.clients import ClientInfo, ClientRegistry
from idp.oidc.codes import CodeStore, IssuedCode
from idp.oidc.grants import ConsentService, GrantService
from idp.oidc.grants_records import Consent, Grant
from idp.oidc.keys import KeyStore
from idp.oidc.pairwise import pairwise_subject
from idp.oidc.par import PushedRequests
from idp.pki.attributes import MalformedAttributes
from idp.pki.records import IssuedCertificate
from idp.pki.registry import CertificateState
from idp.pki.service import SMARTPHONE_CA_NAME
from idp.settings import Settings
from idp.store.database import engine_of, single_statement
from idp.store.ephemeral import EphemeralStore

__all__ = ["ENDPOINTS", "GrantRevoked", "OidcProvider"]

logger = logging.getLogger("idp.oidc")

ENDPOINTS = {
    "authorization_endpoint": "/authorize",
    "token_endpoint": "/token",
    "userinfo_endpoint": "/userinfo",
    "jwks_uri": "/jwks",
    "pushed_authorization_request_endpoint": "/par",
}
"""Paths of the provider's endpoints under the issuer."""


class OidcProvider:
    """Everything the OIDC endpoints share. One per application."""

    def __init__(
        self, *, settings: Settings, clock: Clock, sessions: sessionmaker[Session], ephemeral: EphemeralStore,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.issuer = settings.issuer
        self.clients = ClientRegistry(sessions, cache_ttl=settings.oidc.client_cache_ttl, clock=clock)
        self.transactions = TransactionStore(ephemeral, ttl=settings.login.transaction_ttl, keep=EXPIRED_KEPT)
        self.access_tokens = AccessTokenStore(ephemeral, ttl=settings.oidc.access_token_ttl)
        self.codes = CodeStore(ephemeral, ttl=settings.oidc.code_ttl, replay_window=settings.oidc.refresh_token_ttl)
        self.pushed = PushedRequests(ephemeral, ttl=settings.oidc.request_uri_ttl)
        self.grants = GrantService(sessions, refresh_token_ttl=settings.oidc.refresh_token_ttl)
        self.consents = ConsentService(sessions)
        self.devices = SqlDeviceDirectory(sessions)
        """The phones, for the portal session's check that its phone still stands (``idp.web.session``)."""
        self.ephemeral = ephemeral
        self._engine = engine_of(sessions)

    def __repr__(self) -> str:
        return f"OidcProvider(issuer={self.issuer!r})"

    @cached_property
    def keys(self) -> KeyStore:
        """The signing keys, read on first use: an app built on an instance that ``idp init`` has
        not given keys yet (an older instance, a PKI-only test) still serves everything else.
        Raises SigningKeysMissing then."""
        return KeyStore.of(self.settings, clock=self.clock)

    def url(self, endpoint: str) -> str:
        """The absolute URL of ``endpoint`` (a key of ``ENDPOINTS``)."""
        return self.issuer + ENDPOINTS[endpoint]

    def subject(self, client: ClientInfo | str, person_id: str) -> str:
        """The pairwise ``sub`` of the person for the client's sector (OIDC Core §8.1)."""
        info = self.clients.get(client) if isinstance(client, str) else client
        if info is None:
            raise LookupError("the client is no longer registered")
        return pairwise_subject(secret=self.keys.pairwise_secret, sector=info.sector, person_id=person_id)

    def finish_login(self, transaction: LoginTransaction, outcome: Outcome, *, sid: str | None = None) -> str:
        """Mint the authorization code for an approved, claimed outcome; remember its consent.

        ``sid``: the login session the ID token names (a new one when not given).
        """
        return self.mint_code(transaction.request, outcome, sid=sid or secrets.token_urlsafe(16))

    def mint_code(self, request: AuthorizationRequest, outcome: Outcome, *, sid: str) -> str:
        """``finish_login`` for a request with no transaction: a silent login from the portal session."""
        if outcome.person_id is None or outcome.auth_time is None:
            raise ValueError("an approved outcome names the person and the time of approval")
        consented = tuple(name for name in outcome.consented_attributes if name in request.requested_attributes)
        if consented:
            self.consents.record(
                person_id=outcome.person_id, client_id=request.client_id, attributes=consented, now=self.clock.now(),
            )
        return self.codes.mint(IssuedCode(
            request=request,
            person_id=outcome.person_id,
            auth_time=outcome.auth_time,
            amr=outcome.amr,
            acr=outcome.acr,
            consented_attributes=consented,
            signature_certificate_serial=outcome.signature_certificate_serial,
            device_id=outcome.device_id,
            sid=sid,
        ))

    def revoke_grant(self, grant_id: str) -> None:
        """Revoke a grant: its refresh and access tokens stop working (a replayed code, a revoked device).

        Also remembered in the ephemeral store for as long as its code could be replayed, for a
        replay that overtakes the first redemption before its grant is written (``revoked_meanwhile``).
        """
        self.ephemeral.put(_revoked_key(grant_id), b"1", ttl=self.settings.oidc.code_ttl)
        self.grants.revoke(grant_id, now=self.clock.now())

    def revoked_meanwhile(self, grant_id: str) -> bool:
        """Whether ``revoke_grant`` ran for a grant before it was written (its code was replayed then)."""
        return self.ephemeral.get(_revoked_key(grant_id)) is not None

    def revoke_device_grants(self, device_id: str) -> int:
        """Revoke every live grant issued on the device (its refresh and access tokens); how many.

        For a device revoked by its phone or through its card: what it approved stops working.
        """
        grant_ids = self.grants.live_grants_of_device(device_id)
        for grant_id in grant_ids:
            self.revoke_grant(grant_id)
        logger.info("grants.revoked_for_device device=%s grants=%d", device_id, len(grant_ids))
        return len(grant_ids)

    def released_claims(self, grant_id: str, *, location: str) -> dict[str, Any]:
        """The identity claims grant ``grant_id`` may release at ``location`` now.

        Raises GrantRevoked when the grant is revoked or unknown: the one check every use of an
        access token goes through.

        Only attributes that were asked for, approved on the phone for this grant, and whose
        consent still stands; read from the signature certificate the approval named, and only
        while that certificate is good (not revoked, not on hold).

        One statement reads the grant, its standing consents and the certificate's DER.
        """
        with single_statement(self._engine) as connection:
            rows = connection.execute(_RELEASE, {"grant_id": grant_id}).all()
        if not rows or rows[0].revoked_at is not None:
            raise GrantRevoked(grant_id)
        grant = rows[0]
        if grant.signature_certificate_serial is None:
            return {}
        wanted = requested_claims(scope=grant.scope, claims=grant.claims, location=location)
        release = wanted & set(grant.consented_attributes)
        if not release:
            return {}
        release &= frozenset(name for row in rows if row.consent is not None for name in row.consent)
        if grant.der is None or grant.state != CertificateState.GOOD.value or not release:
            return {}
        try:
            certificate = x509.load_der_x509_certificate(grant.der)
            return identity_claims(certificate=certificate, release=release, verified_at=grant.auth_time)
        except MalformedAttributes:
            logger.warning("userinfo.attributes_unreadable grant=%s", grant_id)
            return {}


class GrantRevoked(LookupError):
    """The grant behind a token is revoked (or unknown): the token must not be honoured."""


def _revoked_key(grant_id: str) -> str:
    return f"grant-revoked:{grant_id}"


_RELEASE = (
    select(
        Grant.scope, Grant.claims, Grant.consented_attributes, Grant.signature_certificate_serial, Grant.auth_time,
        Grant.revoked_at, IssuedCertificate.der, IssuedCertificate.state, Consent.attributes.label("consent"),
    )
    .select_from(Grant)
    .outerjoin(IssuedCertificate, and_(
        IssuedCertificate.authority == SMARTPHONE_CA_NAME,
        IssuedCertificate.serial == Grant.signature_certificate_serial,
    ))
    .outerjoin(Consent, and_(
        Consent.person_id == Grant.person_id, Consent.client_id == Grant.client_id, Consent.revoked_at.is_(None),
    ))
    .where(Grant.grant_id == bindparam("grant_id"))
)
"""A grant with its smartphone signature certificate's DER and state, one row per consent still standing."""
