"""The signing flow: a relying party's signing request through the login page and the phone.

RFC 9396 ``authorization_details`` of type ``document_signature`` (``authorization_details``)
ride the pushed authorization request. What the request keeps of them is small and JSON
(``signing_field``: an id, and per document its label, digest and whether a PDF came); the PDFs
wait in the ephemeral store under their SHA-256 (``keep_documents``), so the login page's
polls, which read the transaction every second, never carry them.

When the phone looks the transaction up it names its authentication credential; ``prepare``
makes, per document, the CAdES or PAdES first phase with that phone's signature certificate,
keeps the pending states in the ephemeral store, and returns what the phone shows and signs.
``finish`` takes the phone's signatures after its login assertion was verified, assembles and
verifies every signature, issues one signed-document assertion, and writes the results to the
database; ``bind`` gives them to the OAuth grant when the RP redeems its code.

A signing transaction has one decision, taken atomically in the ephemeral store (``decide``) by
whichever comes first of the phone's approval (before ``finish`` stores anything), the phone's
decline and the browser's cancel: the others follow it, so results are never stored for a
transaction the browser cancelled, webhook or not.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import decode_credential_public_key
from webauthn.helpers.decoded_public_key_to_cryptography import decoded_public_key_to_cryptography

from idp.clock import Clock
from idp.signing.assertion import SignedDocument
from idp.signing.authorization_details import DocumentToSign, SignatureRequest, parse_authorization_details
from idp.signing.cades import PendingCades
from idp.signing.errors import Reason, SigningRejected
from idp.signing.pades import PendingPades
from idp.signing.results import SignedResult, SigningResults
from idp.signing.service import SigningService
from idp.store.ephemeral import EphemeralStore
from idp.webhooks.outbox import WebhookOutbox

__all__ = [
    "DIGEST_PREFIX_HEX",
    "MAX_DOCUMENTS",
    "MAX_INLINE_PDF_BYTES",
    "SIGNING_FLOW_EXTENSION",
    "Decision",
    "LookupRequired",
    "Signer",
    "SigningFlow",
    "documents_shown",
    "granted_details",
    "granted_details_of",
    "signing_field",
]

SIGNING_FLOW_EXTENSION = "myna.signing_flow"
MAX_DOCUMENTS = 10
"""Documents per signing request: the phone lists each one, and the user must read the list."""
MAX_INLINE_PDF_BYTES = 512 * 1024
"""Largest PDF pushed inline; the whole pushed request must fit in the portal's 1 MiB body limit."""
DIGEST_PREFIX_HEX = 16
"""How much of a digest the phone shows: the user compares it with what the RP's page shows."""


def signing_field(request: SignatureRequest) -> dict[str, Any]:
    """What ``AuthorizationRequest.signing`` keeps of a parsed request: no PDF bytes."""
    return {
        "id": secrets.token_hex(16),
        "documents": [
            {"label": document.label, "digest": _b64(document.digest), "pdf": document.pdf is not None}
            for document in request.documents
        ],
    }


def granted_details(signing: dict[str, Any]) -> list[dict[str, Any]]:
    """The authorization details as granted (RFC 9396 §7), for the token response and the results."""
    documents = tuple(
        DocumentToSign(label=entry["label"], digest=base64.b64decode(entry["digest"]))
        for entry in signing["documents"]
    )
    return SignatureRequest(documents=documents).to_json()


def documents_shown(signing: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Each document's label and the start of its digest (hex), as the login page and the phone show them."""
    if signing is None:
        return []
    return [(entry["label"], _digest_prefix(entry["digest"])) for entry in signing["documents"]]


def granted_details_of(results: Sequence[SignedResult]) -> list[dict[str, Any]]:
    """``granted_details`` rebuilt from the stored results of one request."""
    documents = tuple(DocumentToSign(label=result.label, digest=result.digest) for result in results)
    return SignatureRequest(documents=documents).to_json()


class Decision(enum.StrEnum):
    """Who decided a signing transaction (``SigningFlow.decide``)."""

    APPROVE = "approve"
    DECLINE = "decline"
    CANCEL = "cancel"


class LookupRequired(Exception):
    """The documents were prepared for a signature certificate the phone no longer has (it renewed
    its signature key since the lookup): look the transaction up again, then sign what it lists."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Signer:
    """The phone that signs: its device id and keys, as the device directory has them."""

    device_id: str
    person_id: str
    sign_certificate: x509.Certificate
    auth_public_key: bytes
    """COSE, as stored at enrollment: a signature by this key over a document is refused."""


class SigningFlow:
    """Prepares, finishes and stores the document signatures of signing requests."""

    def __init__(
        self,
        *,
        service: SigningService,
        ephemeral: EphemeralStore,
        results: SigningResults,
        subject: Callable[[str, str], str],
        pending_ttl: timedelta,
        documents_ttl: timedelta,
        clock: Clock,
        outbox: WebhookOutbox | None = None,
    ) -> None:
        """``subject(client_id, person_id)``: the pairwise ``sub`` the assertion names; ``outbox``:
        where the requests of clients with a webhook are announced (``idp.webhooks``)."""
        self._outbox = outbox
        self._service = service
        self._ephemeral = ephemeral
        self.results = results
        self._subject = subject
        self._pending_ttl = pending_ttl
        self._documents_ttl = documents_ttl
        self._clock = clock

    def __repr__(self) -> str:
        return f"SigningFlow({self._service!r})"

    def keep_documents(self, request: SignatureRequest) -> None:
        """Keep the request's PDFs until the phone signs them, under their SHA-256 (content-addressed)."""
        for document in request.documents:
            if document.pdf is not None:
                self._ephemeral.put(_document_key(document.digest), document.pdf, ttl=self._documents_ttl)

    def keep_documents_of(self, authorization_details: str) -> None:
        """``keep_documents`` for the raw parameter that ``check_authorization_details`` accepted."""
        self.keep_documents(parse_authorization_details(
            authorization_details, max_documents=MAX_DOCUMENTS, max_pdf_bytes=MAX_INLINE_PDF_BYTES,
        ))

    def pushed(self, signing: dict[str, Any], *, client_id: str, request_uri: str) -> None:
        """At PAR, once the request_uri is made: a client with a webhook will hear how the request ends."""
        if self._outbox is not None:
            self._outbox.schedule(request_id=signing["id"], client_id=client_id, request_uri=request_uri,
                                  now=self._clock.now())

    def decline(self, signing: dict[str, Any], *, client_id: str) -> None:
        """The user declined the request on the phone: announce it. Raises RequestEnded when it was
        already announced as completed or expired."""
        if self._outbox is not None:
            self._outbox.decline(request_id=signing["id"], client_id=client_id, now=self._clock.now())

    def decide(self, transaction_id: str, decision: Decision) -> Decision | None:
        """Take the transaction's one decision (an atomic ``put_new``): None when this call took
        it, else the decision taken first (a second approval too finds ``APPROVE`` taken)."""
        key = _decision_key(transaction_id)
        while not self._ephemeral.put_new(key, decision.value.encode(), ttl=self._pending_ttl):
            held = self._ephemeral.get(key)
            if held is not None:  # else released meanwhile (``reopen``): try again
                return Decision(held.decode())
        return None

    def reopen(self, transaction_id: str) -> None:
        """Give the decision back: the approval that took it failed, the transaction stays open."""
        self._ephemeral.delete(_decision_key(transaction_id))

    def prepared_for(self, transaction_id: str) -> str | None:
        """The device id of the phone the transaction's documents were last prepared for, if any."""
        raw = self._ephemeral.get(_pending_key(transaction_id))
        return None if raw is None else str(json.loads(raw)["device_id"])

    def prepare(self, *, transaction_id: str, signing: dict[str, Any], signer: Signer) -> list[dict[str, Any]]:
        """Phase 1 for every document, with ``signer``'s certificate; what the phone shows and signs.

        Raises SigningRejected: NOT_SIGNATURE_CERTIFICATE, or MALFORMED when a PDF is no longer
        kept (the request outlived it).
        """
        auth_key = _auth_key(signer.auth_public_key)
        pending: list[PendingCades | PendingPades] = []
        for entry in signing["documents"]:
            digest = base64.b64decode(entry["digest"])
            if entry["pdf"]:
                pending.append(self._service.prepare_pades(
                    pdf=self._document(digest), certificate=signer.sign_certificate,
                    expected_digest=digest, authentication_key=auth_key,
                ))
            else:
                pending.append(self._service.prepare_cades(
                    document_digest=digest, certificate=signer.sign_certificate, authentication_key=auth_key,
                ))
        self._ephemeral.put(_pending_key(transaction_id), json.dumps({
            "device_id": signer.device_id,
            "certificate": _fingerprint(signer.sign_certificate),
            "pending": [{"format": _format(item), "state": _b64(item.to_bytes())} for item in pending],
        }).encode(), ttl=self._pending_ttl)
        return [
            {
                "label": entry["label"],
                "digest_prefix": _digest_prefix(entry["digest"]),
                "signature_format": _format(item),
                "to_be_signed": _b64url(item.to_be_signed),
            }
            for entry, item in zip(signing["documents"], pending, strict=True)
        ]

    def finish(
        self,
        *,
        transaction_id: str,
        signing: dict[str, Any],
        client_id: str,
        signer: Signer,
        signatures: Sequence[bytes],
        release: Sequence[str] = (),
        deadline: datetime | None = None,
    ) -> list[SignedResult]:
        """Phase 2 for every document, the assertion, and the results written to the database.

        Call only after the phone's login assertion verified. Raises SigningRejected:
        MALFORMED (no documents prepared for this phone, or not one signature per document),
        AUTHENTICATION_KEY, BAD_SIGNATURE, or a certificate reason; LookupRequired (the documents
        were prepared for the phone's previous signature certificate); or RequestEnded (the request
        was announced as expired or declined meanwhile, or ``deadline``, the transaction's end,
        has passed while the documents were assembled); nothing is written then.
        """
        pending = self._pending(transaction_id, signer=signer)
        if len(signatures) != len(pending) or len(pending) != len(signing["documents"]):
            raise SigningRejected(Reason.MALFORMED, "one document signature per document, in order")
        signed = [self._finish_one(item, signature) for item, signature in zip(pending, signatures, strict=True)]
        documents = [
            SignedDocument(label=entry["label"], digest=base64.b64decode(entry["digest"]),
                           signature_format=form, verification=verification)
            for entry, (form, _output, verification) in zip(signing["documents"], signed, strict=True)
        ]
        assertion = self._service.make_assertion(
            client_id=client_id, subject=self._subject(client_id, signer.person_id), documents=documents,
            release=release,
        )
        results = [
            SignedResult(label=document.label, digest=document.digest, signature_format=form,
                         cms=output if form == "cades" else None, signed_pdf=output if form == "pades" else None,
                         assertion=assertion)
            for document, (form, output, _verification) in zip(documents, signed, strict=True)
        ]
        now = self._clock.now()
        outbox = self._outbox
        announce = None if outbox is None else lambda session: outbox.complete(
            session, request_id=signing["id"], client_id=client_id, now=now, deadline=deadline,
            documents=[{"label": entry["label"], "hash": entry["digest"]} for entry in signing["documents"]],
        )
        self.results.save(request_id=signing["id"], client_id=client_id, results=results, now=now,
                          device_id=signer.device_id, person_id=signer.person_id, announce=announce)
        self._ephemeral.delete(_pending_key(transaction_id))
        return results

    def grant(self, signing: dict[str, Any], *, client_id: str, grant_id: str) -> list[dict[str, Any]]:
        """At the token endpoint: bind the request's results to the new grant; the details granted."""
        self.results.bind(request_id=signing["id"], client_id=client_id, grant_id=grant_id)
        return granted_details(signing)

    def _finish_one(self, pending: PendingCades | PendingPades, signature: bytes) -> tuple[str, bytes, Any]:
        """The assembled signature and the portal's own verification of it (asserted only when valid)."""
        if isinstance(pending, PendingCades):
            output = self._service.finish_cades(pending, signature)
            verification = self._service.verify_cades(signature=output, document_digest=pending.document_digest)
        else:
            output = self._service.finish_pades(pending, signature)
            verification = self._service.verify_pades(output)
        if not verification.valid:
            raise SigningRejected(verification.reason or Reason.MALFORMED, verification.detail)
        return _format(pending), output, verification

    def _pending(self, transaction_id: str, *, signer: Signer) -> list[PendingCades | PendingPades]:
        raw = self._ephemeral.get(_pending_key(transaction_id))
        if raw is None:
            raise SigningRejected(Reason.MALFORMED, "no documents were prepared: look the transaction up first")
        state = json.loads(raw)
        if state["device_id"] != signer.device_id:
            raise SigningRejected(Reason.UNKNOWN_CERTIFICATE, "the documents were prepared for another phone")
        if state.get("certificate") != _fingerprint(signer.sign_certificate):  # renewed since the lookup
            raise LookupRequired(transaction_id)
        return [
            PendingCades.from_bytes(base64.b64decode(item["state"])) if item["format"] == "cades"
            else PendingPades.from_bytes(base64.b64decode(item["state"]))
            for item in state["pending"]
        ]

    def _document(self, digest: bytes) -> bytes:
        pdf = self._ephemeral.get(_document_key(digest))
        if pdf is None or hashlib.sha256(pdf).digest() != digest:
            raise SigningRejected(Reason.MALFORMED, "the PDF to sign is no longer kept; push the request again")
        return pdf


def _auth_key(cose: bytes) -> ec.EllipticCurvePublicKey | None:
    key = decoded_public_key_to_cryptography(decode_credential_public_key(cose))
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def _digest_prefix(digest: str) -> str:
    return base64.b64decode(digest).hex()[:DIGEST_PREFIX_HEX]


def _format(pending: PendingCades | PendingPades) -> str:
    return "cades" if isinstance(pending, PendingCades) else "pades"


def _document_key(digest: bytes) -> str:
    return f"signdoc:{digest.hex()}"


def _pending_key(transaction_id: str) -> str:
    return f"txn:{transaction_id}:signing"


def _decision_key(transaction_id: str) -> str:
    return f"txn:{transaction_id}:signing-decision"


def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
