"""The OpenID Connect endpoints over HTTP: discovery, JWKS, authorize, PAR, token, userinfo, logout.

Errors: at ``/authorize`` an error found before the redirect URI is verified is an HTML page
(400), never a redirect; after, a redirect with ``error``, ``state`` and ``iss``. ``/par`` and
``/token`` answer OAuth error JSON (RFC 6749 §5.2); ``/userinfo`` answers 401 with
``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 §3). Anything unexpected is
``server_error`` without detail, logged. When PostgreSQL or Redis cannot be reached, every
endpoint answers 503 with ``Retry-After``: ``/authorize`` the HTML page, the others
``temporarily_unavailable`` JSON (``idp.ops.unavailable``). ``/logout`` (RP-Initiated Logout 1.0)
shows a refused request on a page and never redirects it.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Flask, current_app, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from idp.oidc.authorization import check_authorization_request
from idp.oidc.discovery import END_SESSION_PATH, provider_metadata
from idp.oidc.errors import InvalidRequestError, InvalidRequestUriError, InvalidTokenError, OAuth2Error
from idp.oidc.provider import GrantRevoked, OidcProvider
from idp.oidc.responses import error_redirect
from idp.oidc.server import AUTH_METHODS, PortalAuthorizationServer, build_authorization_server
from idp.ops.unavailable import Dependency, register_unavailable_handler, unavailable_json
from idp.signing.flow import SIGNING_FLOW_EXTENSION
from idp.web.account import create_account_blueprint, logged_out_page
from idp.web.login import create_login_blueprint, error_page, start_login, unavailable_page
from idp.web.session import LogoutRefused, check_logout, end_session, install_sessions, silent_login

__all__ = ["register_oidc"]

logger = logging.getLogger("idp.oidc")


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers or {})
    return response


def _oauth_error_json(error: OAuth2Error) -> Response:
    status, body, headers = error()
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for name, value in headers:
        if name.lower() != "content-type":
            response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


class _Endpoints:
    def __init__(self, provider: OidcProvider, server: PortalAuthorizationServer) -> None:
        self.provider = provider
        self.server = server
        self.metadata = provider_metadata(provider.issuer)

    def discovery(self) -> Response:
        """OpenID Connect Discovery 1.0 §4."""
        response = _json(self.metadata)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    def jwks(self) -> Response:
        """The public signing keys (RFC 7517 §5)."""
        response = _json(self.provider.keys.jwks())
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    def authorize(self) -> Response:
        """RFC 6749 §4.1.1 / OIDC Core §3.1.2: check the request, answer with the login page."""
        provider = self.provider
        try:
            if request.args.get("request_uri"):
                client, authorization = self._pushed(request.args)
            else:
                client, authorization = check_authorization_request(request.args, find_client=provider.clients.get)
        except OAuth2Error as error:
            if error.redirect_uri:
                return error_redirect(error, issuer=provider.issuer)
            return error_page(error.error, error.description)
        if "none" in authorization.prompt:  # OIDC Core §3.1.2.6: from the portal session, never a page
            return silent_login(provider, client, authorization)
        return start_login(provider, client, authorization)

    def _pushed(self, params: MultiDict[str, str]) -> Any:
        """RFC 9126 §4: client_id and request_uri; the pushed request, taken once."""
        client_id = params.get("client_id")
        client = self.provider.clients.get(client_id) if client_id else None
        if client is None:
            raise InvalidRequestError("client_id is required and must be registered")
        pushed = self.provider.pushed.take(params.get("request_uri", ""), client_id=client.client_id)
        if pushed is None:
            raise InvalidRequestUriError("the request_uri is unknown, used or expired")
        return client, pushed

    def par(self) -> Response:
        """RFC 9126 §2: an authenticated client pushes its request; 201 with a request_uri."""
        provider = self.provider
        try:
            oauth_request = self.server.create_oauth2_request(request)
            client = self.server.authenticate_client(oauth_request, AUTH_METHODS, endpoint="token")
            # RFC 9126 §2.1: "The request_uri authorization request parameter is one exception,
            # and it MUST NOT be provided."
            if request.form.get("request_uri"):
                raise InvalidRequestError("request_uri must not be pushed")
            params = MultiDict(request.form)
            for name in ("client_assertion", "client_assertion_type", "client_secret"):
                params.poplist(name)
            if params.get("client_id", client.client_id) != client.client_id:
                raise InvalidRequestError("client_id does not match the authenticated client")
            params.setlist("client_id", [client.client_id])
            _client, authorization = check_authorization_request(
                params, find_client=provider.clients.get, pushed=True,
            )
            if authorization.signing is not None:  # RFC 9396: the PDFs wait beside the request, by digest
                current_app.extensions[SIGNING_FLOW_EXTENSION].keep_documents_of(params["authorization_details"])
        except OAuth2Error as error:
            # At PAR every error is answered to the client directly (RFC 9126 §2.3).
            error.redirect_uri, error.state = None, None
            return _oauth_error_json(error)
        request_uri = provider.pushed.push(authorization)
        if authorization.signing is not None:  # a client with a webhook hears how the request ends
            current_app.extensions[SIGNING_FLOW_EXTENSION].pushed(
                authorization.signing, client_id=client.client_id, request_uri=request_uri,
            )
        return _json({"request_uri": request_uri, "expires_in": int(provider.pushed.ttl.total_seconds())}, 201)

    def end_session(self) -> Response:
        """RP-Initiated Logout 1.0 §2 (GET or POST): end the portal session, then return to the RP."""
        params = {name: request.values[name] for name in _LOGOUT_PARAMETERS if request.values.get(name)}
        try:
            logout = check_logout(self.provider, params)
        except LogoutRefused as refused:
            logger.info("logout.rejected reason=%s", refused.reason)
            return error_page("invalid_request", refused.description)
        return end_session(self.provider, logout, page=logged_out_page)

    def token(self) -> Response:
        """RFC 6749 §3.2 through Authlib."""
        try:
            response: Response = self.server.create_token_response()
        except GrantRevoked:  # revoked while its tokens were being issued
            response = _json({"error": "invalid_grant", "error_description": "the grant was revoked"}, 400)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    def userinfo(self) -> Response:
        """OIDC Core §5.3: sub, and the consented attributes only, while the grant stands."""
        provider = self.provider
        token = _bearer_token()
        info = provider.access_tokens.read(token) if token else None
        try:
            if info is not None:
                return _json({"sub": info.subject, **provider.released_claims(info.grant_id, location="userinfo")})
        except GrantRevoked:
            pass
        error = InvalidTokenError("the access token is missing, unknown, expired or revoked")
        return _json(
            {"error": error.error, "error_description": error.description}, 401,
            {"WWW-Authenticate": f'Bearer error="{error.error}"'},
        )


_LOGOUT_PARAMETERS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")


def _bearer_token() -> str | None:
    """RFC 6750 §2.1 header, or §2.2 form body on POST."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.method == "POST" and not header:
        return request.form.get("access_token") or None
    return None


def register_oidc(app: Flask, provider: OidcProvider) -> PortalAuthorizationServer:
    """Add the OIDC endpoints and the login page to ``app``."""
    server = build_authorization_server(provider)
    endpoints = _Endpoints(provider, server)
    blueprint = Blueprint("oidc", __name__)
    blueprint.add_url_rule("/.well-known/openid-configuration", "discovery", endpoints.discovery, methods=["GET"])
    blueprint.add_url_rule("/jwks", "jwks", endpoints.jwks, methods=["GET"])
    blueprint.add_url_rule("/authorize", "authorize", endpoints.authorize, methods=["GET"])
    blueprint.add_url_rule("/par", "par", endpoints.par, methods=["POST"])
    blueprint.add_url_rule("/token", "token", endpoints.token, methods=["POST"])
    blueprint.add_url_rule("/userinfo", "userinfo", endpoints.userinfo, methods=["GET", "POST"])
    blueprint.add_url_rule(END_SESSION_PATH, "end_session", endpoints.end_session, methods=["GET", "POST"])
    register_unavailable_handler(blueprint, _unavailable, otherwise=_unexpected)
    blueprint.register_error_handler(Exception, _unexpected)
    app.register_blueprint(blueprint)
    app.register_blueprint(create_login_blueprint(app, provider), url_prefix="/login")
    install_sessions(app, provider)
    app.register_blueprint(create_account_blueprint(), url_prefix="/account")
    return server


def _unavailable(_dependency: Dependency) -> Response:
    """The browser's /authorize gets the page; the JSON endpoints ``temporarily_unavailable``."""
    if request.endpoint in {"oidc.authorize", "oidc.end_session"}:
        return unavailable_page()
    return unavailable_json()


def _unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException) and error.code is not None and error.code < HTTPStatus.INTERNAL_SERVER_ERROR:
        return _json({"error": "invalid_request"}, error.code)
    logger.error("oidc.server_error %s %s", request.method, request.path, exc_info=error)
    return _json({"error": "server_error"}, 500)
