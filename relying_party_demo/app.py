"""The demo relying party: a website that adds "Log in with My Number" with a stock OIDC client.

It is an outside client of the portal: it knows only the issuer URL and its client
registration, discovers everything else from ``/.well-known/openid-configuration``, and uses
Authlib's Flask client for the authorization code flow with PKCE S256 and a nonce. It checks
the RFC 9207 ``iss`` response parameter before redeeming a code, so a mix-up attack fails here.
Logging out ends the portal session too (RP-Initiated Logout 1.0): the browser goes to the
portal's ``end_session_endpoint`` with the ID token as ``id_token_hint`` and, when one is
configured (and registered with ``idp clients add --post-logout-redirect-uri``), comes back to
``post_logout_redirect_uri`` with the ``state`` it was sent with.

"Sign a document" (``/sign``) pushes an RFC 9396 signing request with PAR and shows what the
portal signed, each signature judged by the portal's verifier (``relying_party_demo.signing``).
Both flows come back to the one registered ``/callback``; the ``state`` tells them apart.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from relying_party_demo.sign_pages import MAX_UPLOAD_BYTES, SignPages

__all__ = ["RpConfig", "create_app", "main"]

SCOPES = "openid name address birthdate gender"


@dataclass(frozen=True, slots=True, kw_only=True)
class RpConfig:
    """Where the portal is and who this site is to it."""

    issuer: str
    client_id: str
    client_secret: str
    scope: str = SCOPES
    post_logout_redirect_uri: str | None = None
    """Where the portal returns the browser after logout; without one the portal shows its own page."""

    @classmethod
    def from_environment(cls) -> RpConfig:
        """Read ``MYNA_RP_ISSUER``, ``MYNA_RP_CLIENT_ID``, ``MYNA_RP_CLIENT_SECRET`` (and ``MYNA_RP_SCOPE``,
        ``MYNA_RP_POST_LOGOUT_REDIRECT_URI``)."""
        missing = [name for name in ("MYNA_RP_ISSUER", "MYNA_RP_CLIENT_ID", "MYNA_RP_CLIENT_SECRET")
                   if not os.environ.get(name)]
        if missing:
            raise SystemExit(f"the demo relying party needs {', '.join(missing)}")
        return cls(
            issuer=os.environ["MYNA_RP_ISSUER"].rstrip("/"),
            client_id=os.environ["MYNA_RP_CLIENT_ID"],
            client_secret=os.environ["MYNA_RP_CLIENT_SECRET"],
            scope=os.environ.get("MYNA_RP_SCOPE", SCOPES),
            post_logout_redirect_uri=os.environ.get("MYNA_RP_POST_LOGOUT_REDIRECT_URI") or None,
        )


def create_app(config: RpConfig) -> Flask:
    """The demo site: a login button, the callback, a page with the verified claims, log out."""
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
    oauth = OAuth(app)
    portal = oauth.register(
        "myna",
        client_id=config.client_id,
        client_secret=config.client_secret,
        server_metadata_url=f"{config.issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": config.scope, "code_challenge_method": "S256",
                       "token_endpoint_auth_method": "client_secret_basic"},
    )
    signing = SignPages(app, portal, issuer=config.issuer, client_id=config.client_id,
                        client_secret=config.client_secret, scope=config.scope)

    @app.get("/")
    def home() -> str:
        return render_template("home.html", user=session.get("user"))

    @app.post("/login")
    def login() -> Response:
        to_portal: Response = portal.authorize_redirect(url_for("callback", _external=True), ui_locales="ja en")
        return to_portal

    @app.get("/callback")
    def callback() -> Response | tuple[str, int]:
        if request.args.get("iss") != config.issuer:  # RFC 9207 §2.4: MUST compare before using the response
            return render_template("error.html", error="invalid_response",
                                   description="the response did not come from the expected issuer"), 400
        if signing.owns(request.args.get("state")):  # the answer to a signing request (``/sign``)
            return signing.callback()
        return _login_callback(portal)

    @app.post("/logout")
    def logout() -> Response:
        """Forget the user here, then end the portal session at its end_session_endpoint."""
        id_token = session.get("id_token")
        session.clear()
        end_session = portal.load_server_metadata().get("end_session_endpoint")
        return _end_portal_session(end_session, config, id_token=id_token)

    @app.get("/logged-out")
    def logged_out() -> Response:
        """The post_logout_redirect_uri: home, with the state checked against the logout sent (RP-Initiated
        Logout 1.0 §3: the state lets the RP tell its own logout's return from anyone's link)."""
        expected = session.pop("logout_state", None)
        if expected is None or request.args.get("state") != expected:
            return redirect(url_for("home"))
        return redirect(url_for("home", logged_out=1))

    return app


def _login_callback(portal: Any) -> Response | tuple[str, int]:
    """The login's answer (``iss`` already checked): redeem the code with Authlib, keep the user."""
    if "error" in request.args:
        return render_template("error.html", error=request.args["error"],
                               description=request.args.get("error_description", "")), 400
    try:
        token = portal.authorize_access_token()
        userinfo = portal.userinfo(token=token)
    except OAuthError as exc:
        return render_template("error.html", error=exc.error, description=exc.description or ""), 400
    session["user"] = _user(token["userinfo"], dict(userinfo))
    session["id_token"] = token["id_token"]
    return redirect(url_for("home"))


def _end_portal_session(end_session: str | None, config: RpConfig, *, id_token: str | None) -> Response:
    """To the portal's end_session_endpoint with the ID token as hint (and the way back, when configured)."""
    if not id_token or not end_session:
        return redirect(url_for("home"))
    params = {"id_token_hint": id_token, "client_id": config.client_id}
    if config.post_logout_redirect_uri:
        session["logout_state"] = params["state"] = secrets.token_urlsafe(16)
        params["post_logout_redirect_uri"] = config.post_logout_redirect_uri
    return redirect(f"{end_session}?{urlencode(params)}", code=303)


def _user(id_token: dict[str, Any], userinfo: dict[str, Any]) -> dict[str, Any]:
    """What the site keeps of a login: the ID token's claims and the verified attributes."""
    return {
        "id_token": {key: id_token[key] for key in sorted(id_token) if key not in {"nonce", "at_hash"}},
        "userinfo": userinfo,
    }


def main() -> None:
    """Run the demo RP on ``MYNA_RP_BIND`` (default 127.0.0.1:8080) with the development server."""
    host, _, port = os.environ.get("MYNA_RP_BIND", "127.0.0.1:8080").rpartition(":")
    create_app(RpConfig.from_environment()).run(host=host, port=int(port))
