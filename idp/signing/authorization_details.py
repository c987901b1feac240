"""What a relying party asks the user to sign: RFC 9396 ``authorization_details`` of type ``document_signature``.

Shaped after the Cloud Signature Consortium API v2 (its ``credential`` authorization details):
a SHA-256 digest and a label per document, the digest algorithm by OID, and, optionally, the
PDF itself, so that the portal can return it signed (PAdES)::

    [{"type": "document_signature",
      "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1",
      "documentDigests": [
        {"label": "Lease contract", "hash": "<base64 SHA-256 of the document>"},
        {"label": "Terms", "hash": "<base64 SHA-256>", "document": "<base64 PDF>"}]}]

Strict, as authorization data should be: an unknown type or member, a second entry, a digest
that is not 32 bytes, a repeated label, a PDF over the size limit or whose SHA-256 is not the
digest given beside it are refused with ``invalid_authorization_details`` (RFC 9396 §5). The
parsed request keeps the documents; ``to_json`` gives the details back without the PDF bytes,
as the token response and the signed-document assertion repeat them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error

__all__ = [
    "DOCUMENT_SIGNATURE",
    "SHA256_OID",
    "DocumentToSign",
    "InvalidAuthorizationDetailsError",
    "SignatureRequest",
    "parse_authorization_details",
]

DOCUMENT_SIGNATURE = "document_signature"
SHA256_OID = "2.16.840.1.101.3.4.2.1"
"""id-sha256 (RFC 5754): the one digest algorithm accepted."""
MAX_LABEL_LENGTH = 200
_ENTRY_MEMBERS = frozenset({"type", "hashAlgorithmOID", "documentDigests"})
_DOCUMENT_MEMBERS = frozenset({"label", "hash", "document"})


class InvalidAuthorizationDetailsError(OAuth2Error):  # type: ignore[misc] # Authlib is untyped
    """RFC 9396 §5: "the authorization_details parameter ... does not conform to the respective type
    definition" (and the other reasons listed there)."""

    error = "invalid_authorization_details"


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentToSign:
    """One document: what the phone shows (label, start of the digest) and what gets signed."""

    label: str
    digest: bytes
    """SHA-256 of the document."""
    pdf: bytes | None = None
    """The PDF itself, when the relying party wants it back signed (PAdES)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureRequest:
    """The documents of one signing request, in the relying party's order."""

    documents: tuple[DocumentToSign, ...]

    def to_json(self) -> list[dict[str, Any]]:
        """The authorization details as granted, without the PDF bytes (RFC 9396 §7: in the token response)."""
        return [{
            "type": DOCUMENT_SIGNATURE,
            "hashAlgorithmOID": SHA256_OID,
            "documentDigests": [
                {"label": document.label, "hash": base64.b64encode(document.digest).decode()}
                for document in self.documents
            ],
        }]


def parse_authorization_details(raw: str, *, max_documents: int, max_pdf_bytes: int) -> SignatureRequest:
    """The signing request in ``raw`` (the parameter's JSON text). Raises InvalidAuthorizationDetailsError."""
    entry = _the_entry(raw)
    extra = sorted(set(entry) - _ENTRY_MEMBERS)
    if extra:
        raise _invalid(f"unknown member {extra[0]!r} in document_signature")
    if entry.get("hashAlgorithmOID") != SHA256_OID:
        raise _invalid(f"hashAlgorithmOID must be {SHA256_OID} (SHA-256)")
    listed = entry.get("documentDigests")
    if not isinstance(listed, list) or not listed:
        raise _invalid("documentDigests must be a non-empty array")
    if len(listed) > max_documents:
        raise _invalid(f"at most {max_documents} documents per request")
    documents = tuple(_document(item, number, max_pdf_bytes) for number, item in enumerate(listed, start=1))
    labels = [document.label for document in documents]
    if len(set(labels)) != len(labels):
        raise _invalid("document labels must be unique")
    return SignatureRequest(documents=documents)


def _the_entry(raw: str) -> dict[str, Any]:
    """The one document_signature entry of the array."""
    try:
        details = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _invalid("authorization_details is not JSON") from exc
    if not isinstance(details, list) or not details:
        raise _invalid("authorization_details must be a non-empty JSON array")
    if not all(isinstance(entry, dict) for entry in details):
        raise _invalid("every authorization_details entry must be a JSON object")
    unknown = sorted({str(entry.get("type")) for entry in details} - {DOCUMENT_SIGNATURE})
    if unknown:
        raise _invalid(f"unknown authorization_details type {unknown[0]!r}")
    if len(details) != 1:
        raise _invalid("one document_signature entry per request")
    entry: dict[str, Any] = details[0]
    return entry


def _document(item: object, number: int, max_pdf_bytes: int) -> DocumentToSign:
    where = f"documentDigests[{number}]"
    if not isinstance(item, dict):
        raise _invalid(f"{where} must be an object")
    extra = sorted(set(item) - _DOCUMENT_MEMBERS)
    if extra:
        raise _invalid(f"unknown member {extra[0]!r} in {where}")
    label = item.get("label")
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_LENGTH:
        raise _invalid(f"{where}.label must be text of 1 to {MAX_LABEL_LENGTH} characters")
    if any(unicodedata.category(character) in {"Cc", "Cf"} for character in label):
        raise _invalid(f"{where}.label must not contain control or format characters")
    digest = _base64(item.get("hash"), f"{where}.hash")
    if len(digest) != hashlib.sha256().digest_size:
        raise _invalid(f"{where}.hash must be a SHA-256 digest (32 bytes)")
    pdf = _pdf(item["document"], where, max_pdf_bytes) if "document" in item else None
    if pdf is not None and hashlib.sha256(pdf).digest() != digest:
        raise _invalid(f"{where}.hash is not the SHA-256 of {where}.document")
    return DocumentToSign(label=label, digest=digest, pdf=pdf)


def _pdf(encoded: object, where: str, max_bytes: int) -> bytes:
    """The inline PDF; its size is judged on the base64 text first, so nothing too big is decoded."""
    if isinstance(encoded, str) and len(encoded) > 4 * -(-max_bytes // 3):
        raise _invalid(f"{where}.document is larger than {max_bytes} bytes")
    pdf = _base64(encoded, f"{where}.document")
    if len(pdf) > max_bytes:
        raise _invalid(f"{where}.document is larger than {max_bytes} bytes")
    if not pdf.startswith(b"%PDF-"):
        raise _invalid(f"{where}.document is not a PDF")
    return pdf


def _base64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise _invalid(f"{where} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(f"{where} is not valid base64") from exc


def _invalid(description: str) -> InvalidAuthorizationDetailsError:
    return InvalidAuthorizationDetailsError(description=description)
