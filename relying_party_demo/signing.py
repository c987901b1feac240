"""The demo relying party's "Sign a document" page: RFC 9396 signing requests pushed with PAR (RFC 9126).

Still an outside client of the portal, using only what docs/signing.md documents:

1. The person uploads PDFs or plain-text files (``read_uploads``: at most ``MAX_DOCUMENTS``,
   each at most ``MAX_DOCUMENT_BYTES``, as the portal caps them). The site pushes a request
   whose ``authorization_details`` name each document by label and SHA-256, a PDF with its
   bytes (so that it comes back PAdES-signed), a text by its digest only (a detached CAdES
   signature comes back). The push is authenticated with ``client_secret_basic`` and carries
   PKCE S256, ``state`` and ``nonce``; the browser then goes to ``/authorize`` with
   ``client_id`` and ``request_uri`` only.
2. On the callback (after the ``iss`` check in ``app.py``) Authlib's client redeems the code:
   it checks ``state`` against what was saved, sends the PKCE verifier and validates the ID
   token with the ``nonce``. The site then fetches the results (``GET /signing/v1/results``, the
   discovery document's ``signing_results_endpoint``) with the access token and has the portal's
   ``signing_verification_endpoint`` (``POST /signing/verify``) judge each signature and the assertion.
3. The outcome (signatures, signed PDFs, the assertion and the verdicts) stays in server
   memory (``MemoryStore``) under a random id that only this browser's session holds: far too
   big for a cookie.

Nothing here trusts the portal's answer blindly: each returned document must be one that was
asked for (label and digest), a signed PDF must extend the PDF that was sent, and the assertion
must verify with the portal's published keys, be typed ``signed-document+jwt`` and name this
site as its audience.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client.oauth2_session import OAuth2ClientAuth
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from werkzeug.datastructures import FileStorage

__all__ = [
    "ASSERTION_TYPE",
    "MAX_DOCUMENTS",
    "MAX_DOCUMENT_BYTES",
    "MAX_PUSHED_REQUEST_BYTES",
    "SHA256_OID",
    "Document",
    "DocumentOutcome",
    "MemoryStore",
    "PendingSigning",
    "SigningFailed",
    "SigningOutcome",
    "UploadRefused",
    "authorization_details",
    "collect_results",
    "push_signing_request",
    "read_uploads",
]

MAX_DOCUMENTS = 10
"""Documents per signing request, as the portal caps them (docs/signing.md)."""
MAX_DOCUMENT_BYTES = 512 * 1024
"""Largest file: the portal takes a PDF of at most 512 KiB inline; a text is held to the same size."""
MAX_PUSHED_REQUEST_BYTES = 1 << 20
"""The portal refuses request bodies over 1 MiB (docs/operations.md): the PDFs travel inside the push."""
MAX_LABEL_LENGTH = 200
SHA256_OID = "2.16.840.1.101.3.4.2.1"
ASSERTION_TYPE = "signed-document+jwt"
TIMEOUT = 60.0
"""Seconds per call to the portal: verifying a signed PDF with its timestamp takes a moment."""

_T = TypeVar("_T")


class UploadRefused(Exception):
    """The upload cannot become a signing request; ``code`` for machines, ``message`` for people."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class SigningFailed(Exception):
    """The portal refused the request or its answer does not hold up; shown on the error page."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class Document:
    """One uploaded file to sign."""

    label: str
    content: bytes
    kind: str
    """``pdf`` (sent whole: PAdES) or ``text`` (sent as its digest: CAdES)."""

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.content).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingSigning:
    """A pushed signing request waiting for the browser to come back: its documents."""

    documents: tuple[Document, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentOutcome:
    """One document as signed and judged."""

    label: str
    kind: str
    hash_hex: str
    signature_format: str
    valid: bool
    reason: str | None
    signed_at: str | None
    signature: bytes | None = None
    signed_pdf: bytes | None = None

    @property
    def verdict(self) -> str:
        return "valid" if self.valid else f"invalid: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningOutcome:
    """What the results page shows and offers for download."""

    subject: str
    name: str | None
    assertion: str
    assertion_verdict: str
    documents: tuple[DocumentOutcome, ...]


class MemoryStore(Generic[_T]):
    """A bounded, expiring map in this process's memory: the oldest entry goes when it is full."""

    def __init__(self, *, capacity: int = 64, ttl_seconds: float = 3600.0) -> None:
        self._items: OrderedDict[str, tuple[float, _T]] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl_seconds
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore(capacity={self._capacity})"

    def put(self, value: _T) -> str:
        """Keep ``value``; its new random id."""
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._expire()
            self._items[key] = (time.monotonic() + self._ttl, value)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> _T | None:
        with self._lock:
            self._expire()
            found = self._items.get(key)
        return None if found is None else found[1]

    def take(self, key: str) -> _T | None:
        with self._lock:
            self._expire()
            found = self._items.pop(key, None)
        return None if found is None else found[1]

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [key for key, (deadline, _value) in self._items.items() if deadline <= now]:
            del self._items[key]


# --- the upload -----------------------------------------------------------------------------------


def read_uploads(files: list[FileStorage]) -> tuple[Document, ...]:
    """The uploaded files as documents to sign. Raises UploadRefused with a message for the person."""
    chosen = [upload for upload in files if upload.filename]
    if not chosen:
        raise UploadRefused("no_document", "ファイルを選んでください / Choose a PDF or text file to sign.", 400)
    if len(chosen) > MAX_DOCUMENTS:
        raise UploadRefused("too_many_documents", f"一度に {MAX_DOCUMENTS} 件までです / At most "
                            f"{MAX_DOCUMENTS} documents per signing request.", 400)
    documents: list[Document] = []
    labels: set[str] = set()
    for upload in chosen:
        content = upload.stream.read(MAX_DOCUMENT_BYTES + 1)
        label = _label(upload.filename or "", labels)
        if len(content) > MAX_DOCUMENT_BYTES:
            raise UploadRefused("document_too_large", f"{label}: 512 KiB を超えています / is larger than "
                                f"{MAX_DOCUMENT_BYTES // 1024} KiB, the most the portal signs.", 413)
        kind = _kind(content)
        if kind is None:
            raise UploadRefused("unsupported_document", f"{label}: PDF かテキストではありません / is neither "
                                "a PDF nor plain UTF-8 text.", 415)
        labels.add(label)
        documents.append(Document(label=label, content=content, kind=kind))
    return tuple(documents)


def _kind(content: bytes) -> str | None:
    """``pdf`` for a PDF, ``text`` for UTF-8 text without control characters, else None."""
    if content.startswith(b"%PDF-"):
        return "pdf"
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or any(unicodedata.category(char) == "Cc" and char not in "\t\n\r\f" for char in text):
        return None
    return "text"


def _label(filename: str, taken: set[str]) -> str:
    """The file's name as the document's label: printable, at most 200 characters, unique in the request."""
    name = "".join(char for char in filename.replace("\\", "/").rsplit("/", 1)[-1]
                   if unicodedata.category(char) not in {"Cc", "Cf"}).strip() or "document"
    label, number = name[:MAX_LABEL_LENGTH], 2
    while label in taken:
        suffix = f" ({number})"
        label, number = name[:MAX_LABEL_LENGTH - len(suffix)] + suffix, number + 1
    return label


def authorization_details(documents: tuple[Document, ...]) -> list[dict[str, Any]]:
    """RFC 9396 ``document_signature`` details: label and base64 SHA-256 each, a PDF with its bytes."""
    listed: list[dict[str, Any]] = []
    for document in documents:
        entry = {"label": document.label, "hash": _b64(document.digest)}
        if document.kind == "pdf":
            entry["document"] = _b64(document.content)
        listed.append(entry)
    return [{"type": "document_signature", "hashAlgorithmOID": SHA256_OID, "documentDigests": listed}]


# --- the push -------------------------------------------------------------------------------------


def push_signing_request(
    portal: Any, *, client_id: str, client_secret: str, redirect_uri: str, scope: str,
    documents: tuple[Document, ...],
) -> tuple[str, dict[str, str]]:
    """PAR (RFC 9126 §2) of a signing request; the ``/authorize`` URL and what Authlib saves for the callback.

    ``portal`` is the Authlib Flask client. Raises UploadRefused when the documents together do not
    fit in one pushed request, SigningFailed when the portal refuses the push.
    """
    state, nonce, verifier = generate_token(24), generate_token(24), generate_token(48)
    form = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
        "state": state, "nonce": nonce, "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256", "ui_locales": "ja en",
        "authorization_details": json.dumps(authorization_details(documents), ensure_ascii=False,
                                            separators=(",", ":")),
    }
    body = urlencode(form)
    if len(body.encode()) > MAX_PUSHED_REQUEST_BYTES:
        raise UploadRefused("request_too_large", "PDF の合計が大きすぎます。分けて署名してください / Together the "
                            "PDFs are too large for one signing request (the portal takes 1 MiB per request): "
                            "sign them separately.", 413)
    try:
        metadata = portal.load_server_metadata()
        endpoint = metadata.get("pushed_authorization_request_endpoint")
        if not endpoint:
            raise SigningFailed("par_unsupported", "the portal publishes no pushed_authorization_request_endpoint")
        answer = portal.post(endpoint, data=body, withhold_token=True, timeout=TIMEOUT,
                             headers={"Content-Type": "application/x-www-form-urlencoded"},
                             auth=OAuth2ClientAuth(client_id, client_secret, "client_secret_basic"))
    except OSError as exc:
        raise SigningFailed("temporarily_unavailable", "the portal cannot be reached") from exc
    pushed = _json(answer)
    if answer.status_code != HTTPStatus.CREATED or not isinstance(pushed.get("request_uri"), str):
        raise SigningFailed(str(pushed.get("error", "invalid_response")),
                            str(pushed.get("error_description", f"the portal answered {answer.status_code}")))
    authorize = metadata["authorization_endpoint"]  # RFC 9126 §4: client_id and request_uri only
    url = f"{authorize}?{urlencode({'client_id': client_id, 'request_uri': pushed['request_uri']})}"
    return url, {"state": state, "nonce": nonce, "code_verifier": verifier, "redirect_uri": redirect_uri}


# --- the results ----------------------------------------------------------------------------------


def collect_results(portal: Any, *, issuer: str, client_id: str, token: dict[str, Any],
                    pending: PendingSigning) -> SigningOutcome:
    """The signed documents and the assertion of ``token``'s grant, each judged by the portal.

    Raises SigningFailed when the results cannot be fetched or do not answer the request.
    """
    try:
        answer = portal.get(_endpoint(portal, "signing_results_endpoint"), token=token, timeout=TIMEOUT)
    except (OSError, OAuthError) as exc:
        raise SigningFailed("results_unavailable", "the signed documents cannot be fetched") from exc
    body = _json(answer)
    if answer.status_code != HTTPStatus.OK:
        raise SigningFailed("results_unavailable",
                            str(body.get("error_description") or body.get("title") or answer.status_code))
    returned = body.get("documents")
    if not isinstance(returned, list) or len(returned) != len(pending.documents):
        raise SigningFailed("invalid_response", "the results do not list one signature per document sent")
    outcomes = tuple(
        _judge_document(portal, document, entry)
        for document, entry in zip(pending.documents, returned, strict=True)
    )
    assertion = str(body.get("assertion", ""))
    verdict = _verify(portal, files={"assertion": ("assertion.jwt", assertion.encode(), "application/jwt")})
    claims = _assertion_claims(portal, assertion, issuer=issuer, client_id=client_id)
    if claims is None:
        verdict = {"valid": False, "reason": "bad_assertion"}
        claims = {}
    elif not _asserts_the_documents_sent(claims, pending.documents):  # not an older assertion of this signer's
        verdict = {"valid": False, "reason": "not_the_documents_sent"}
    verified = claims.get("verified_claims")
    attributes = verified.get("claims") if isinstance(verified, dict) else None
    name = attributes.get("name") if isinstance(attributes, dict) else None
    return SigningOutcome(
        subject=str(claims.get("sub", "")), name=name if isinstance(name, str) else None, assertion=assertion,
        assertion_verdict="valid" if verdict.get("valid") is True else f"invalid: {verdict.get('reason')}",
        documents=outcomes,
    )


def _asserts_the_documents_sent(claims: dict[str, Any], documents: tuple[Document, ...]) -> bool:
    """The assertion names exactly the documents this request sent: labels and SHA-256 digests, in order."""
    asserted = claims.get("documents")
    if not isinstance(asserted, list) or not all(isinstance(entry, dict) for entry in asserted):
        return False
    sent = [(document.label, base64.urlsafe_b64encode(document.digest).rstrip(b"=").decode()) for document in documents]
    return [(entry.get("label"), entry.get("digest")) for entry in asserted] == sent


def _endpoint(portal: Any, name: str) -> str:
    """An endpoint the portal's discovery document names; SigningFailed when it names none."""
    url = portal.load_server_metadata().get(name)
    if not isinstance(url, str):
        raise SigningFailed("invalid_response", f"the portal's metadata names no {name}")
    return url


def _judge_document(portal: Any, document: Document, entry: object) -> DocumentOutcome:
    """One returned document: is it the one sent, and does its signature verify (the portal's verdict)?"""
    asked = (document.label, _b64(document.digest))
    if not isinstance(entry, dict) or (entry.get("label"), entry.get("hash")) != asked:
        raise SigningFailed("invalid_response", f"the results do not answer the request for {document.label!r}")
    form = str(entry.get("signature_format"))
    signature = _b64decode(entry.get("signature"))
    signed_pdf = _b64decode(entry.get("signed_pdf"))
    if form == "pades" and document.kind == "pdf" and signed_pdf is not None:
        if not signed_pdf.startswith(document.content):  # an incremental update of what was sent, nothing else
            verdict: dict[str, Any] = {"valid": False, "reason": "not_the_document_sent"}
        else:
            verdict = _verify(portal, files={"pdf": ("signed.pdf", signed_pdf, "application/pdf")})
    elif form == "cades" and document.kind == "text" and signature is not None:
        verdict = _verify(portal, files={
            "signature": ("signature.p7s", signature, "application/pkcs7-signature"),
            "document": ("document.txt", document.content, "text/plain"),
        })
    else:
        raise SigningFailed("invalid_response", f"{document.label!r} came back as {form}, without its signature")
    return DocumentOutcome(
        label=document.label, kind=document.kind, hash_hex=document.digest.hex(), signature_format=form,
        valid=verdict.get("valid") is True, reason=None if verdict.get("valid") is True else str(verdict.get("reason")),
        signed_at=verdict.get("signing_time"), signature=signature, signed_pdf=signed_pdf,
    )


def _verify(portal: Any, *, files: dict[str, tuple[str, bytes, str]]) -> dict[str, Any]:
    """``POST /signing/verify`` (multipart); the verdict, or an invalid one saying why there is none."""
    try:
        answer = portal.post(_endpoint(portal, "signing_verification_endpoint"), files=files,
                             withhold_token=True, timeout=TIMEOUT)
    except OSError:
        return {"valid": False, "reason": "verification_unavailable"}
    verdict = _json(answer)
    if answer.status_code != HTTPStatus.OK or not isinstance(verdict.get("valid"), bool):
        return {"valid": False, "reason": f"verification_refused ({answer.status_code})"}
    return verdict


def _assertion_claims(portal: Any, assertion: str, *, issuer: str, client_id: str) -> dict[str, Any] | None:
    """The assertion's claims when it verifies with the published keys, has its type, issuer and audience."""
    try:
        metadata = portal.load_server_metadata()
        algorithms = metadata.get("id_token_signing_alg_values_supported") or ["ES256"]
        try:
            token = jwt.decode(assertion, KeySet.import_key_set(portal.fetch_jwk_set()), algorithms=algorithms)
        except InvalidKeyIdError:  # a key published after the site cached the set, as Authlib retries for ID tokens
            token = jwt.decode(assertion, KeySet.import_key_set(portal.fetch_jwk_set(force=True)),
                               algorithms=algorithms)
    except (JoseError, ValueError, OSError):
        return None
    claims = dict(token.claims)
    if token.header.get("typ") != ASSERTION_TYPE or claims.get("iss") != issuer:
        return None
    audience = claims.get("aud")
    if audience != client_id and not (isinstance(audience, list) and client_id in audience):
        return None
    return claims


def _json(answer: Any) -> dict[str, Any]:
    try:
        document = answer.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None
