"""The portal's timestamping unit (RFC 3161 §3.4) and signature verification over HTTP.

::

    POST /tsa                 an application/timestamp-query body; answers application/timestamp-reply
    POST /signing/verify      multipart/form-data: what to verify; answers the verdict as JSON

``/tsa`` is open to RPs too. A query the unit refuses (malformed, unsupported hash, another
policy) is still answered with a TimeStampResp carrying status rejection and its failure info,
HTTP 200, as RFC 3161 §3.4 transports it; only a wrong content type (415) or an oversized body
(413) is an HTTP problem.

``/signing/verify`` takes exactly one of ``signature`` (a detached DER CAdES signature, with
``document`` or its hex SHA-256 ``digest``), ``pdf`` (a signed PDF) or ``assertion`` (a
signed-document assertion, optionally with ``document``). It answers 200 with ``{"valid": ...,
"reason": ...}`` whatever the verdict (docs/signing.md lists the reasons); a request that does
not say what to verify is a 400 problem, a part larger than ``signing.max_document_bytes`` a
413 problem.
"""

from __future__ import annotations

from flask import Blueprint, Response, json, request
from werkzeug.datastructures import FileStorage

from idp.clock import Clock
from idp.settings import Settings
from idp.signing.service import SigningService
from idp.signing.verification import Verification
from idp.web.problems import BadRequest, RequestTooLarge, UnsupportedMediaType, register_problem_handler

__all__ = [
    "MAX_TIMESTAMP_QUERY_BYTES", "SIGNING_EXTENSION", "SIGNING_VERIFY_PATH", "TIMESTAMPING_PATH", "TIMESTAMP_QUERY",
    "TIMESTAMP_REPLY", "create_blueprint",
]

SIGNING_EXTENSION = "myna.signing"
"""``app.extensions`` key of the application's ``SigningService`` (for the signing flow)."""

TIMESTAMP_QUERY = "application/timestamp-query"
TIMESTAMP_REPLY = "application/timestamp-reply"
MAX_TIMESTAMP_QUERY_BYTES = 4096
"""A TimeStampReq with a SHA-512 imprint, a nonce and a policy is under 200 bytes."""
TIMESTAMPING_PATH = "/tsa"
SIGNING_VERIFY_PATH = "/signing/verify"
FORM_OVERHEAD = 64 * 1024
"""Room for multipart boundaries and the small fields beside the largest part."""
SHA256_HEX = 64
_VERIFY_PARTS = ("signature", "pdf", "assertion")


def create_blueprint(service: SigningService, *, settings: Settings, clock: Clock) -> Blueprint:
    """The ``/tsa`` and ``/signing/verify`` endpoints, served by ``service``."""
    blueprint = Blueprint("signing", __name__)
    register_problem_handler(blueprint)
    limit = settings.signing.max_document_bytes

    @blueprint.post(TIMESTAMPING_PATH)
    def timestamp() -> Response:
        # RFC 3161 §3.4: "Content-Type: application/timestamp-query".
        if request.mimetype != TIMESTAMP_QUERY:
            raise UnsupportedMediaType(f"send the DER TimeStampReq as {TIMESTAMP_QUERY}")
        query = _read_body(MAX_TIMESTAMP_QUERY_BYTES)
        return Response(service.timestamps.respond(query, now=clock.now()), mimetype=TIMESTAMP_REPLY)

    @blueprint.post(SIGNING_VERIFY_PATH)
    def verify() -> Response:
        if request.content_length is not None and request.content_length > 2 * limit + FORM_OVERHEAD:
            raise RequestTooLarge(f"a document or signature is at most {limit} bytes")
        request.max_content_length = 2 * limit + FORM_OVERHEAD
        if request.mimetype != "multipart/form-data":
            raise UnsupportedMediaType("send the parts to verify as multipart/form-data")
        verdict = _verify(service, limit)
        response = Response(json.dumps(verdict.to_json()), mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    return blueprint


def _verify(service: SigningService, limit: int) -> Verification:
    given = [name for name in _VERIFY_PARTS if name in request.files or name in request.form]
    if len(given) != 1:
        raise BadRequest("give exactly one of signature, pdf or assertion")
    document = _part("document", limit)
    if given[0] == "pdf":
        pdf = _part("pdf", limit)
        assert pdf is not None  # noqa: S101 - named in the form, checked above
        return service.verify_pades(pdf)
    if given[0] == "assertion":
        token = (_part("assertion", limit) or b"").decode("ascii", errors="replace").strip()
        return service.verify_assertion(token, document=document)
    signature = _part("signature", limit)
    assert signature is not None  # noqa: S101 - named in the form, checked above
    digest_text = request.form.get("digest")
    if (document is None) == (digest_text is None):
        raise BadRequest("a detached signature needs the document or its hex SHA-256 digest, not both")
    if digest_text is not None:
        return service.verify_cades(signature=signature, document_digest=_hex_digest(digest_text))
    return service.verify_cades(signature=signature, document=document)


def _part(name: str, limit: int) -> bytes | None:
    """A form part as bytes (a file or a text field), refusing one larger than ``limit``."""
    upload: FileStorage | None = request.files.get(name)
    if upload is not None:
        data = upload.stream.read(limit + 1)
    elif name in request.form:
        data = request.form[name].encode()
    else:
        return None
    if len(data) > limit:
        raise RequestTooLarge(f"{name} is larger than {limit} bytes")
    return data


def _hex_digest(text: str) -> bytes:
    cleaned = text.strip().lower()
    if len(cleaned) != SHA256_HEX or any(char not in "0123456789abcdef" for char in cleaned):
        raise BadRequest("digest is the document's SHA-256 as 64 hex digits")
    return bytes.fromhex(cleaned)


def _read_body(limit: int) -> bytes:
    """The request body, refusing one larger than ``limit`` before reading it all."""
    too_large = RequestTooLarge(f"a timestamp query is at most {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise too_large
    return body
