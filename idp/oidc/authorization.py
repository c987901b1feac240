"""Checking an authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2, RFC 7636, RFC 9126).

The checks run in one ordered tuple, ``REQUEST_CHECKS``, as node oidc-provider lays them out:
the first two decide whether an error may be sent back to the client at all. Until the client
and its exact redirect URI are known, an error is shown on a page and never redirected
(RFC 6749 §4.1.2.1); after that, every error is redirected with ``state`` (and ``iss``, added by
the renderer, RFC 9207). The pushed-request endpoint (``idp.oidc.par``) runs the same tuple.

A ``prompt=none`` request that passes is answered from the browser's portal session, never
with a page: ``idp.web.session.SILENT_CHECKS`` run then (OIDC Core §3.1.2.6).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc7636.challenge import CODE_CHALLENGE_PATTERN
from werkzeug.datastructures import MultiDict

from idp.ceremonies.transactions import ACR_SMARTPHONE_SE, AuthorizationRequest
from idp.oidc.clients import ClientInfo
from idp.oidc.errors import (
    InteractionRequiredError,
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    RequestNotSupportedError,
    UnsupportedResponseTypeError,
)
from idp.signing.authorization_details import InvalidAuthorizationDetailsError, parse_authorization_details
from idp.signing.flow import MAX_DOCUMENTS, MAX_INLINE_PDF_BYTES, signing_field

__all__ = [
    "ATTRIBUTE_SCOPES",
    "CLAIMS_LOCATIONS",
    "PROMPT_VALUES",
    "REACHABLE_ACRS",
    "REQUEST_CHECKS",
    "SIGN_SCOPE",
    "UI_LOCALES",
    "Checking",
    "UnmetAuthenticationRequirementsError",
    "check_authorization_request",
]

ATTRIBUTE_SCOPES = {"name": "name", "address": "address", "birthdate": "birthdate", "gender": "gender"}
"""Scope → the identity attribute (OIDC standard claim) it asks for, as the Digital Authentication
App names them; each comes only from the smartphone signature certificate, with consent."""
SIGN_SCOPE = "sign"
"""The Digital Authentication App's signing scope: a client registered for it may push
``document_signature`` authorization details, and a signing request asks for it."""
PROMPT_VALUES = frozenset({"none", "login", "consent"})
UI_LOCALES = ("ja", "en")
CLAIMS_LOCATIONS = frozenset({"userinfo", "id_token"})
REACHABLE_ACRS = frozenset({ACR_SMARTPHONE_SE})
"""The authentication context classes a login can reach: every login is an SE signature."""
MAX_PARAMETER_LENGTH = 2048
_SINGLE_VALUED = (
    "client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge",
    "code_challenge_method", "prompt", "max_age", "acr_values", "claims", "ui_locales", "response_mode",
    "request_uri", "request", "login_hint",
)


class UnmetAuthenticationRequirementsError(OAuth2Error):  # type: ignore[misc] # Authlib is untyped
    """The RP's authentication requirements cannot be met (OpenID Connect Core Error Code
    ``unmet_authentication_requirements`` 1.0 §1, registered in the IANA OAuth Extensions Error
    registry): it "SHALL be used if the Relying Party wants the OP to conform to a certain
    Authentication Context Class Reference value using an essential claim acr claim as specified
    in Section 5.5.1.1 of OpenID Connect Core and the OP is unable to meet this requirement"."""

    error = "unmet_authentication_requirements"


@dataclass(kw_only=True)
class Checking:
    """A request under check: its raw parameters and what the checks so far established."""

    params: MultiDict[str, str]
    find_client: Callable[[str], ClientInfo | None]
    pushed: bool = False
    """Whether the request came through PAR (RFC 9126), authenticated."""
    client: ClientInfo | None = None
    redirect_uri: str | None = None
    state: str | None = None
    scope: tuple[str, ...] = ()
    prompt: tuple[str, ...] = ()
    max_age: int | None = None
    claims: dict[str, Any] | None = None
    ui_locales: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> str | None:
        """The single value of ``name``, None when absent or empty."""
        return self.params.get(name) or None

    def redirecting(self, error: OAuth2Error) -> OAuth2Error:
        """``error`` made to redirect to the verified redirect URI, with ``state``."""
        error.redirect_uri = self.redirect_uri
        error.state = self.state
        return error


# --- before the redirect URI is verified: errors are shown, never redirected ----------------


def require_known_client(request: Checking) -> None:
    """RFC 6749 §4.1.2.1: an unknown client_id is never redirected to."""
    if len(request.params.getlist("client_id")) > 1 or len(request.params.getlist("redirect_uri")) > 1:
        raise InvalidRequestError("client_id and redirect_uri must each be given once")
    client_id = request.value("client_id")
    if client_id is None:
        raise InvalidRequestError("client_id is required")
    client = request.find_client(client_id) if len(client_id) <= MAX_PARAMETER_LENGTH else None
    if client is None:
        raise InvalidClientError(description="unknown client_id")
    request.client = client


def require_registered_redirect_uri(request: Checking) -> None:
    """RFC 9700 §2.1: redirect URIs are compared by exact string match with a registered one."""
    assert request.client is not None  # noqa: S101 - require_known_client ran first
    redirect_uri = request.value("redirect_uri")
    # OIDC Core §3.1.2.1: redirect_uri is REQUIRED in an OpenID Connect request.
    if redirect_uri is None:
        raise InvalidRequestError("redirect_uri is required")
    if redirect_uri not in request.client.redirect_uris:
        raise InvalidRequestError("redirect_uri is not registered for this client")
    request.redirect_uri = redirect_uri
    state = request.value("state")
    request.state = state if state is None or len(state) <= MAX_PARAMETER_LENGTH else None


# --- after: every error redirects with state and iss ------------------------------------------


def reject_repeated_parameters(request: Checking) -> None:
    """RFC 6749 §3.1: "Request and response parameters MUST NOT be included more than once"."""
    for name in _SINGLE_VALUED:
        if len(request.params.getlist(name)) > 1:
            raise request.redirecting(InvalidRequestError(f"{name} must be given once"))
        value = request.params.get(name, "")
        if len(value) > MAX_PARAMETER_LENGTH:
            raise request.redirecting(InvalidRequestError(f"{name} is too long"))


def require_code_response_type(request: Checking) -> None:
    """The portal does the authorization code flow only (FAPI 2.0 §5.3.1.2)."""
    if request.value("response_type") != "code":
        raise request.redirecting(UnsupportedResponseTypeError("response_type must be code"))
    response_mode = request.value("response_mode")
    if response_mode not in {None, "query"}:
        raise request.redirecting(InvalidRequestError("response_mode must be query"))


def reject_request_objects(request: Checking) -> None:
    """OIDC Core §6: request objects are not supported; PAR carries signed-in requests instead."""
    if request.value("request") is not None:
        raise request.redirecting(RequestNotSupportedError())


def require_par_when_registered(request: Checking) -> None:
    """RFC 9126 §6: a client registered to require PAR must push every request."""
    assert request.client is not None  # noqa: S101 - require_known_client ran first
    if request.client.require_par and not request.pushed:
        raise request.redirecting(InvalidRequestError("this client must push its authorization requests (PAR)"))


def require_pkce_s256(request: Checking) -> None:
    """RFC 7636 §4.3, every client (RFC 9700 §2.1.1); only S256 (FAPI 2.0 §5.3.2.2)."""
    challenge = request.value("code_challenge")
    if challenge is None:
        raise request.redirecting(InvalidRequestError("code_challenge is required (PKCE, S256)"))
    if request.value("code_challenge_method") != "S256":
        raise request.redirecting(InvalidRequestError("code_challenge_method must be S256"))
    # RFC 7636 §4.2: code_challenge = BASE64URL-ENCODE(SHA256(ASCII(code_verifier))): 43 characters.
    if not CODE_CHALLENGE_PATTERN.fullmatch(challenge) or len(challenge) != 43:  # noqa: PLR2004
        raise request.redirecting(InvalidRequestError("code_challenge must be a base64url SHA-256 digest"))


def require_openid_scope(request: Checking) -> None:
    """OIDC Core §3.1.2.1: scope MUST contain openid; the portal serves OpenID Connect only."""
    scope = tuple(dict.fromkeys((request.value("scope") or "").split()))
    if "openid" not in scope:
        raise request.redirecting(InvalidScopeError("scope must include openid"))
    request.scope = scope


def require_allowed_scopes(request: Checking) -> None:
    """RFC 6749 §3.3: the client asks only for scopes it is registered for."""
    assert request.client is not None  # noqa: S101 - require_known_client ran first
    refused = [scope for scope in request.scope if scope not in request.client.scopes]
    if refused:
        raise request.redirecting(InvalidScopeError(f"scope not allowed for this client: {refused[0]}"))


def require_nonce(request: Checking) -> None:
    """The Digital Authentication App requires nonce in every request; so do we (OIDC Core §3.1.2.1)."""
    if request.value("nonce") is None:
        raise request.redirecting(InvalidRequestError("nonce is required"))


def check_prompt(request: Checking) -> None:
    """OIDC Core §3.1.2.1: prompt values none, login, consent; none must stand alone."""
    prompt = tuple(dict.fromkeys((request.value("prompt") or "").split()))
    unknown = [value for value in prompt if value not in PROMPT_VALUES]
    if unknown:
        raise request.redirecting(InvalidRequestError("prompt must be none, login or consent"))
    # OIDC Core §3.1.2.1: none together with any other value is an error.
    if "none" in prompt and len(prompt) > 1:
        raise request.redirecting(InvalidRequestError("prompt=none must not be combined with other values"))
    request.prompt = prompt


def check_max_age(request: Checking) -> None:
    """OIDC Core §3.1.2.1: max_age is a non-negative number of seconds."""
    raw = request.value("max_age")
    if raw is None:
        return
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:  # noqa: PLR2004 - seconds fit in 10 digits
        raise request.redirecting(InvalidRequestError("max_age must be a non-negative integer"))
    request.max_age = int(raw)


def check_claims_parameter(request: Checking) -> None:
    """OIDC Core §5.5: claims is a JSON object with userinfo and id_token members, each an object."""
    raw = request.value("claims")
    if raw is None:
        return
    try:
        claims = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested past the parser's depth
        raise request.redirecting(InvalidRequestError("claims must be a JSON object")) from None
    if not isinstance(claims, dict):
        raise request.redirecting(InvalidRequestError("claims must be a JSON object"))
    for location, requested in claims.items():
        if location not in CLAIMS_LOCATIONS:
            raise request.redirecting(InvalidRequestError("claims members must be userinfo or id_token"))
        if not isinstance(requested, dict) or any(
            value is not None and not isinstance(value, dict) for value in requested.values()
        ):
            raise request.redirecting(InvalidRequestError(f"claims.{location} must map claim names to null or objects"))
    request.claims = claims


def check_essential_acr(request: Checking) -> None:
    """OIDC Core §5.5.1.1: an essential ``acr`` the portal cannot reach fails the request.

    "If this is an Essential Claim and the requirement cannot be met, then the Authorization
    Server MUST treat that outcome as a failed authentication attempt." Every login reaches the
    same context class (``REACHABLE_ACRS``), so the outcome is known before the user is asked to
    do anything. ``value`` and ``values`` each constrain the acr when both are given (as node
    oidc-provider checks them); a non-essential acr request, like ``acr_values``, is a hint.
    """
    requested = (request.claims or {}).get("id_token", {}).get("acr")
    if requested is None:
        return
    essential, reachable = _reachable_requested_acrs(request, requested)
    if essential and not reachable:
        raise request.redirecting(UnmetAuthenticationRequirementsError(
            "the requested essential acr cannot be met; this provider reaches " + " ".join(sorted(REACHABLE_ACRS)),
        ))


def _reachable_requested_acrs(request: Checking, requested: dict[str, Any]) -> tuple[bool, frozenset[str]]:
    """Whether the acr request is essential, and which reachable context classes it accepts."""
    essential = requested.get("essential", False)
    value = requested.get("value")
    values = requested.get("values")
    # OIDC Core §5.5.1: essential is a boolean, value a string, values an array of strings.
    if not isinstance(essential, bool):
        raise request.redirecting(InvalidRequestError("claims.id_token.acr.essential must be true or false"))
    if value is not None and not isinstance(value, str):
        raise request.redirecting(InvalidRequestError("claims.id_token.acr.value must be a string"))
    if values is not None and (
        not isinstance(values, list) or not values or not all(isinstance(item, str) for item in values)
    ):
        raise request.redirecting(InvalidRequestError("claims.id_token.acr.values must be an array of strings"))
    reachable = set(REACHABLE_ACRS)
    if value is not None:
        reachable &= {value}
    if values is not None:
        reachable &= set(values)
    return essential, frozenset(reachable)


def check_ui_locales(request: Checking) -> None:
    """OIDC Core §3.1.2.1: ui_locales is a preference list; we keep the ones we have pages for."""
    wanted = (request.value("ui_locales") or "").split()
    request.ui_locales = tuple(dict.fromkeys(
        tag.split("-")[0].lower() for tag in wanted if tag.split("-")[0].lower() in UI_LOCALES
    ))


def check_authorization_details(request: Checking) -> None:
    """RFC 9396 §2: ``document_signature`` details (``idp.signing.authorization_details``), pushed only.

    A signing request carries documents, perhaps whole PDFs: it must come from an authenticated
    client through PAR (RFC 9126), never in a browser's URL, and ask for the ``sign`` scope (which
    ``require_allowed_scopes`` has checked the client is registered for), as at the Digital
    Authentication App; ``sign`` without details asks for nothing to sign. Invalid details are
    ``invalid_authorization_details`` (RFC 9396 §5).
    """
    if "authorization_details" not in request.params:
        if SIGN_SCOPE in request.scope:
            raise request.redirecting(InvalidRequestError(
                "the sign scope goes with document_signature authorization_details (pushed)"))
        return
    if len(request.params.getlist("authorization_details")) > 1:
        raise request.redirecting(InvalidRequestError("authorization_details must be given once"))
    if not request.pushed:
        raise request.redirecting(InvalidRequestError("authorization_details must be pushed (PAR, RFC 9126)"))
    if SIGN_SCOPE not in request.scope:
        raise request.redirecting(InvalidScopeError("a signing request (document_signature) asks for the sign scope"))
    if "none" in request.prompt:  # OIDC Core §3.1.2.6: the user must see and sign the documents on the phone
        raise request.redirecting(InteractionRequiredError("a signing request needs the user: prompt=none cannot sign"))
    try:
        request.extra["signature_request"] = parse_authorization_details(
            request.params["authorization_details"], max_documents=MAX_DOCUMENTS, max_pdf_bytes=MAX_INLINE_PDF_BYTES,
        )
    except InvalidAuthorizationDetailsError as error:
        raise request.redirecting(error) from error


REQUEST_CHECKS: tuple[Callable[[Checking], None], ...] = (
    require_known_client,             # shown, never redirected
    require_registered_redirect_uri,  # shown, never redirected
    reject_repeated_parameters,
    require_code_response_type,
    reject_request_objects,
    require_par_when_registered,
    require_pkce_s256,
    require_openid_scope,
    require_allowed_scopes,
    require_nonce,
    check_prompt,
    check_max_age,
    check_claims_parameter,
    check_essential_acr,              # OIDC Core §5.5.1.1
    check_ui_locales,
    check_authorization_details,      # RFC 9396 §2, pushed only; its error per §5
)


def check_authorization_request(
    params: MultiDict[str, str],
    *,
    find_client: Callable[[str], ClientInfo | None],
    pushed: bool = False,
) -> tuple[ClientInfo, AuthorizationRequest]:
    """Run ``REQUEST_CHECKS`` in order; the client and the validated request.

    Raises an ``OAuth2Error``: without ``redirect_uri`` when it must be shown, with it otherwise.
    """
    request = Checking(params=params, find_client=find_client, pushed=pushed)
    for check in REQUEST_CHECKS:
        check(request)
    assert request.client is not None  # noqa: S101 - require_known_client set it
    assert request.redirect_uri is not None  # noqa: S101 - require_registered_redirect_uri set it
    return request.client, AuthorizationRequest(
        client_id=request.client.client_id,
        redirect_uri=request.redirect_uri,
        scope=request.scope,
        state=request.state,
        nonce=request.value("nonce"),
        code_challenge=str(request.value("code_challenge")),
        code_challenge_method="S256",
        prompt=request.prompt,
        max_age=request.max_age,
        acr_values=tuple((request.value("acr_values") or "").split()),
        claims=request.claims,
        ui_locales=request.ui_locales,
        requested_attributes=requested_attributes(request.client, request.scope, request.claims),
        signing=signing_field(request.extra["signature_request"]) if "signature_request" in request.extra else None,
    )


def requested_attributes(
    client: ClientInfo, scope: tuple[str, ...], claims: dict[str, Any] | None,
) -> tuple[str, ...]:
    """The identity attributes asked for by scope or by the claims parameter, in a fixed order.

    A claim asked for through ``claims`` counts only when the client may have its scope: claims
    requests are voluntary (OIDC Core §5.5), so one the client may not have is left out.
    """
    wanted = {ATTRIBUTE_SCOPES[item] for item in scope if item in ATTRIBUTE_SCOPES}
    for requested in (claims or {}).values():
        wanted.update(
            name for name in requested if name in ATTRIBUTE_SCOPES.values() and name in client.scopes
        )
    return tuple(name for name in ATTRIBUTE_SCOPES.values() if name in wanted)
