"""Authorization responses (RFC 6749 §4.1.2) with the issuer identifier (RFC 9207).

Every response sent to a client's redirect URI, success or error, carries ``iss``: RFC 9207 §2
"In authorization responses to the client, including error responses, an authorization server
supporting this specification MUST indicate its identity by including the iss parameter".
An error without a verified redirect URI is not redirected: the caller shows it on a page.
"""

from __future__ import annotations

from authlib.common.urls import add_params_to_uri
from flask import redirect
from werkzeug.wrappers import Response

from idp.oidc.errors import OAuth2Error

__all__ = ["error_redirect", "redirect_to_client"]


def redirect_to_client(redirect_uri: str, params: dict[str, str | None], *, issuer: str) -> Response:
    """A 303 to the client's verified redirect URI with ``params`` and ``iss`` in the query."""
    pairs = [(name, value) for name, value in params.items() if value is not None]
    pairs.append(("iss", issuer))
    response = redirect(add_params_to_uri(redirect_uri, pairs), code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_redirect(error: OAuth2Error, *, issuer: str) -> Response:
    """``error`` sent to its verified redirect URI (RFC 6749 §4.1.2.1), with state and iss."""
    if not error.redirect_uri:
        raise ValueError("an error without a verified redirect URI is shown, never redirected")
    return redirect_to_client(error.redirect_uri, {
        "error": error.error,
        "error_description": error.description or None,
        "state": error.state,
    }, issuer=issuer)
