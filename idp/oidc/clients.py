"""The OAuth client registry: registration by the operator, look-up by the endpoints (RFC 7591 metadata).

Clients are registered by ``idp clients add``, never over HTTP, so the checks here are the only
gate between an operator's typo and a redirect URI the portal will send codes to. Every value is
validated before anything is written; a rejection is ``InvalidClientMetadata`` or
``InvalidRedirectUri``, named for the RFC 7591 §3.2.2 error codes.

Caching: ``get`` and ``verify_secret`` are read on every authorization, token and userinfo
request, so the registry keeps what it read of a client (or that there is none) for
``cache_ttl`` (the ``oidc.client_cache_ttl`` setting, 30 s). ``register`` and ``remove`` clear
the cache of this process at once; in every other process a removed client is refused, and a
new one found, within ``cache_ttl``. A ``cache_ttl`` of zero (the default, used by the CLI)
reads the database each time.
"""

from __future__ import annotations

import base64
import builtins
import copy
import dataclasses
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import SplitResult, urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key, KeySet
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from idp.audit import AuditEvent, append_in
from idp.clock import Clock, SystemClock
from idp.oidc.records import AuthMethod, Client, IdTokenAlgorithm
from idp.urls import UnacceptableUrl, check_tls_url, split_url
from idp.webhooks.registry import InvalidWebhookUrl, check_webhook_url, new_secret, put_in

__all__ = [
    "SUPPORTED_SCOPES",
    "ClientInfo",
    "ClientRegistry",
    "InvalidClientMetadata",
    "InvalidRedirectUri",
    "RegisteredClient",
    "signing_keys_of",
]

SUPPORTED_SCOPES = ("openid", "name", "address", "birthdate", "gender", "sign")
"""The scopes a client may be allowed, named as Japan's Digital Authentication App names them."""

MAX_NAME_LENGTH = 100
MIN_RSA_KEY_BITS = 2048
"""FAPI 2.0 Security Profile §5.4: RSA keys shall have a minimum length of 2048 bits."""

_SIGNING_CURVES: dict[object, tuple[str, ...]] = {
    "EC": ("P-256", "P-384", "P-521"),
    "RSA": (),
    "OKP": ("Ed25519", "Ed448"),
}
"""Public key types a client may sign its assertions with, and their curves (none for RSA)."""
_PRIVATE_KEY_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
"""RFC 7518 §6.2.2, §6.3.2, §6.4.1 and RFC 8037 §2: members that only a private (or secret) key has."""
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SECRET_BYTES = 32
_CLIENT_ID_BYTES = 18


class InvalidClientMetadata(ValueError):
    """A registration value is unacceptable (RFC 7591 §3.2.2 ``invalid_client_metadata``).

    ``field`` is the RFC 7591 metadata name of the offending value; ``message`` says what to fix.
    """

    error: ClassVar[str] = "invalid_client_metadata"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidRedirectUri(InvalidClientMetadata):
    """A redirect URI is unacceptable (RFC 7591 §3.2.2 ``invalid_redirect_uri``)."""

    error: ClassVar[str] = "invalid_redirect_uri"

    def __init__(self, message: str) -> None:
        super().__init__("redirect_uris", message)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientInfo:
    """A registered client as the endpoints see it; carries no secret and no secret hash."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    """Matched by exact string comparison (RFC 9700 §2.1); RFC 8252 §7.3 lets only a loopback URI's
    port vary at request time, which is the authorization endpoint's rule to apply."""
    auth_method: AuthMethod
    scopes: tuple[str, ...]
    jwks: Mapping[str, Any] | None
    """The public JWK Set for ``private_key_jwt``, as registered; a copy per read."""
    jwks_uri: str | None
    require_par: bool
    id_token_alg: IdTokenAlgorithm
    sector: str
    """The host pairwise ``sub`` values are computed for (OIDC Core §8.1)."""
    created_at: datetime
    post_logout_redirect_uris: tuple[str, ...] = ()
    """Where RP-initiated logout may return the browser (RP-Initiated Logout 1.0 §3.1); exact match."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisteredClient:
    """What registration returns: the stored client, and its secret this one time."""

    client: ClientInfo
    client_secret: str | None = field(repr=False)
    """The plaintext secret for ``client_secret_basic``; the portal keeps only its SHA-256."""
    webhook_secret: str | None = field(default=None, repr=False)
    """The secret the client's webhook messages are signed with (``idp.webhooks``), when it has one."""


class ClientRegistry:
    """Registers, finds, lists and removes clients; each method is one short transaction."""

    _NO_SECRET_DIGEST = hashlib.sha256(b"").digest()

    def __init__(
        self, sessions: sessionmaker[Session], *, cache_ttl: timedelta = timedelta(0), clock: Clock | None = None,
    ) -> None:
        """``cache_ttl``: how long a read of a client is reused (zero: never; see the module's notes)."""
        self._sessions = sessions
        self._cache_ttl = cache_ttl
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._cache: dict[str, _Cached] = {}

    def __repr__(self) -> str:
        return f"ClientRegistry(cache_ttl={self._cache_ttl})"

    def register(
        self,
        *,
        name: str,
        redirect_uris: Sequence[str],
        auth_method: str,
        scopes: Iterable[str],
        jwks: Mapping[str, Any] | None = None,
        jwks_uri: str | None = None,
        require_par: bool = False,
        id_token_alg: str = IdTokenAlgorithm.ES256,
        sector: str | None = None,
        post_logout_redirect_uris: Sequence[str] = (),
        webhook_url: str | None = None,
        now: datetime,
    ) -> RegisteredClient:
        """Validate the metadata and store a new client with a random ``client_id`` (and its
        webhook, with a new secret, when ``webhook_url`` is given: docs/signing.md, "Webhooks").

        Raises InvalidRedirectUri or InvalidClientMetadata, having written nothing.
        """
        checked_name = _check_name(name)
        checked_uris = _check_redirect_uris(redirect_uris)
        method = _check_auth_method(auth_method)
        checked_jwks, checked_jwks_uri = _check_keys(method, jwks, jwks_uri)
        checked_scopes = _check_scopes(scopes)
        algorithm = _check_id_token_alg(id_token_alg)
        checked_sector = _check_sector(sector, checked_uris)
        checked_logout_uris = _check_post_logout_redirect_uris(post_logout_redirect_uris)
        checked_webhook = _check_webhook_url(webhook_url)
        webhook_secret = None if checked_webhook is None else new_secret()

        secret = secrets.token_urlsafe(_SECRET_BYTES) if method is AuthMethod.CLIENT_SECRET_BASIC else None
        row = Client(
            client_id=_new_client_id(),
            name=checked_name,
            redirect_uris=list(checked_uris),
            token_endpoint_auth_method=method.value,
            client_secret_sha256=None if secret is None else _digest(secret),
            jwks=checked_jwks,
            jwks_uri=checked_jwks_uri,
            scopes=list(checked_scopes),
            require_pushed_authorization_requests=require_par,
            id_token_signed_response_alg=algorithm.value,
            sector_identifier=checked_sector,
            post_logout_redirect_uris=list(checked_logout_uris),
            created_at=now,
        )
        with self._sessions.begin() as session:
            session.add(row)
            if checked_webhook is not None and webhook_secret is not None:
                session.flush()  # the client row first: the webhook refers to it
                put_in(session, row.client_id, checked_webhook, webhook_secret, now=now)
            append_in(
                session, AuditEvent.CLIENT_REGISTERED, at=now, actor="operator", subject=f"client:{row.client_id}",
                details={"auth_method": method.value, "scopes": list(checked_scopes)},
            )
        self._cache.clear()
        return RegisteredClient(client=_info(row), client_secret=secret, webhook_secret=webhook_secret)

    def get(self, client_id: str) -> ClientInfo | None:
        """The client registered as ``client_id``, or None (as of at most ``cache_ttl`` ago)."""
        info = self._read(client_id).info
        if info is None or info.jwks is None:
            return info
        return dataclasses.replace(info, jwks=copy.deepcopy(info.jwks))  # a copy per read, as documented

    def list(self) -> builtins.list[ClientInfo]:
        """Every registered client, oldest first."""
        with self._sessions.begin() as session:
            rows = session.scalars(select(Client).order_by(Client.created_at, Client.client_id)).all()
            return [_info(row) for row in rows]

    def remove(self, client_id: str) -> bool:
        """Delete the client; False when there was none."""
        with self._sessions.begin() as session:
            removed = session.execute(
                delete(Client).where(Client.client_id == client_id).returning(Client.client_id),
            ).first()
            if removed is not None:
                append_in(
                    session, AuditEvent.CLIENT_REMOVED, at=self._clock.now(), actor="operator",
                    subject=f"client:{client_id}",
                )
        self._cache.clear()
        return removed is not None

    def verify_secret(self, client_id: str, secret: str) -> bool:
        """Whether ``secret`` is the client's secret (RFC 6749 §2.3.1), compared in constant time.

        False for an unknown client and for a client that has no secret (``private_key_jwt``).
        """
        stored = self._read(client_id).secret_sha256
        # Compare even when there is nothing to compare with, so that the time taken does not
        # tell an unknown client from a wrong secret.
        matches = hmac.compare_digest(_digest(secret), stored or self._NO_SECRET_DIGEST)
        return matches and stored is not None

    def _read(self, client_id: str) -> _Cached:
        """The client's row as last read, re-read from the database once ``cache_ttl`` has passed."""
        now = self._clock.now()
        cached = self._cache.get(client_id)
        if cached is not None and now < cached.expires_at:
            return cached
        with self._sessions.begin() as session:
            row = session.get(Client, client_id)
            fresh = _Cached(
                info=None if row is None else _info(row),
                secret_sha256=None if row is None else row.client_secret_sha256,
                expires_at=now + self._cache_ttl,
            )
        if self._cache_ttl > timedelta(0):
            if len(self._cache) >= _CACHE_LIMIT:  # unknown client_ids must not grow it without bound
                self._cache.clear()
            self._cache[client_id] = fresh
        return fresh


_CACHE_LIMIT = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class _Cached:
    info: ClientInfo | None
    secret_sha256: bytes | None = field(repr=False)
    expires_at: datetime


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _info(row: Client) -> ClientInfo:
    return ClientInfo(
        client_id=row.client_id,
        name=row.name,
        redirect_uris=tuple(row.redirect_uris),
        auth_method=AuthMethod(row.token_endpoint_auth_method),
        scopes=tuple(row.scopes),
        jwks=copy.deepcopy(row.jwks),
        jwks_uri=row.jwks_uri,
        require_par=row.require_pushed_authorization_requests,
        id_token_alg=IdTokenAlgorithm(row.id_token_signed_response_alg),
        sector=row.sector_identifier,
        created_at=row.created_at,
        post_logout_redirect_uris=tuple(row.post_logout_redirect_uris or ()),
    )


# --- the checks, one per metadata value, each raising before anything is written ------------


def _check_name(name: str) -> str:
    stripped = name.strip()
    if not stripped:
        raise InvalidClientMetadata("client_name", "must not be empty")
    if len(stripped) > MAX_NAME_LENGTH:
        raise InvalidClientMetadata("client_name", f"must be at most {MAX_NAME_LENGTH} characters")
    # The name is shown to the user as the proof of who is asking: no control or invisible
    # formatting characters (a bidi override could make one RP's name read as another's).
    if any(unicodedata.category(character) in _HIDDEN_CATEGORIES for character in stripped):
        raise InvalidClientMetadata("client_name", "must not contain control, formatting or line-break characters")
    return stripped


def _check_redirect_uris(uris: Sequence[str]) -> tuple[str, ...]:
    if isinstance(uris, str):
        raise InvalidRedirectUri("must be a list of URIs, not one string")
    if not uris:
        raise InvalidRedirectUri("at least one redirect URI is required")
    for uri in uris:
        _check_redirect_uri(uri)
    return tuple(dict.fromkeys(uris))


def _check_redirect_uri(uri: str) -> None:
    try:
        check_tls_url(uri)
    except UnacceptableUrl as exc:
        raise InvalidRedirectUri(str(exc)) from None


def _check_post_logout_redirect_uris(uris: Sequence[str]) -> tuple[str, ...]:
    """RP-Initiated Logout 1.0 §3.1: absolute URIs, held to the redirect URIs' rules (RFC 9700 §2.6)."""
    if isinstance(uris, str):
        raise InvalidClientMetadata("post_logout_redirect_uris", "must be a list of URIs, not one string")
    for uri in uris:
        try:
            _check_redirect_uri(uri)
        except InvalidRedirectUri as exc:
            raise InvalidClientMetadata("post_logout_redirect_uris", exc.message) from None
    return tuple(dict.fromkeys(uris))


def _check_webhook_url(url: str | None) -> str | None:
    """https, or http on a loopback host, as for redirect URIs (``idp.webhooks.check_webhook_url``)."""
    if url is None:
        return None
    try:
        return check_webhook_url(url)
    except InvalidWebhookUrl as exc:
        raise InvalidClientMetadata("webhook_url", str(exc)) from None


def _split_uri(uri: str, field: str) -> SplitResult:
    try:
        return split_url(uri)
    except UnacceptableUrl as exc:
        raise InvalidClientMetadata(field, str(exc)) from None


def _check_auth_method(auth_method: str) -> AuthMethod:
    try:
        return AuthMethod(auth_method)
    except ValueError:
        allowed = " or ".join(method.value for method in AuthMethod)
        raise InvalidClientMetadata("token_endpoint_auth_method", f"must be {allowed}") from None


def _check_keys(
    method: AuthMethod, jwks: Mapping[str, Any] | None, jwks_uri: str | None,
) -> tuple[dict[str, Any] | None, str | None]:
    if method is AuthMethod.CLIENT_SECRET_BASIC:
        if jwks is not None or jwks_uri is not None:
            offending = "jwks" if jwks is not None else "jwks_uri"
            raise InvalidClientMetadata(offending, "keys are for private_key_jwt; client_secret_basic uses a secret")
        return None, None
    # RFC 7591 §2: "The jwks_uri and jwks parameters MUST NOT both be present".
    if jwks is not None and jwks_uri is not None:
        raise InvalidClientMetadata("jwks", "give jwks or jwks_uri, not both")
    if jwks_uri is not None:
        return None, _check_jwks_uri(jwks_uri)
    if jwks is None:
        raise InvalidClientMetadata("jwks", "private_key_jwt needs the client's public keys: jwks or jwks_uri")
    return _check_jwks(jwks), None


def _check_jwks_uri(uri: str) -> str:
    parts = _split_uri(uri, "jwks_uri")
    if parts.scheme != "https" or not parts.hostname or "#" in uri or "@" in parts.netloc:
        raise InvalidClientMetadata("jwks_uri", f"{uri!r} must be an https URL without fragment or user information")
    return uri


def _check_jwks(jwks: Mapping[str, Any]) -> dict[str, Any]:
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    # RFC 7517 §5: a JWK Set is an object whose "keys" member is an array of JWKs.
    if not isinstance(keys, list) or not keys:
        raise InvalidClientMetadata("jwks", 'must be a JWK Set: an object with a non-empty "keys" array')
    imported = [_check_public_jwk(number, key) for number, key in enumerate(keys, start=1)]
    kids = [key.kid for key in imported if key.kid is not None]
    # RFC 7517 §4.5: keys within a set "SHOULD use distinct kid values"; we need them to pick one.
    if len(kids) != len(set(kids)):
        raise InvalidClientMetadata("jwks", "two keys share a kid")
    return {"keys": copy.deepcopy(keys)}


def _check_public_jwk(number: int, key: object) -> Key:
    if not isinstance(key, Mapping):
        raise InvalidClientMetadata("jwks", f"key {number} is not a JSON object")
    # joserfc's KeySet.import_key_set skips a key of unknown type (RFC 7517 §5); we refuse it, and
    # "oct" keys, which are shared secrets, and curves that do not sign (X25519).
    curves = _SIGNING_CURVES.get(key.get("kty"))
    if curves is None:
        raise InvalidClientMetadata("jwks", f"key {number}: kty must be EC, RSA or OKP")
    if curves and key.get("crv") not in curves:
        raise InvalidClientMetadata("jwks", f"key {number}: crv must be one of {', '.join(curves)}")
    private = sorted(_PRIVATE_KEY_MEMBERS & set(key))
    if private:
        raise InvalidClientMetadata(
            "jwks", f"key {number} has private key members ({', '.join(private)}): register public keys only",
        )
    if key.get("use", "sig") != "sig" or "verify" not in key.get("key_ops", ["verify"]):
        raise InvalidClientMetadata("jwks", f'key {number} must be for signatures (use "sig", key_ops "verify")')
    # Checked before the import, which warns about short RSA keys rather than refusing them.
    bits = _bit_length(key.get("n")) if key.get("kty") == "RSA" else None
    if bits is not None and bits < MIN_RSA_KEY_BITS:
        raise InvalidClientMetadata("jwks", f"key {number}: RSA keys must be at least {MIN_RSA_KEY_BITS} bits")
    try:
        return JWKRegistry.import_key(dict(key))
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidClientMetadata("jwks", f"key {number} is not a valid public key: {exc or 'bad encoding'}") from exc


def signing_keys_of(document: object) -> KeySet:
    """The signature keys of a JWK Set a client publishes at its ``jwks_uri`` (RFC 7517 §5).

    A published set may hold keys the portal has no use for (encryption keys, types it does not
    verify with): they are skipped, as RFC 7517 §5 says a set's unknown keys "SHOULD" be ignored.
    A set with a private key, two signature keys sharing a kid, or no signature key at all is
    refused with InvalidClientMetadata naming ``jwks_uri``.
    """
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list):
        raise InvalidClientMetadata("jwks_uri", 'must serve a JWK Set: an object with a "keys" array')
    usable: builtins.list[Key] = []
    for number, key in enumerate(keys, start=1):
        if isinstance(key, Mapping) and _PRIVATE_KEY_MEMBERS & set(key):
            # A published private key means whoever read the set can sign as the client.
            raise InvalidClientMetadata("jwks_uri", f"key {number} has private key members: publish public keys only")
        try:
            usable.append(_check_public_jwk(number, key))
        except InvalidClientMetadata:
            continue
    kids = [key.kid for key in usable if key.kid is not None]
    if len(kids) != len(set(kids)):
        raise InvalidClientMetadata("jwks_uri", "two signature keys share a kid")
    if not usable:
        raise InvalidClientMetadata("jwks_uri", "the JWK Set holds no public signature key")
    return KeySet(usable)


def _bit_length(base64url: object) -> int | None:
    """The bit length of a base64url-encoded unsigned integer (RFC 7518 §2), None if it is not one."""
    if not isinstance(base64url, str):
        return None
    try:
        value = base64.b64decode(base64url + "=" * (-len(base64url) % 4), altchars=b"-_", validate=True)
    except ValueError:
        return None
    return int.from_bytes(value).bit_length()


def _check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        raise InvalidClientMetadata("scope", "must be a list of scopes, not one string")
    requested = builtins.list(scopes)
    unknown = [scope for scope in requested if scope not in SUPPORTED_SCOPES]
    if unknown:
        raise InvalidClientMetadata("scope", f"unknown scope {unknown[0]!r}; allowed: {' '.join(SUPPORTED_SCOPES)}")
    # OIDC Core §3.1.2.1: OpenID Connect requests MUST contain the openid scope value.
    if "openid" not in requested:
        raise InvalidClientMetadata("scope", "must include openid")
    return tuple(scope for scope in SUPPORTED_SCOPES if scope in requested)


def _check_id_token_alg(alg: str) -> IdTokenAlgorithm:
    try:
        return IdTokenAlgorithm(alg)
    except ValueError:
        allowed = " or ".join(member.value for member in IdTokenAlgorithm)
        raise InvalidClientMetadata("id_token_signed_response_alg", f"must be {allowed}") from None


def _check_sector(sector: str | None, redirect_uris: Sequence[str]) -> str:
    if sector is not None:
        if not _HOSTNAME.match(sector):
            raise InvalidClientMetadata("sector_identifier", f"{sector!r} must be a lower-case host name (rp.example)")
        return sector
    # OIDC Core §8.1: without a sector identifier, the sector is the redirect URIs' host.
    hosts = {urlsplit(uri).hostname for uri in redirect_uris}
    if len(hosts) != 1:
        raise InvalidClientMetadata(
            "sector_identifier",
            f"the redirect URIs are on several hosts ({', '.join(sorted(map(str, hosts)))}): "
            "give the sector that pairwise sub values are computed for",
        )
    (host,) = hosts
    return str(host)


def _new_client_id() -> str:
    """A random client id in lower-case base32: no ``-`` to be mistaken for an option on a command
    line (``idp clients remove <id>``), no ``_`` or case to mistype."""
    return base64.b32encode(secrets.token_bytes(_CLIENT_ID_BYTES)).decode().rstrip("=").lower()
