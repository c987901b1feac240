"""OAuth 2.0 and OpenID Connect on Authlib: endpoints, grants, claims, PAR, DPoP, logout, client registry."""

from idp.oidc.clients import (
    SUPPORTED_SCOPES,
    ClientInfo,
    ClientRegistry,
    InvalidClientMetadata,
    InvalidRedirectUri,
    RegisteredClient,
)
from idp.oidc.records import AuthMethod, IdTokenAlgorithm

__all__ = [
    "SUPPORTED_SCOPES",
    "AuthMethod",
    "ClientInfo",
    "ClientRegistry",
    "IdTokenAlgorithm",
    "InvalidClientMetadata",
    "InvalidRedirectUri",
    "RegisteredClient",
]
