"""Durable signing results: one row per document a phone signed for a relying party.

Written when the phone's approval is verified (``idp.signing.flow``), keyed by the signing
request's id, and bound to the OAuth grant when the RP redeems its code: from then on the RP
reads them at ``GET /signing/v1/results`` with that grant's access token. Each row keeps the
document's label and SHA-256, the format, the detached CAdES signature or the signed PDF, and
the signed-document assertion of the whole request.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.store.database import Base

__all__ = ["SignatureResult"]


class SignatureResult(Base):
    """One signed document of a signing request."""

    __tablename__ = "signature_results"

    result_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(32))
    """The signing request's random id, carried from PAR through the code to the grant."""
    client_id: Mapped[str] = mapped_column(String(64))
    """The RP that asked (no foreign key: a signed document's record outlives its client's registration)."""
    grant_id: Mapped[str | None] = mapped_column(String(64))
    """Set when the RP redeems the code of the approved request; None until then."""
    position: Mapped[int] = mapped_column(Integer)
    """The document's place in the RP's ``documentDigests`` (from 0)."""
    label: Mapped[str] = mapped_column(String(200))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    signature_format: Mapped[str] = mapped_column(String(8))
    """``cades`` (``cms`` holds the detached signature) or ``pades`` (``signed_pdf`` holds the PDF)."""
    cms: Mapped[bytes | None] = mapped_column(LargeBinary)
    signed_pdf: Mapped[bytes | None] = mapped_column(LargeBinary)
    assertion: Mapped[str] = mapped_column(Text)
    """The signed-document assertion (compact JWS) naming every document of the request."""
    created_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_signature_results_request_id", "request_id"),
        Index("ix_signature_results_grant_id", "grant_id"),
    )
