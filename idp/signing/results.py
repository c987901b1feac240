"""The durable results of signing requests (``idp.signing.records``): written, bound, read.

Rows are written all at once when the phone's approval is verified, bound to the OAuth grant
when the RP redeems the code (one UPDATE, only for a signing request), and read by the grant.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from idp.audit import AuditEvent, append_in
from idp.signing.records import SignatureResult

__all__ = ["SignedResult", "SigningResults"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedResult:
    """One signed document, as the RP receives it."""

    label: str
    digest: bytes
    signature_format: str
    cms: bytes | None
    signed_pdf: bytes | None
    assertion: str


class SigningResults:
    """Signing results in the database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __repr__(self) -> str:
        return "SigningResults()"

    def save(
        self, *, request_id: str, client_id: str, results: Sequence[SignedResult], now: datetime,
        device_id: str, person_id: str, announce: Callable[[Session], None] | None = None,
    ) -> None:
        """Write every document of one request in one transaction: all of them or none.

        The same transaction appends the ``signature`` audit record (who signed, for which
        client, which documents by their SHA-256: never a label, which the RP wrote).
        ``announce(session)`` runs in that transaction too (the webhook outbox's completion);
        what it raises rolls the results back.
        """
        with self._sessions.begin() as session:
            session.add_all(SignatureResult(
                result_id=secrets.token_hex(16), request_id=request_id, client_id=client_id, grant_id=None,
                position=position, label=result.label, digest=result.digest,
                signature_format=result.signature_format, cms=result.cms, signed_pdf=result.signed_pdf,
                assertion=result.assertion, created_at=now,
            ) for position, result in enumerate(results))
            if announce is not None:
                announce(session)
            append_in(  # last: the audit lock is held until this transaction commits
                session, AuditEvent.SIGNATURE, at=now, actor=f"phone:{device_id}",
                subject=[f"person:{person_id}", f"client:{client_id}"],
                details={"request": request_id, "documents": [result.digest.hex() for result in results]},
            )

    def bind(self, *, request_id: str, client_id: str, grant_id: str) -> int:
        """Give the request's unbound results to ``grant_id``; how many rows it took."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(SignatureResult)
                .where(SignatureResult.request_id == request_id, SignatureResult.client_id == client_id,
                       SignatureResult.grant_id.is_(None))
                .values(grant_id=grant_id),
            )
            return int(result.rowcount)  # type: ignore[attr-defined] # a CursorResult for an UPDATE

    def of_grant(self, grant_id: str, *, client_id: str) -> list[SignedResult]:
        """The grant's results, in the RP's document order; empty for another client's grant."""
        statement = (
            select(SignatureResult)
            .where(SignatureResult.grant_id == grant_id, SignatureResult.client_id == client_id)
            .order_by(SignatureResult.position)
        )
        with self._sessions() as session:
            return [
                SignedResult(label=row.label, digest=row.digest, signature_format=row.signature_format,
                             cms=row.cms, signed_pdf=row.signed_pdf, assertion=row.assertion)
                for row in session.scalars(statement)
            ]
