"""Provider metadata (OpenID Connect Discovery 1.0 §3, RFC 8414, RFC 9126 §5, RFC 9207 §3, OIDC4IDA §8,
RP-Initiated Logout 1.0 §2.1)."""

from __future__ import annotations

from typing import Any

from idp.ceremonies.transactions import ACR_SMARTPHONE_SE
from idp.oidc.authorization import ATTRIBUTE_SCOPES, SIGN_SCOPE, UI_LOCALES
from idp.oidc.claims import EVIDENCE_TYPE, TRUST_FRAMEWORK
from idp.oidc.keys import ALGORITHMS
from idp.oidc.provider import ENDPOINTS
from idp.oidc.server import AUTH_METHODS
from idp.signing.authorization_details import DOCUMENT_SIGNATURE
from idp.signing.http import SIGNING_VERIFY_PATH, TIMESTAMPING_PATH
from idp.signing.results_http import SIGNING_RESULTS_PATH

__all__ = ["ACR_VALUES", "END_SESSION_PATH", "provider_metadata"]

ACR_VALUES = (ACR_SMARTPHONE_SE,)
"""The authentication contexts the portal reaches (``ACR_SMARTPHONE_SE``)."""
END_SESSION_PATH = "/logout"
"""RP-Initiated Logout 1.0 §2: where an RP sends the browser to end the portal session."""


def provider_metadata(issuer: str) -> dict[str, Any]:
    """The document served at ``/.well-known/openid-configuration``."""
    attribute_claims = list(ATTRIBUTE_SCOPES.values())
    return {
        "issuer": issuer,
        **{name: issuer + path for name, path in ENDPOINTS.items()},
        "end_session_endpoint": issuer + END_SESSION_PATH,
        "scopes_supported": ["openid", *ATTRIBUTE_SCOPES, SIGN_SCOPE],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "id_token_signing_alg_values_supported": list(ALGORITHMS),
        "subject_types_supported": ["pairwise"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", *attribute_claims,
            "verified_claims",
        ],
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "require_pushed_authorization_requests": False,
        "ui_locales_supported": list(UI_LOCALES),
        "acr_values_supported": list(ACR_VALUES),
        "prompt_values_supported": ["none", "login", "consent"],
        "verified_claims_supported": True,
        "trust_frameworks_supported": [TRUST_FRAMEWORK],
        "evidence_supported": [EVIDENCE_TYPE],
        "claims_in_verified_claims_supported": attribute_claims,
        # RFC 9396 §10: the authorization details types a pushed request may carry (docs/signing.md).
        "authorization_details_types_supported": [DOCUMENT_SIGNATURE],
        # Not registered metadata (RFC 8414 §2 allows more): where an RP reads its signing results,
        # where anyone verifies a signature, and the RFC 3161 timestamping unit (docs/signing.md).
        "signing_results_endpoint": issuer + SIGNING_RESULTS_PATH,
        "signing_verification_endpoint": issuer + SIGNING_VERIFY_PATH,
        "timestamping_endpoint": issuer + TIMESTAMPING_PATH,
    }
