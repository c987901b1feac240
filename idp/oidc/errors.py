"""The OAuth 2.0 / OpenID Connect errors the portal answers with: one class per protocol code.

Authlib's ``OAuth2Error`` subclasses render themselves (JSON body, or a redirect when
``redirect_uri`` is set). An error raised before the redirect URI is verified never has one,
so it is shown on a page, never redirected (RFC 6749 §4.1.2.1, RFC 9700 §4.1.1).
"""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnsupportedResponseTypeError,
)
from authlib.oidc.core.errors import InteractionRequiredError, LoginRequiredError, RequestNotSupportedError

__all__ = [
    "AccessDeniedError",
    "InteractionRequiredError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidRequestError",
    "InvalidRequestUriError",
    "InvalidScopeError",
    "InvalidTokenError",
    "LoginRequiredError",
    "OAuth2Error",
    "RequestNotSupportedError",
    "UnsupportedResponseTypeError",
]


class InvalidRequestUriError(OAuth2Error):  # type: ignore[misc] # Authlib is untyped
    """The ``request_uri`` is unknown, used, expired or another client's (OIDC Core §3.1.2.6)."""

    error = "invalid_request_uri"
    status_code = 400


class InvalidTokenError(OAuth2Error):  # type: ignore[misc] # Authlib is untyped
    """The bearer token is missing, unknown, expired or revoked (RFC 6750 §3.1)."""

    error = "invalid_token"
    status_code = 401
