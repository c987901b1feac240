"""RFC 9396 authorization details of type document_signature: what is accepted, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from idp.signing.authorization_details import (
    SHA256_OID,
    InvalidAuthorizationDetailsError,
    parse_authorization_details,
)

PDF = b"%PDF-1.7\n% a contract\n%%EOF\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def digest(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def details(*documents: dict[str, object], **entry: object) -> str:
    base = {"type": "document_signature", "hashAlgorithmOID": SHA256_OID, "documentDigests": list(documents)}
    base.update(entry)
    return json.dumps([base])


def parse(raw: str, *, max_documents: int = 3, max_pdf_bytes: int = 1024):
    return parse_authorization_details(raw, max_documents=max_documents, max_pdf_bytes=max_pdf_bytes)


def refused(raw: str, **limits: int) -> str:
    with pytest.raises(InvalidAuthorizationDetailsError) as error:
        parse(raw, **limits)
    assert error.value.error == "invalid_authorization_details"
    return error.value.description


def test_digests_and_an_inline_pdf_are_accepted_in_order():
    request = parse(details({"label": "Lease", "hash": digest(b"lease")},
                            {"label": "Terms", "hash": digest(PDF), "document": b64(PDF)}))
    assert [document.label for document in request.documents] == ["Lease", "Terms"]
    assert request.documents[0].digest == hashlib.sha256(b"lease").digest()
    assert request.documents[0].pdf is None
    assert request.documents[1].pdf == PDF


def test_to_json_repeats_the_details_without_the_pdf():
    request = parse(details({"label": "Terms", "hash": digest(PDF), "document": b64(PDF)}))
    assert request.to_json() == [{
        "type": "document_signature", "hashAlgorithmOID": SHA256_OID,
        "documentDigests": [{"label": "Terms", "hash": digest(PDF)}],
    }]


@pytest.mark.parametrize(("raw", "reason"), [
    ("not json", "authorization_details is not JSON"),
    ("[" * 100_000, "authorization_details is not JSON"),
    ("{}", "authorization_details must be a non-empty JSON array"),
    ("[]", "authorization_details must be a non-empty JSON array"),
    ('["document_signature"]', "every authorization_details entry must be a JSON object"),
    ('[{"type": "payment_initiation"}]', "unknown authorization_details type 'payment_initiation'"),
    (json.dumps([{"type": "document_signature", "hashAlgorithmOID": SHA256_OID,
                  "documentDigests": [{"label": "a", "hash": b64(bytes(32))}]}] * 2),
     "one document_signature entry per request"),
])
def test_malformed_details_are_refused(raw: str, reason: str):
    assert refused(raw) == reason


def test_unknown_type_is_refused_even_beside_a_known_one():
    raw = json.dumps([{"type": "document_signature"}, {"type": "account_information"}])
    assert refused(raw) == "unknown authorization_details type 'account_information'"


def test_another_digest_algorithm_is_refused():
    sha1 = details({"label": "a", "hash": b64(bytes(20))}, hashAlgorithmOID="1.3.14.3.2.26")
    assert refused(sha1) == f"hashAlgorithmOID must be {SHA256_OID} (SHA-256)"


def test_unknown_members_are_refused():
    assert refused(details({"label": "a", "hash": b64(bytes(32))}, credentialID="x")) == (
        "unknown member 'credentialID' in document_signature")
    assert refused(details({"label": "a", "hash": b64(bytes(32)), "signature_format": "P"})) == (
        "unknown member 'signature_format' in documentDigests[1]")


def test_too_many_or_no_documents_are_refused():
    four = [{"label": f"d{n}", "hash": b64(bytes([n]) * 32)} for n in range(4)]
    assert refused(details(*four)) == "at most 3 documents per request"
    assert refused(details()) == "documentDigests must be a non-empty array"


@pytest.mark.parametrize(("document", "reason"), [
    ({"label": "a", "hash": b64(bytes(31))}, "documentDigests[1].hash must be a SHA-256 digest (32 bytes)"),
    ({"label": "a", "hash": "not base64!"}, "documentDigests[1].hash is not valid base64"),
    ({"label": "a", "hash": 7}, "documentDigests[1].hash must be base64 text"),
    ({"label": "", "hash": b64(bytes(32))}, "documentDigests[1].label must be text of 1 to 200 characters"),
    ({"label": "x" * 201, "hash": b64(bytes(32))}, "documentDigests[1].label must be text of 1 to 200 characters"),
    ({"label": "a\u202eb", "hash": b64(bytes(32))},
     "documentDigests[1].label must not contain control or format characters"),
    ({"hash": b64(bytes(32))}, "documentDigests[1].label must be text of 1 to 200 characters"),
    ({"label": "a", "hash": b64(bytes(32)), "document": 1}, "documentDigests[1].document must be base64 text"),
    ({"label": "a", "hash": b64(bytes(32)), "document": "%%%"}, "documentDigests[1].document is not valid base64"),
])
def test_bad_documents_are_refused(document: dict[str, object], reason: str):
    assert refused(details(document)) == reason


def test_repeated_labels_are_refused():
    twice = details({"label": "Lease", "hash": b64(bytes(32))}, {"label": "Lease", "hash": b64(bytes([1]) * 32)})
    assert refused(twice) == "document labels must be unique"


def test_a_pdf_whose_digest_is_not_the_one_given_is_refused():
    raw = details({"label": "Terms", "hash": digest(b"something else"), "document": b64(PDF)})
    assert refused(raw) == "documentDigests[1].hash is not the SHA-256 of documentDigests[1].document"


def test_an_oversized_pdf_is_refused_before_it_is_decoded():
    big = PDF + b"x" * 2000
    assert refused(details({"label": "Big", "hash": digest(big), "document": b64(big)})) == (
        "documentDigests[1].document is larger than 1024 bytes")


def test_a_document_that_is_no_pdf_is_refused():
    text = b"plain text"
    assert refused(details({"label": "Note", "hash": digest(text), "document": b64(text)})) == (
        "documentDigests[1].document is not a PDF")
