"""Grants, rotating refresh tokens and attribute consents in the durable store (RFC 9700 §4.14).

A grant is created when an authorization code is redeemed. Its refresh tokens are stored under
their SHA-256 and rotated on every use: ``rotate`` marks the presented token used with one
conditional UPDATE, so of two concurrent uses one wins; presenting a rotated token again is
reuse, and revokes the whole grant ("refresh token family"), since either the client or an
attacker holds a stolen copy (RFC 9700 §4.14.2).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, Select, bindparam, exists, insert, null, select, update
from sqlalchemy.orm import Session, sessionmaker

from idp.audit import AuditEvent, append_in
from idp.ceremonies.records import DeviceRecord, DeviceStatus
from idp.oidc.codes import IssuedCode
from idp.oidc.grants_records import Consent, Grant, RefreshToken
from idp.store.database import engine_of, single_statement

__all__ = ["ConsentService", "DeviceNotActive", "GrantInfo", "GrantService", "RefreshRejected"]

REFRESH_TOKEN_BYTES = 32


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantInfo:
    """A live grant as the token and userinfo endpoints see it."""

    grant_id: str
    client_id: str
    person_id: str
    scope: tuple[str, ...]
    auth_time: datetime
    amr: tuple[str, ...]
    acr: str | None
    sid: str

    # Authlib's TokenMixin, for the refresh-token grant
    def check_client(self, client: object) -> bool:
        """Whether ``client`` is the grant's client."""
        return getattr(client, "client_id", None) == self.client_id

    def get_scope(self) -> str:
        """The granted scope, space-separated."""
        return " ".join(self.scope)


class DeviceNotActive(LookupError):
    """The device that approved a login is revoked (or unknown): its code grants nothing."""


class RefreshRejected(enum.Enum):
    """Why a refresh token was refused."""

    UNKNOWN = "unknown"
    """Never issued, expired, revoked, or another client's."""
    REUSED = "reused"
    """Rotated before: the grant is now revoked."""


def _info(row: Grant) -> GrantInfo:
    return GrantInfo(
        grant_id=row.grant_id, client_id=row.client_id, person_id=row.person_id, scope=tuple(row.scope),
        auth_time=row.auth_time, amr=tuple(row.amr), acr=row.acr, sid=row.sid,
    )


class GrantService:
    """Creates grants, issues and rotates their refresh tokens, revokes them."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        refresh_token_ttl: timedelta,
    ) -> None:
        self._sessions = sessions
        self._engine = engine_of(sessions)
        self._ttl = refresh_token_ttl

    def __repr__(self) -> str:
        return f"GrantService(refresh_token_ttl={self._ttl})"

    def create(self, issued: IssuedCode, *, refresh_token: str | None, now: datetime) -> GrantInfo:
        """Record the grant a redeemed code made, with its first refresh token (stored hashed).

        Only while the device that approved the login is still active: a phone revoked between
        its approval and the code's redemption (``revoke_device_grants`` cannot see codes) grants
        nothing. Raises DeviceNotActive then.

        One transaction with the login's audit record (``idp.audit``). The grant and its refresh
        token are one statement on PostgreSQL (a data-modifying CTE), two INSERTs elsewhere.
        """
        values = {
            "grant_id": issued.grant_id, "client_id": issued.request.client_id, "person_id": issued.person_id,
            "scope": list(issued.request.scope), "claims": issued.request.claims, "auth_time": issued.auth_time,
            "amr": list(issued.amr), "acr": issued.acr, "consented_attributes": list(issued.consented_attributes),
            "signature_certificate_serial": (
                None if issued.signature_certificate_serial is None else str(issued.signature_certificate_serial)
            ),
            "device_id": issued.device_id, "sid": issued.sid, "created_at": now, "revoked_at": None,
        }
        with self._engine.begin() as connection:
            if refresh_token is not None and connection.dialect.name == "postgresql":
                written = connection.execute(
                    _GRANT_WITH_REFRESH_TOKEN, values | self._token_values(refresh_token, issued.grant_id, now),
                ).first() is not None
            else:
                written = connection.execute(_GRANT, values).rowcount == 1
                if written and refresh_token is not None:
                    connection.execute(insert(RefreshToken), self._token_values(refresh_token, issued.grant_id, now))
            if not written:
                raise DeviceNotActive(issued.device_id)
            append_in(
                connection, AuditEvent.LOGIN, at=now, actor=f"phone:{issued.device_id}",
                subject=[f"client:{issued.request.client_id}", f"grant:{issued.grant_id}"],
                details={"grant": issued.grant_id, "acr": issued.acr or ""},
            )
        return GrantInfo(
            grant_id=issued.grant_id, client_id=issued.request.client_id, person_id=issued.person_id,
            scope=tuple(issued.request.scope), auth_time=issued.auth_time, amr=tuple(issued.amr), acr=issued.acr,
            sid=issued.sid,
        )

    def add_refresh_token(self, grant_id: str, refresh_token: str, *, now: datetime) -> None:
        """Store the successor of a rotated refresh token."""
        with single_statement(self._engine) as connection:
            connection.execute(insert(RefreshToken), self._token_values(refresh_token, grant_id, now))

    def rotate(self, refresh_token: str, *, client_id: str, now: datetime) -> GrantInfo | RefreshRejected:
        """Use ``refresh_token`` once: its grant, or why not. Reuse revokes the grant."""
        digest = _digest(refresh_token)
        with self._sessions.begin() as session:
            used = session.execute(
                update(RefreshToken)
                .where(RefreshToken.token_sha256 == digest, RefreshToken.rotated_at.is_(None))
                .values(rotated_at=now)
                .returning(RefreshToken.grant_id, RefreshToken.expires_at),
            ).first()
            if used is None:
                known = session.scalar(select(RefreshToken.grant_id).where(RefreshToken.token_sha256 == digest))
                if known is None:
                    return RefreshRejected.UNKNOWN
                self._revoke(session, known, now)
                return RefreshRejected.REUSED
            grant = session.get(Grant, used.grant_id)
            if grant is None or grant.revoked_at is not None or used.expires_at <= now or grant.client_id != client_id:
                return RefreshRejected.UNKNOWN
            return _info(grant)

    def revoke(self, grant_id: str, *, now: datetime) -> bool:
        """Revoke the grant and every refresh token of it; False when it was unknown or revoked."""
        with self._sessions.begin() as session:
            return self._revoke(session, grant_id, now)

    def live_grants_of_device(self, device_id: str) -> list[str]:
        """The ids of the grants issued on ``device_id`` and not revoked."""
        with self._sessions.begin() as session:
            return list(session.scalars(
                select(Grant.grant_id).where(Grant.device_id == device_id, Grant.revoked_at.is_(None)),
            ))

    def grant(self, grant_id: str) -> Grant | None:
        """The grant's record (for userinfo: claims request, consent, certificate serial)."""
        with self._sessions.begin() as session:
            return session.get(Grant, grant_id)

    def _revoke(self, session: Session, grant_id: str, now: datetime) -> bool:
        revoked = session.execute(
            update(Grant).where(Grant.grant_id == grant_id, Grant.revoked_at.is_(None))
            .values(revoked_at=now).returning(Grant.grant_id),
        ).first()
        session.execute(
            update(RefreshToken).where(RefreshToken.grant_id == grant_id, RefreshToken.rotated_at.is_(None))
            .values(rotated_at=now),
        )
        return revoked is not None

    def _token_values(self, refresh_token: str, grant_id: str, now: datetime) -> dict[str, Any]:
        return {
            "token_sha256": _digest(refresh_token), "grant_id": grant_id, "issued_at": now,
            "expires_at": now + self._ttl, "rotated_at": None,
        }


def new_refresh_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


class ConsentService:
    """The attributes each person approved for each client; remembered, and revocable."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._engine = engine_of(sessions)

    def __repr__(self) -> str:
        return "ConsentService()"

    def record(self, *, person_id: str, client_id: str, attributes: tuple[str, ...], now: datetime) -> None:
        """Remember that the person approved ``attributes`` for the client (with the signature key).

        A person has one standing consent per client, widened when a login approves more; a
        login that approves what is already consented writes nothing (one SELECT).
        """
        if set(attributes) <= self.granted(person_id=person_id, client_id=client_id):
            return
        with self._sessions.begin() as session:
            standing = session.scalars(_standing(person_id, client_id).with_for_update()).all()
            held = {name for consent in standing for name in consent.attributes}
            if not standing:
                session.add(Consent(
                    consent_id=secrets.token_urlsafe(24), person_id=person_id, client_id=client_id,
                    attributes=sorted(attributes), granted_at=now, revoked_at=None,
                ))
            elif not set(attributes) <= held:
                standing[0].attributes = sorted(held | set(attributes))
                standing[0].granted_at = now
            else:
                return
            append_in(
                session, AuditEvent.CONSENT_GIVEN, at=now, actor=f"person:{person_id}",
                subject=[f"person:{person_id}", f"client:{client_id}"],
                details={"attributes": sorted(held | set(attributes))},
            )

    def granted(self, *, person_id: str, client_id: str) -> frozenset[str]:
        """Every attribute the person has approved for the client and not revoked."""
        with single_statement(self._engine) as connection:
            rows = connection.scalars(_GRANTED, {"person_id": person_id, "client_id": client_id}).all()
        return frozenset(name for attributes in rows for name in attributes)

    def standing(self, *, person_id: str) -> dict[str, frozenset[str]]:
        """Every client the person has a standing consent for, with its attributes (the account page)."""
        statement = select(Consent.client_id, Consent.attributes).where(
            Consent.person_id == person_id, Consent.revoked_at.is_(None),
        )
        found: dict[str, set[str]] = {}
        with single_statement(self._engine) as connection:
            for client_id, attributes in connection.execute(statement):
                found.setdefault(client_id, set()).update(attributes)
        return {client_id: frozenset(attributes) for client_id, attributes in found.items()}

    def revoke(self, *, person_id: str, client_id: str, now: datetime) -> int:
        """Withdraw every consent of the person for the client; how many were withdrawn.

        Attributes are released at userinfo only while a consent stands, so this takes effect
        at the client's next userinfo call.
        """
        with self._sessions.begin() as session:
            result = session.execute(
                update(Consent).where(
                    Consent.person_id == person_id, Consent.client_id == client_id, Consent.revoked_at.is_(None),
                ).values(revoked_at=now).returning(Consent.consent_id),
            )
            withdrawn = len(result.all())
            if withdrawn:
                append_in(
                    session, AuditEvent.CONSENT_WITHDRAWN, at=now, actor=f"person:{person_id}",
                    subject=[f"person:{person_id}", f"client:{client_id}"], details={"consents": withdrawn},
                )
            return withdrawn


def _standing(person_id: str, client_id: str) -> Select[Consent]:
    """The person's consents for the client that have not been withdrawn (normally one)."""
    return select(Consent).where(
        Consent.person_id == person_id, Consent.client_id == client_id, Consent.revoked_at.is_(None),
    )


_GRANTED = select(Consent.attributes).where(
    Consent.person_id == bindparam("person_id"), Consent.client_id == bindparam("client_id"),
    Consent.revoked_at.is_(None),
)
"""``granted``'s statement, built once: it runs at every login that releases attributes."""


def _grant_row() -> Insert:
    """``INSERT INTO oidc_grants SELECT <the values> WHERE <the device is active>``: no row otherwise."""
    columns = Grant.__table__.c
    device_active = exists().where(
        DeviceRecord.id == bindparam("device_id", type_=columns.device_id.type),
        DeviceRecord.status == DeviceStatus.ACTIVE.value,
    )
    return insert(Grant).from_select(
        [column.name for column in columns],
        select(*(bindparam(column.name, type_=column.type) for column in columns)).where(device_active),
    )


def _grant_with_refresh_token() -> Insert:
    """``WITH new_grant AS (INSERT INTO oidc_grants … RETURNING grant_id) INSERT INTO oidc_refresh_tokens
    SELECT …, new_grant.grant_id, … FROM new_grant``: both rows or neither, in one statement."""
    tokens = RefreshToken.__table__
    new_grant = _GRANT.returning(Grant.grant_id).cte("new_grant")
    return insert(RefreshToken).from_select(
        ["token_sha256", "grant_id", "issued_at", "expires_at", "rotated_at"],
        select(
            bindparam("token_sha256", type_=tokens.c.token_sha256.type), new_grant.c.grant_id,
            bindparam("issued_at", type_=tokens.c.issued_at.type),
            bindparam("expires_at", type_=tokens.c.expires_at.type), null(),
        ),
    ).add_cte(new_grant).returning(RefreshToken.grant_id)


_GRANT = _grant_row()
_GRANT_WITH_REFRESH_TOKEN = _grant_with_refresh_token()
