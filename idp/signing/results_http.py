"""The relying party reads what its user signed: ``GET /signing/v1/results`` (RFC 6750 bearer).

The access token of a grant whose authorization request carried RFC 9396 ``document_signature``
details answers 200 with the details as granted, the signed-document assertion, and per document
its detached CAdES signature (``cades``) or the signed PDF (``pades``), base64::

    {"authorization_details": [...], "assertion": "<JWS>",
     "documents": [{"label": ..., "hash": ..., "signature_format": "cades", "signature": ...},
                   {"label": ..., "hash": ..., "signature_format": "pades", "signed_pdf": ...}]}

A missing, unknown, expired or revoked token is 401 with ``WWW-Authenticate: Bearer
error="invalid_token"`` (RFC 6750 §3.1); a token whose grant signed nothing - a plain login, or
another client's grant - is a 404 problem (RFC 9457).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from flask import Blueprint, Response, request

from idp.oidc.provider import OidcProvider
from idp.signing.flow import SigningFlow, granted_details_of
from idp.signing.results import SignedResult
from idp.web.problems import PROBLEM_BASE, Problem, register_problem_handler

__all__ = ["SIGNING_RESULTS_PATH", "NoSigningResults", "create_results_blueprint"]

SIGNING_RESULTS_PATH = "/signing/v1/results"


class NoSigningResults(Problem):
    """The token's grant has no signed documents."""

    type = PROBLEM_BASE + "signing-results-not-found"
    title = "This access token's grant has no signed documents"
    status = 404


def create_results_blueprint(flow: SigningFlow, provider: OidcProvider) -> Blueprint:
    """``GET /signing/v1/results``, reading ``flow``'s results with ``provider``'s access tokens."""
    blueprint = Blueprint("signing_results", __name__)
    register_problem_handler(blueprint)

    @blueprint.get(SIGNING_RESULTS_PATH)
    def results() -> Response:
        token = _bearer_token()
        info = provider.access_tokens.read(token) if token else None
        grant = provider.grants.grant(info.grant_id) if info is not None else None
        if info is None or grant is None or grant.revoked_at is not None or provider.revoked_meanwhile(info.grant_id):
            return _invalid_token()
        signed = flow.results.of_grant(info.grant_id, client_id=info.client_id)
        if not signed:
            raise NoSigningResults
        body = {
            "authorization_details": granted_details_of(signed),
            "assertion": signed[0].assertion,
            "documents": [_document(result) for result in signed],
        }
        response = Response(json.dumps(body), mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    return blueprint


def _document(result: SignedResult) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "label": result.label,
        "hash": base64.b64encode(result.digest).decode(),
        "signature_format": result.signature_format,
    }
    if result.cms is not None:
        entry["signature"] = base64.b64encode(result.cms).decode()
    if result.signed_pdf is not None:
        entry["signed_pdf"] = base64.b64encode(result.signed_pdf).decode()
    return entry


def _bearer_token() -> str | None:
    """RFC 6750 §2.1: the Authorization header only (a GET has no form body)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _invalid_token() -> Response:
    body = {"error": "invalid_token", "error_description": "the access token is missing, unknown, expired or revoked"}
    response = Response(json.dumps(body), status=401, mimetype="application/json")
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    response.headers["Cache-Control"] = "no-store"
    return response
