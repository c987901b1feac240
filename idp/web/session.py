"""The portal session (OIDC Core §3.1.2.1 ``prompt=none``, §3.1.2.6) and RP-initiated logout.

A login that completes (``/login/<id>/continue`` mints the code) leaves a portal session in the
browser: a random id in an HttpOnly, SameSite=Lax cookie (``Secure`` and ``__Host-`` on an https
issuer); the ephemeral store keeps the record under the id's SHA-256, never the id itself. It
lasts ``login.session_idle_ttl`` unused and ``login.session_lifetime`` at most.

Design decision: the session serves ``prompt=none`` (and the account page) only. A request
without ``prompt=none`` always asks the phone: every login at an RP is a conscious act on the
phone, never a silent redirect. With ``prompt=none`` the checks of ``SILENT_CHECKS`` run in
order; each refusal is redirected to the client with ``state`` and ``iss`` (RFC 9207), else the
code is minted through the same path as an interactive login, naming the session's login
(``auth_time``, ``acr``, ``amr``, ``sid``).

RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) ends the session: see ``end_session``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.oidc.core.errors import ConsentRequiredError
from flask import Flask, current_app, redirect, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from werkzeug.wrappers import Response

from idp.ceremonies.devices import SqlDeviceDirectory
from idp.ceremonies.transactions import AuthorizationRequest, Outcome, OutcomeKind
from idp.oidc.clients import ClientInfo
from idp.oidc.errors import LoginRequiredError, OAuth2Error
from idp.oidc.keys import ALGORITHMS
from idp.oidc.provider import OidcProvider
from idp.oidc.responses import error_redirect, redirect_to_client
from idp.ops.unavailable import UNAVAILABLE_ERRORS
from idp.pki.registry import CertificateState, CertificateStatus
from idp.store.ephemeral import KeyValueStore

__all__ = [
    "SESSION_EXTENSION",
    "SILENT_CHECKS",
    "LogoutRefused",
    "PortalSession",
    "SessionStore",
    "certificate_good",
    "clear_session_cookie",
    "current_session",
    "end_session",
    "install_sessions",
    "provider_of_sessions",
    "session_cookie_name",
    "silent_login",
    "start_session",
]

logger = logging.getLogger("idp.session")

SESSION_EXTENSION = "myna.sessions"
SESSION_ID_BYTES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class PortalSession:
    """What a completed login left in the browser: who, on which phone, and the login itself."""

    person_id: str
    device_id: str
    auth_time: datetime
    acr: str | None
    amr: tuple[str, ...]
    sid: str
    """The login session id every ID token of this session carries."""
    started_at: datetime
    last_used_at: datetime
    csrf_token: str
    """Binds the account page's forms to this session (a secret, never logged)."""

    def to_json(self) -> bytes:
        """Serialise for the ephemeral store."""
        return json.dumps({
            "person_id": self.person_id, "device_id": self.device_id, "auth_time": self.auth_time.isoformat(),
            "acr": self.acr, "amr": list(self.amr), "sid": self.sid, "started_at": self.started_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat(), "csrf_token": self.csrf_token,
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> PortalSession:
        """The inverse of ``to_json``."""
        data = json.loads(raw)
        for name in ("auth_time", "started_at", "last_used_at"):
            data[name] = datetime.fromisoformat(data[name])
        data["amr"] = tuple(data["amr"])
        return cls(**data)


class SessionStore:
    """Portal sessions in the ephemeral store, under the SHA-256 of the cookie's random id."""

    def __init__(self, store: KeyValueStore, *, idle: timedelta, lifetime: timedelta) -> None:
        self._store = store
        self._idle = idle
        self._lifetime = lifetime

    def __repr__(self) -> str:
        return f"SessionStore(idle={self._idle}, lifetime={self._lifetime})"

    def start(self, outcome: Outcome, *, sid: str, now: datetime) -> tuple[str, PortalSession]:
        """A new session for an approved login; the id for the cookie, and the record."""
        if outcome.person_id is None or outcome.device_id is None or outcome.auth_time is None:
            raise ValueError("an approved outcome names the person, the device and the time of approval")
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        session = PortalSession(
            person_id=outcome.person_id, device_id=outcome.device_id, auth_time=outcome.auth_time,
            acr=outcome.acr, amr=outcome.amr, sid=sid, started_at=now, last_used_at=now,
            csrf_token=secrets.token_urlsafe(32),
        )
        self._store.put(_key(session_id), session.to_json(), ttl=self._ttl(session, now))
        return session_id, session

    def load(self, session_id: str | None, *, now: datetime) -> PortalSession | None:
        """The live session with that id, its idle time renewed; None when absent, idle or too old."""
        if not session_id or len(session_id) > 2 * SESSION_ID_BYTES:
            return None
        raw = self._store.get(_key(session_id))
        if raw is None:
            return None
        session = PortalSession.from_json(raw)
        if now - session.last_used_at >= self._idle or now - session.started_at >= self._lifetime:
            self.end(session_id)
            return None
        used = PortalSession(**{**_fields(session), "last_used_at": now})
        self._store.put(_key(session_id), used.to_json(), ttl=self._ttl(used, now))
        return used

    def end(self, session_id: str) -> None:
        """Forget the session."""
        self._store.delete(_key(session_id))

    def _ttl(self, session: PortalSession, now: datetime) -> timedelta:
        """Until the session goes idle or reaches its lifetime, whichever comes first."""
        return max(min(self._idle, session.started_at + self._lifetime - now), timedelta(seconds=1))


def _fields(session: PortalSession) -> dict[str, Any]:
    return {name: getattr(session, name) for name in PortalSession.__slots__}


def _key(session_id: str) -> str:
    return "portal-session:" + hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Sessions:
    """The app's session store, its device look-up and the provider, found by the request handlers."""

    store: SessionStore
    devices: SqlDeviceDirectory
    provider: OidcProvider


def install_sessions(app: Flask, provider: OidcProvider) -> None:
    """Give ``app`` its portal sessions (called by ``idp.oidc.http.register_oidc``)."""
    login = provider.settings.login
    store = SessionStore(provider.ephemeral, idle=login.session_idle_ttl, lifetime=login.session_lifetime)
    app.extensions[SESSION_EXTENSION] = _Sessions(store, provider.devices, provider)


def _sessions() -> _Sessions:
    found: _Sessions = current_app.extensions[SESSION_EXTENSION]
    return found


def provider_of_sessions() -> OidcProvider:
    """The provider the app's portal sessions belong to (for the account page)."""
    return _sessions().provider


def session_cookie_name(issuer: str) -> str:
    """``__Host-myna_session`` on https (Secure, host-only, path /), ``myna_session`` on loopback http."""
    return "__Host-myna_session" if issuer.startswith("https://") else "myna_session"


def current_session() -> tuple[str, PortalSession] | None:
    """The browser's live portal session and its id, or None."""
    sessions = _sessions()
    session_id = request.cookies.get(session_cookie_name(sessions.provider.issuer))
    session = sessions.store.load(session_id, now=sessions.provider.clock.now())
    return None if session is None or session_id is None else (session_id, session)


def start_session(response: Response, *, outcome: Outcome, sid: str) -> Response:
    """Give the browser a portal session for the login it just completed (replacing any it had).

    The code is already minted: should the store fail now, the login still reaches the client,
    only without a session (a later ``prompt=none`` is login_required).
    """
    sessions = _sessions()
    provider = sessions.provider
    cookie = session_cookie_name(provider.issuer)
    if outcome.person_id is None or outcome.device_id is None or outcome.auth_time is None:
        return response  # not a phone's approval: nothing to keep
    try:
        previous = request.cookies.get(cookie)
        if previous:
            sessions.store.end(previous)
        session_id, _session = sessions.store.start(outcome, sid=sid, now=provider.clock.now())
    except UNAVAILABLE_ERRORS as error:
        logger.warning("session.not_started error=%s", type(error).__name__)
        return response
    response.set_cookie(
        cookie, session_id, httponly=True, secure=provider.issuer.startswith("https://"), samesite="Lax", path="/",
    )
    logger.info("session.started device=%s", outcome.device_id)
    return response


def clear_session_cookie(response: Response, issuer: str) -> Response:
    """Clear the portal session's cookie on ``response``, with the attributes it was set with."""
    response.delete_cookie(
        session_cookie_name(issuer), path="/", secure=issuer.startswith("https://"), httponly=True, samesite="Lax",
    )
    return response


# --- prompt=none: the silent login ----------------------------------------------------------


@dataclass(kw_only=True)
class Silent:
    """A ``prompt=none`` request under check: what the checks so far found."""

    provider: OidcProvider
    sessions: _Sessions
    request: AuthorizationRequest
    now: datetime
    session_id: str | None = None
    session: PortalSession | None = None
    signature_certificate_serial: int | None = None
    ended: bool = False
    """Set when a check ended the session: the refusal clears the cookie too."""

    def refuse(self, error: OAuth2Error, reason: str) -> OAuth2Error:
        """``error`` redirected to the client with ``state``; logged with its private reason."""
        logger.info("session.silent_login_refused reason=%s client=%s", reason, self.request.client_id)
        error.redirect_uri = self.request.redirect_uri
        error.state = self.request.state
        return error


def require_fresh_authentication_allowed(silent: Silent) -> None:
    """OIDC Core §3.1.2.1: ``max_age=0`` asks for a fresh login, which only the phone gives."""
    if silent.request.max_age == 0:
        raise silent.refuse(LoginRequiredError("max_age=0 requires a new login on the phone"), "max_age")


def require_session(silent: Silent) -> None:
    """§3.1.2.6 login_required: the browser has no live portal session."""
    cookie = request.cookies.get(session_cookie_name(silent.provider.issuer))
    silent.session = silent.sessions.store.load(cookie, now=silent.now)
    if silent.session is None:
        raise silent.refuse(LoginRequiredError("there is no portal session"), "no_session")
    silent.session_id = cookie


def require_recent_login(silent: Silent) -> None:
    """§3.1.2.1 max_age: the session's login must be at most ``max_age`` seconds old."""
    assert silent.session is not None  # noqa: S101 - require_session ran first
    max_age = silent.request.max_age
    if max_age is not None and silent.now - silent.session.auth_time > timedelta(seconds=max_age):
        raise silent.refuse(LoginRequiredError("the last login is older than max_age"), "max_age")


def require_standing_device(silent: Silent) -> None:
    """The session's phone is still active and both its certificates good, now (SQL, no cache).

    Otherwise the session is over: it is ended, and the RP gets login_required.
    """
    assert silent.session is not None  # noqa: S101 - require_session ran first
    assert silent.session_id is not None  # noqa: S101 - require_session ran first
    device = silent.sessions.devices.active_device(silent.session.device_id)
    reason = None
    if device is None or device.person_id != silent.session.person_id:
        reason = "device_not_active"
    elif not (certificate_good(device.auth_certificate, silent.now)
              and certificate_good(device.sign_certificate_status, silent.now)):
        reason = "certificate_not_good"
    if reason is not None:
        silent.sessions.store.end(silent.session_id)
        silent.ended = True
        logger.info("session.ended reason=%s device=%s", reason, silent.session.device_id)
        raise silent.refuse(LoginRequiredError("the portal session has ended"), reason)
    assert device is not None  # noqa: S101 - refused above otherwise
    assert device.sign_certificate_status is not None  # noqa: S101 - the statement always reads it
    silent.signature_certificate_serial = device.sign_certificate_status.serial_number


def require_standing_consent(silent: Silent) -> None:
    """§3.1.2.6 consent_required: attributes the person has not consented to for this client."""
    assert silent.session is not None  # noqa: S101 - require_session ran first
    wanted = set(silent.request.requested_attributes)
    if not wanted:
        return
    granted = silent.provider.consents.granted(person_id=silent.session.person_id, client_id=silent.request.client_id)
    if not wanted <= granted:
        raise silent.refuse(ConsentRequiredError("consent for the requested attributes is needed"), "consent_missing")


SILENT_CHECKS: tuple[Callable[[Silent], None], ...] = (
    require_fresh_authentication_allowed,  # §3.1.2.1 max_age=0: never from the session
    require_session,                       # §3.1.2.6 login_required
    require_recent_login,                  # §3.1.2.1 max_age
    require_standing_device,               # the phone and its certificates, now
    require_standing_consent,              # §3.1.2.6 consent_required
)


def certificate_good(status: CertificateStatus | None, now: datetime) -> bool:
    """Whether a certificate's status (as read with the device) is good and unexpired at ``now``."""
    return status is not None and status.state is CertificateState.GOOD and now < status.not_after


def silent_login(provider: OidcProvider, client: ClientInfo, authorization: AuthorizationRequest) -> Response:
    """Answer a checked ``prompt=none`` request from the portal session, without any page.

    Runs ``SILENT_CHECKS``; a refusal is redirected to the client. Otherwise mints the code as
    an interactive login does (``mint_code``), for the session's login, and redirects.
    """
    silent = Silent(provider=provider, sessions=_sessions(), request=authorization, now=provider.clock.now())
    try:
        for check in SILENT_CHECKS:
            check(silent)
    except OAuth2Error as error:
        response = error_redirect(error, issuer=provider.issuer)
        return clear_session_cookie(response, provider.issuer) if silent.ended else response
    session = silent.session
    assert session is not None  # noqa: S101 - require_session set it
    requested = authorization.requested_attributes
    code = provider.mint_code(authorization, Outcome(
        kind=OutcomeKind.APPROVED, person_id=session.person_id, device_id=session.device_id,
        auth_time=session.auth_time, amr=session.amr, acr=session.acr, consented_attributes=requested,
        signature_certificate_serial=silent.signature_certificate_serial if requested else None,
    ), sid=session.sid)
    logger.info("session.silent_login client=%s device=%s", client.client_id, session.device_id)
    return redirect_to_client(
        authorization.redirect_uri, {"code": code, "state": authorization.state}, issuer=provider.issuer,
    )


# --- RP-initiated logout ----------------------------------------------------------------------


class LogoutRefused(Exception):
    """A logout request that is not honoured: shown on a page, never redirected."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.description = description


@dataclass(frozen=True, slots=True, kw_only=True)
class Logout:
    """A checked logout request: the client, whose ID token named whom, and where to go after."""

    client: ClientInfo
    subject: str
    redirect_uri: str | None
    state: str | None


def check_logout(provider: OidcProvider, params: dict[str, str]) -> Logout:
    """RP-Initiated Logout 1.0 §2–§3: verify ``id_token_hint`` and ``post_logout_redirect_uri``.

    The hint must be an ID token the portal signed ("the OP MUST validate that it was the
    issuer of the ID Token"), for a registered client; it may have expired (a hint, not a
    credential). A ``client_id`` given as well must be its audience. The redirect URI must be
    one the client registered: §3 "The OP MUST NOT perform post-logout redirection if the
    post_logout_redirect_uri value supplied does not exactly match one of the previously
    registered post_logout_redirect_uris values". Raises LogoutRefused.
    """
    hint = params.get("id_token_hint")
    if not hint:
        raise LogoutRefused("hint_missing", "id_token_hint is required")
    claims = _verified_hint(provider, hint)
    audience = claims.get("aud")
    client_id = audience if isinstance(audience, str) else None
    client = provider.clients.get(client_id) if client_id else None
    if client is None or not isinstance(claims.get("sub"), str):
        raise LogoutRefused("unknown_client", "id_token_hint is not an ID token of a registered client")
    if params.get("client_id") not in {None, client.client_id}:
        raise LogoutRefused("client_mismatch", "client_id is not the audience of id_token_hint")
    redirect_uri = params.get("post_logout_redirect_uri")
    if redirect_uri is not None and redirect_uri not in client.post_logout_redirect_uris:
        raise LogoutRefused("redirect_uri_not_registered", "post_logout_redirect_uri is not registered for this client")
    return Logout(client=client, subject=claims["sub"], redirect_uri=redirect_uri, state=params.get("state"))


def _verified_hint(provider: OidcProvider, hint: str) -> dict[str, Any]:
    """The claims of an ID token signed by the portal's keys and naming it as issuer."""
    keys = KeySet([provider.keys.signing_key(alg).key for alg in ALGORITHMS])
    try:
        token = jwt.decode(hint, keys, algorithms=list(ALGORITHMS))
    except (JoseError, ValueError) as exc:
        raise LogoutRefused("hint_invalid", "id_token_hint is not an ID token issued here") from exc
    if token.claims.get("iss") != provider.issuer:
        raise LogoutRefused("hint_invalid", "id_token_hint is not an ID token issued here")
    return dict(token.claims)


def end_session(provider: OidcProvider, logout: Logout, *, page: Callable[[], Response]) -> Response:
    """End the browser's portal session when it is the hint's person's; then redirect or show ``page``.

    The session is ended only when the hint's ``sub`` is the session's person for that client:
    an ID token of someone else cannot log this browser out. The browser goes to the registered
    ``post_logout_redirect_uri`` with ``state`` (§3), else sees the portal's own page.
    """
    ended = False
    found = current_session()
    if found is not None:
        session_id, session = found
        if provider.subject(logout.client, session.person_id) == logout.subject:
            _sessions().store.end(session_id)
            ended = True
            logger.info("session.ended reason=logout client=%s", logout.client.client_id)
    if logout.redirect_uri is None:
        response = page()
    else:
        state = [("state", logout.state)] if logout.state else []
        response = redirect(add_params_to_uri(logout.redirect_uri, state), code=303)
        response.headers["Cache-Control"] = "no-store"
    return clear_session_cookie(response, provider.issuer) if ended else response
