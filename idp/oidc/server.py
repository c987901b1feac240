"""The token endpoint on Authlib (RFC 6749 §3.2): code and refresh grants, client authentication.

``build_authorization_server`` registers:

- ``AuthorizationCodeGrant`` with ``S256Only`` (RFC 7636, ``CodeChallenge(required=True)`` with
  ``plain`` removed) and ``IdTokenExtension`` (OIDC Core §3.1.3.6 ID token). Its
  ``query_authorization_code`` is the atomic take of ``idp.oidc.codes`` (style §7): a replayed
  code answers ``invalid_grant`` and revokes the grant its first redemption made.
- ``RotatingRefreshTokenGrant``: a new refresh token on every use, reuse revokes the grant; the
  response carries a new ID token for the same login (OIDC Core §12.2, ``refreshed_id_token``).
- Client authentication ``client_secret_basic`` and ``private_key_jwt`` (RFC 7523 §2.2), whose
  ``aud`` may be the issuer, the token endpoint or the PAR endpoint (RFC 9126 §2), and whose
  ``jti`` is remembered in the ephemeral store so an assertion is used once. The client's keys
  are its inline ``jwks`` or the set at its ``jwks_uri`` (``idp.oidc.client_jwks``).

The ID token: ``iss sub aud exp iat auth_time nonce acr amr sid at_hash``, ES256 unless the
client registered RS256, ``sub`` pairwise (``idp.oidc.pairwise``), plus the consented attribute
claims the ``claims`` parameter asked for in the ID token.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, InvalidGrantError, OAuth2Error, grants
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.grants.util import create_half_hash
from flask import current_app
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import GuestProtocol, KeySet

from idp.oidc.access_tokens import AccessTokenInfo
from idp.oidc.claims import requested_claims
from idp.oidc.client_jwks import ClientKeySets, HttpJwksFetcher, KeysUnavailable
from idp.oidc.clients import ClientInfo
from idp.oidc.codes import IssuedCode, Redemption, code_hash
from idp.oidc.errors import InvalidClientError
from idp.oidc.grants import DeviceNotActive, GrantInfo, RefreshRejected, new_refresh_token
from idp.oidc.provider import OidcProvider
from idp.ops import metrics
from idp.ops.rate_limits import RateLimited, RateLimiter
from idp.signing.flow import SIGNING_FLOW_EXTENSION
from idp.store.ephemeral import EphemeralStoreUnavailable

__all__ = ["AUTH_METHODS", "OAuthClient", "build_authorization_server", "refreshed_id_token"]

logger = logging.getLogger("idp.oidc")

AUTH_METHODS = ["client_secret_basic", "private_key_jwt"]
"""Token endpoint client authentication (FAPI 2.0 allows private_key_jwt; the Digital
Authentication App uses it; client_secret_basic for simple RPs)."""
GRANT_TYPES = ("authorization_code", "refresh_token")
TOKEN_BYTES = 32


class OAuthClient(ClientMixin):  # type: ignore[misc] # Authlib is untyped
    """A registered client as Authlib asks about it."""

    def __init__(self, info: ClientInfo, provider: OidcProvider) -> None:
        self.info = info
        self.client_id = info.client_id
        self.id_token_signed_response_alg = info.id_token_alg.value
        self._provider = provider

    def get_client_id(self) -> str:
        """The client_id."""
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        """None: OIDC Core §3.1.2.1 requires redirect_uri in every request."""

    def get_allowed_scope(self, scope: str) -> str:
        """The requested scope, already checked at the authorization endpoint."""
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match (RFC 9700 §2.1)."""
        return redirect_uri in self.info.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        """The registry's constant-time comparison of the secret's SHA-256."""
        return self._provider.clients.verify_secret(self.client_id, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:  # noqa: ARG002 - Authlib's signature
        """Only the method the client registered."""
        return method == self.info.auth_method.value

    def check_response_type(self, response_type: str) -> bool:
        """Code flow only."""
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        """Authorization code and refresh token."""
        return grant_type in GRANT_TYPES


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc] # Authlib is untyped
    """``private_key_jwt`` (OIDC Core §9, RFC 7523 §2.2, §3)."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, provider: OidcProvider) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self._provider = provider
        oidc = provider.settings.oidc
        self._key_sets = ClientKeySets(
            HttpJwksFetcher(timeout=oidc.jwks_uri_timeout), ttl=oidc.jwks_uri_cache_ttl,
            refetch_interval=oidc.jwks_uri_refetch_interval, clock=provider.clock,
        )

    def get_audiences(self) -> list[str]:
        """RFC 7523 §3: aud identifies the server: issuer, token or PAR endpoint (RFC 9126 §2)."""
        return [
            self._provider.issuer,
            self._provider.url("token_endpoint"),
            self._provider.url("pushed_authorization_request_endpoint"),
        ]

    def verify_claims(self, claims: dict[str, Any]) -> None:
        """Authlib's checks (iss = sub = client_id, aud, exp, jti), then a bounded lifetime.

        RFC 7523 §3: "The JWT MUST contain an exp claim"; we also refuse one valid for longer
        than the jti is remembered, or its replay would pass once the jti is forgotten.
        """
        super().verify_claims(claims)
        now = self._provider.clock.now().timestamp()
        max_age = self._provider.settings.oidc.client_assertion_max_age.total_seconds()
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] > now + max_age:
            raise InvalidClientError(description="the client assertion must expire within 5 minutes")

    def validate_jti(self, claims: dict[str, Any], jti: object) -> bool:
        """RFC 7523 §3: "The authorization server MAY ensure that JWTs are not replayed"; we do."""
        if not isinstance(jti, str) or not jti:
            return False
        key = f"jti:{code_hash(str(claims['iss']))}:{hashlib.sha256(jti.encode()).hexdigest()}"
        return self._provider.ephemeral.put_new(key, b"1", ttl=self._provider.settings.oidc.client_assertion_max_age)

    def resolve_client_public_key(self, client: OAuthClient) -> KeySet | Callable[[GuestProtocol], KeySet]:
        """The client's registered JWK Set: inline ``jwks``, or fetched from its ``jwks_uri``.

        For a ``jwks_uri`` client, a resolver that joserfc calls with the assertion's header, so
        that a ``kid`` the cached set lacks can fetch the rotated set (``idp.oidc.client_jwks``).
        """
        if client.info.jwks_uri is not None:
            return functools.partial(self._fetched_keys, client.info.client_id, client.info.jwks_uri)
        if client.info.jwks is None:
            raise InvalidClientError(description="the client has no registered keys")
        try:
            return KeySet.import_key_set(dict(client.info.jwks))  # type: ignore[arg-type]
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="the client's registered keys cannot be read") from exc

    def _fetched_keys(self, client_id: str, jwks_uri: str, assertion: GuestProtocol) -> KeySet:
        """The set at ``jwks_uri`` (unverified header: ``kid`` only picks which key to try)."""
        kid = assertion.headers().get("kid")
        try:
            return self._key_sets.key_set(
                client_id=client_id, jwks_uri=jwks_uri, kid=kid if isinstance(kid, str) else None,
            )
        except KeysUnavailable as exc:
            raise InvalidClientError(description="the client's keys cannot be fetched from its jwks_uri") from exc


class S256Only(CodeChallenge):  # type: ignore[misc] # Authlib is untyped
    """RFC 7636 with S256 only: Authlib allows ``plain`` and defaults to it; we do not (style §8)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - Authlib's class attribute

    def get_authorization_code_challenge(self, authorization_code: IssuedCode) -> str:
        """The challenge the authorization request carried (always present: required there)."""
        return authorization_code.request.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: IssuedCode) -> str:
        """Always S256: the authorization endpoint accepts nothing else."""
        return authorization_code.request.code_challenge_method


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc] # Authlib is untyped
    """The authorization code grant at the token endpoint; codes come from ``idp.oidc.codes``."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    @property
    def provider(self) -> OidcProvider:
        """The provider this server belongs to."""
        found: OidcProvider = self.server.provider
        return found

    def query_authorization_code(self, code: str, client: OAuthClient) -> IssuedCode | None:
        """The atomic take of the code (style §7); a replay revokes what the code issued."""
        result = self.provider.codes.redeem(code, client_id=client.client_id)
        if result is Redemption.REPLAYED:
            # RFC 6749 §4.1.2: the server "SHOULD revoke ... all tokens previously issued based on
            # that authorization code".
            logger.warning("token.rejected reason=code_replayed client=%s", client.client_id)
            metrics.token_rejected("code_replayed")
            self.provider.revoke_grant(code_hash(code))
            return None
        if isinstance(result, Redemption):
            return None
        return result

    def delete_authorization_code(self, authorization_code: IssuedCode) -> None:
        """Nothing: the code was taken when it was queried."""

    def authenticate_user(self, authorization_code: IssuedCode) -> IssuedCode:
        """The login the code stands for."""
        return authorization_code

    def save_authorization_code(self, code: str, request: object) -> None:  # pragma: no cover
        """Never called: codes are minted by the login page (``OidcProvider.finish_login``)."""
        raise NotImplementedError


_STORE_PROBE = "ops:token-probe"
"""A key never written: reading it tells whether the ephemeral store answers."""


class RotatingRefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc] # Authlib is untyped
    """RFC 6749 §6 with rotation on every use and reuse detection (RFC 9700 §4.14.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> GrantInfo | None:
        """Rotate the token now (one conditional UPDATE); reuse revokes the grant."""
        provider: OidcProvider = self.server.provider
        client_id = self.request.client.client_id
        # The new access token goes to the ephemeral store: fail (503) before rotating while it is
        # down, or the client would keep a spent refresh token whose next use revokes its grant.
        provider.ephemeral.get(_STORE_PROBE)
        result = provider.grants.rotate(refresh_token, client_id=client_id, now=provider.clock.now())
        if result is RefreshRejected.REUSED:
            logger.warning("token.rejected reason=refresh_token_reused client=%s", client_id)
            metrics.token_rejected("refresh_token_reused")
            return None
        if isinstance(result, RefreshRejected):
            return None
        return result

    def authenticate_user(self, refresh_token: GrantInfo) -> GrantInfo:
        """The grant."""
        return refresh_token

    def revoke_old_credential(self, refresh_token: GrantInfo) -> None:
        """Nothing: ``authenticate_refresh_token`` rotated it."""

    def issue_token(self, user: GrantInfo, refresh_token: GrantInfo) -> dict[str, Any]:
        """The new access and refresh tokens, and a new ID token for the same login (OIDC Core §12.2)."""
        token: dict[str, Any] = super().issue_token(user, refresh_token)
        token["id_token"] = refreshed_id_token(self.server.provider, self.request.client, user, token["access_token"])
        return token


def refreshed_id_token(provider: OidcProvider, client: OAuthClient, grant: GrantInfo, access_token: str) -> str:
    """An ID token for a refreshed grant (OIDC Core §12.2): the original login's, newly issued.

    §12.2: iss, sub and aud "MUST be the same as in the ID Token issued when the original
    authentication occurred", iat "MUST represent the time that the new ID Token is issued", and
    auth_time "MUST represent the time of the original authentication"; acr, amr and sid are the
    login's too. No nonce: no authentication request stands behind this token. "Otherwise, the
    same rules apply": the consented attributes the login asked for in the ID token, if the
    consent and the certificate still stand, and at_hash of the new access token.
    """
    key = provider.keys.signing_key(client.id_token_signed_response_alg)
    now = int(provider.clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": provider.issuer,
        "sub": provider.subject(client.info, grant.person_id),
        "aud": client.client_id,
        "exp": now + int(provider.settings.oidc.id_token_lifetime.total_seconds()),
        "iat": now,
        "auth_time": int(grant.auth_time.timestamp()),
        "amr": list(grant.amr),
        "sid": grant.sid,
        "at_hash": create_half_hash(access_token, key.alg).decode(),
    }
    if grant.acr is not None:
        claims["acr"] = grant.acr
    claims.update(provider.released_claims(grant.grant_id, location="id_token"))
    return jwt.encode({"alg": key.alg, "kid": key.kid, "typ": "JWT"}, claims, key.key, algorithms=[key.alg])


class IdTokenExtension(OpenIDCode):  # type: ignore[misc] # Authlib is untyped
    """The ID token of the code flow (OIDC Core §2, §3.1.3.6), signed with joserfc."""

    def __init__(self, provider: OidcProvider) -> None:
        super().__init__(require_nonce=True)
        self._provider = provider

    def encode_id_token(self, token: dict[str, Any], request: Any) -> str:
        """Sign the ID token for the code being redeemed."""
        client: OAuthClient = request.client
        issued: IssuedCode = request.authorization_code
        provider = self._provider
        key = provider.keys.signing_key(client.id_token_signed_response_alg)
        now = int(provider.clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": provider.issuer,
            "sub": provider.subject(client.info, issued.person_id),
            "aud": client.client_id,
            "exp": now + int(provider.settings.oidc.id_token_lifetime.total_seconds()),
            "iat": now,
            "auth_time": issued.get_auth_time(),
            "nonce": issued.request.nonce,
            "amr": list(issued.amr),
            "sid": issued.sid,
            "at_hash": create_half_hash(token["access_token"], key.alg).decode(),
        }
        if issued.acr is not None:
            claims["acr"] = issued.acr
        # The grant was just made from this code: when the code asks no attributes in the ID
        # token, neither does the grant, and the lookup is skipped.
        wanted = requested_claims(scope=issued.request.scope, claims=issued.request.claims, location="id_token")
        if wanted & set(issued.consented_attributes):
            claims.update(provider.released_claims(issued.grant_id, location="id_token"))
        return jwt.encode({"alg": key.alg, "kid": key.kid, "typ": "JWT"}, claims, key.key, algorithms=[key.alg])

    def exists_nonce(self, nonce: str, request: Any) -> bool:  # pragma: no cover - authorization side unused
        """Unused: the authorization endpoint is the portal's own."""
        raise NotImplementedError


class TooManyRequestsError(OAuth2Error):  # type: ignore[misc] # Authlib is untyped
    """A client over its rate limit: 429 with Retry-After (``idp.ops.rate_limits``)."""

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(description=f"too many requests: retry after {retry_after} s")
        self.retry_after = retry_after
        metrics.rate_limited(limit)
        logger.info("limits.refused limit=%s retry_after=%d", limit, retry_after)

    def get_headers(self) -> list[tuple[str, str]]:
        """Authlib's JSON headers, and when to come back."""
        headers: list[tuple[str, str]] = super().get_headers()
        return [*headers, ("Retry-After", str(self.retry_after))]


class PortalAuthorizationServer(AuthorizationServer):  # type: ignore[misc] # Authlib is untyped
    """Authlib's Flask server bound to the provider."""

    def __init__(self, provider: OidcProvider) -> None:
        super().__init__()
        self.provider = provider
        self.limiter: RateLimiter | None = None
        """Set by the application: counts each authenticated client's token and pushed requests."""
        self._query_client = self._find_client
        self._save_token = self._store_token

    def authenticate_client(self, request: Any, methods: Any, endpoint: str = "token") -> OAuthClient:
        """Authlib's client authentication, then the client's rate limit (token or PAR)."""
        client: OAuthClient = super().authenticate_client(request, methods, endpoint)
        if self.limiter is not None:
            try:
                self.limiter.client("par_client" if flask_request.path == "/par" else "token_client", client.client_id)
            except RateLimited as refused:
                raise TooManyRequestsError(refused.limit, refused.retry_after) from refused
        return client

    def _find_client(self, client_id: object) -> OAuthClient | None:
        if not isinstance(client_id, str):
            return None
        info = self.provider.clients.get(client_id)
        return None if info is None else OAuthClient(info, self.provider)

    def _store_token(self, token: dict[str, Any], request: Any) -> None:
        """Record the grant (code) or the rotated refresh token, and the access token by hash."""
        provider = self.provider
        now = provider.clock.now()
        client: OAuthClient = request.client
        if request.authorization_code is not None:
            issued: IssuedCode = request.authorization_code
            try:
                grant = provider.grants.create(issued, refresh_token=token.get("refresh_token"), now=now)
            except DeviceNotActive as exc:
                logger.warning("token.rejected reason=device_revoked client=%s", client.client_id)
                raise InvalidGrantError(description="the phone that approved this login has been revoked") from exc
            if provider.revoked_meanwhile(grant.grant_id):  # a replay overtook this redemption
                provider.revoke_grant(grant.grant_id)
                raise InvalidGrantError(description="the authorization code was used more than once")
            if issued.request.signing is not None:  # RFC 9396 §7: the details granted, results bound to the grant
                token["authorization_details"] = current_app.extensions[SIGNING_FLOW_EXTENSION].grant(
                    issued.request.signing, client_id=client.client_id, grant_id=grant.grant_id,
                )
        else:
            grant = request.refresh_token
            provider.grants.add_refresh_token(grant.grant_id, token["refresh_token"], now=now)
        try:
            provider.access_tokens.store(token["access_token"], AccessTokenInfo(
                grant_id=grant.grant_id, client_id=client.client_id,
                subject=provider.subject(client.info, grant.person_id), scope=tuple(token["scope"].split()),
            ))
        except EphemeralStoreUnavailable:
            if request.authorization_code is not None:
                # The client gets a 503, not these tokens: a grant it never received must not stand.
                provider.grants.revoke(grant.grant_id, now=now)
            raise
        metrics.token_granted("authorization_code" if request.authorization_code is not None else "refresh_token")


def build_authorization_server(provider: OidcProvider) -> PortalAuthorizationServer:
    """The token endpoint's Authlib server with the portal's grants and client authentication."""
    server = PortalAuthorizationServer(provider)
    expires_in = int(provider.settings.oidc.access_token_ttl.total_seconds())
    server.register_token_generator("default", BearerTokenGenerator(
        access_token_generator=lambda **_: secrets.token_urlsafe(TOKEN_BYTES),
        refresh_token_generator=lambda **_: new_refresh_token(),
        expires_generator=lambda _client, _grant_type: expires_in,
    ))
    server.register_client_auth_method(PrivateKeyJwt.CLIENT_AUTH_METHOD, PrivateKeyJwt(provider))
    server.register_grant(CodeGrant, [S256Only(required=True), IdTokenExtension(provider)])
    server.register_grant(RotatingRefreshTokenGrant)
    return server

