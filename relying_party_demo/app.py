"""The demo relying party: a website that adds "Log in with My Number" with a stock OIDC client.

It is an outside client of the portal: it knows only the issuer URL and its client
registration, discovers everything else from ``/.well-known/openid-configuration``, and uses
Authlib's Flask client for the authorization code flow with PKCE S256 and a nonce. It checks
the RFC 9207 ``iss`` response parameter before redeeming a code, so a mix-up attack fails here.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

__all__ = ["RpConfig", "create_app", "main"]

SCOPES = "openid name address birthdate gender"


@dataclass(frozen=True, slots=True, kw_only=True)
class RpConfig:
    """Where the portal is and who this site is to it."""

    issuer: str
    client_id: str
    client_secret: str
    scope: str = SCOPES

    @classmethod
    def from_environment(cls) -> RpConfig:
        """Read ``MYNA_RP_ISSUER``, ``MYNA_RP_CLIENT_ID``, ``MYNA_RP_CLIENT_SECRET`` (and ``MYNA_RP_SCOPE``)."""
        missing = [name for name in ("MYNA_RP_ISSUER", "MYNA_RP_CLIENT_ID", "MYNA_RP_CLIENT_SECRET")
                   if not os.environ.get(name)]
        if missing:
            raise SystemExit(f"the demo relying party needs {', '.join(missing)}")
        return cls(
            issuer=os.environ["MYNA_RP_ISSUER"].rstrip("/"),
            client_id=os.environ["MYNA_RP_CLIENT_ID"],
            client_secret=os.environ["MYNA_RP_CLIENT_SECRET"],
            scope=os.environ.get("MYNA_RP_SCOPE", SCOPES),
        )


def create_app(config: RpConfig) -> Flask:
    """The demo site: a login button, the callback, a page with the verified claims, log out."""
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    oauth = OAuth(app)
    portal = oauth.register(
        "myna",
        client_id=config.client_id,
        client_secret=config.client_secret,
        server_metadata_url=f"{config.issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": config.scope, "code_challenge_method": "S256",
                       "token_endpoint_auth_method": "client_secret_basic"},
    )

    @app.get("/")
    def home() -> str:
        return render_template("home.html", user=session.get("user"))

    @app.post("/login")
    def login() -> Response:
        return portal.authorize_redirect(url_for("callback", _external=True), ui_locales="ja en")

    @app.get("/callback")
    def callback() -> Response | tuple[str, int]:
        if request.args.get("iss") != config.issuer:  # RFC 9207 §2.4: MUST compare before using the response
            return render_template("error.html", error="invalid_response",
                                   description="the response did not come from the expected issuer"), 400
        if "error" in request.args:
            return render_template("error.html", error=request.args["error"],
                                   description=request.args.get("error_description", "")), 400
        try:
            token = portal.authorize_access_token()
            userinfo = portal.userinfo(token=token)
        except OAuthError as exc:
            return render_template("error.html", error=exc.error, description=exc.description or ""), 400
        session["user"] = _user(token["userinfo"], dict(userinfo))
        return redirect(url_for("home"))

    @app.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect(url_for("home"))

    return app


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
