"""Login transactions: what the browser, the phone and the portal share while the user decides.

A transaction is opened by the authorization endpoint and lives in the ephemeral store with a
TTL. Its parts are kept under separate keys so that every state change is one atomic store
operation, never a read-modify-write:

``txn:<id>``          the transaction itself (JSON), written once at creation; kept ``keep``
                      past its expiry, so the browser that started it can still be sent back
                      to the client with ``access_denied`` (its status reads ``expired``)
``txn:<id>:scanned``  present once a phone fetched it (first writer wins, ``put_new``)
``txn:<id>:outcome``  approved / declined / cancelled, written once (``put_new``): of a phone's
                      approval and the browser's cancel exactly one wins
``txn:<id>:claimed``  the browser took the approved outcome to mint its authorization code
                      (``put_new``): a second claim fails, so one approval yields one code

The status the browser and phone see is derived from which of these keys exist; ``load`` reads
the transaction and all three in one MGET (one round trip).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from idp.store.ephemeral import EphemeralStore

__all__ = [
    "ACR_SMARTPHONE_SE",
    "EXPIRED_KEPT",
    "AuthorizationRequest",
    "LoginTransaction",
    "Outcome",
    "OutcomeKind",
    "TransactionState",
    "TransactionStatus",
    "TransactionStore",
    "UnknownTransaction",
    "browser_binding",
]

VERIFICATION_CODE_DIGITS = 4
EXPIRED_KEPT = timedelta(minutes=10)
"""How long after a transaction expires it is remembered: its browser can still be sent back to
the client with ``access_denied``."""
ACR_SMARTPHONE_SE = "urn:myna-gateway:acr:smartphone-se"
"""The authentication context a login here reaches: a signature by a smartphone SE key, after
biometric user verification, whose JPKI-derived certificate is valid and not revoked."""


class TransactionStatus(enum.Enum):
    """What the login page and the phone show."""

    PENDING = "pending"
    SCANNED = "scanned"
    APPROVED = "approved"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    COMPLETED = "completed"
    """Approved, and the browser has claimed the outcome (its authorization code is minted)."""


class OutcomeKind(enum.Enum):
    """How a transaction ended."""

    APPROVED = "approved"
    DECLINED = "declined"
    CANCELLED = "cancelled"


class UnknownTransaction(LookupError):
    """No live transaction has that id: it never existed or it expired."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizationRequest:
    """The validated OpenID Connect authorization request a login transaction serves."""

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str
    code_challenge_method: str = "S256"
    prompt: tuple[str, ...] = ()
    max_age: int | None = None
    acr_values: tuple[str, ...] = ()
    claims: dict[str, Any] | None = None
    ui_locales: tuple[str, ...] = ()
    requested_attributes: tuple[str, ...] = ()
    """OIDC claim names of the identity attributes asked for (name, address, birthdate, gender),
    from the scopes and the claims parameter; the phone shows exactly these for consent."""
    signing: dict[str, Any] | None = None
    """A signing request's documents (``idp.signing.flow.signing_field``: labels and digests, never
    the PDFs) when the RP pushed RFC 9396 ``authorization_details``; None for a plain login."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists); ``from_dict`` is the inverse."""
        return {name: getattr(self, name) for name in _REQUEST_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuthorizationRequest:
        """The inverse of ``to_dict``."""
        fields: dict[str, Any] = {
            name: tuple(value) if name in _TUPLE_FIELDS else value for name, value in data.items()
        }
        return cls(**fields)


_REQUEST_FIELDS = tuple(AuthorizationRequest.__slots__)
_TUPLE_FIELDS = frozenset(("scope", "prompt", "acr_values", "ui_locales", "requested_attributes"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The user's decision on the phone (or the browser's cancel)."""

    kind: OutcomeKind
    person_id: str | None = None
    device_id: str | None = None
    auth_time: datetime | None = None
    amr: tuple[str, ...] = ()
    acr: str | None = None
    consented_attributes: tuple[str, ...] = ()
    """Attributes the user approved for this RP, with a verified consent signature."""
    signature_certificate_serial: int | None = None
    """The smartphone signature certificate the attributes come from (portal-internal only)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginTransaction:
    """One pending login: the request, what both screens show, and the phone's challenge."""

    id: str
    request: AuthorizationRequest
    rp_name: str
    verification_code: str
    """Shown on the login page and on the phone, so a relayed request is caught by the user."""
    qr_secret: bytes = field(repr=False)
    """Keys the rotating QR code's HMAC (``idp.ceremonies.qr``); never leaves the portal."""
    browser_binding: str = field(repr=False)
    """SHA-256 of a secret in the starting browser's cookie: only that browser may claim the code."""
    challenge: bytes = field(repr=False)
    """The WebAuthn challenge the phone's auth key signs."""
    created_at: datetime
    expires_at: datetime

    def to_json(self) -> bytes:
        """Serialise for the ephemeral store."""
        return json.dumps({
            "id": self.id, "request": self.request.to_dict(), "rp_name": self.rp_name,
            "verification_code": self.verification_code,
            "qr_secret": base64.urlsafe_b64encode(self.qr_secret).decode(),
            "browser_binding": self.browser_binding,
            "challenge": base64.urlsafe_b64encode(self.challenge).decode(),
            "created_at": self.created_at.isoformat(), "expires_at": self.expires_at.isoformat(),
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LoginTransaction:
        """The inverse of ``to_json``."""
        data = json.loads(raw)
        request = AuthorizationRequest.from_dict(data.pop("request"))
        for name in ("qr_secret", "challenge"):
            data[name] = base64.urlsafe_b64decode(data[name])
        for name in ("created_at", "expires_at"):
            data[name] = datetime.fromisoformat(data[name])
        return cls(request=request, **data)


def _outcome_to_json(outcome: Outcome) -> bytes:
    data = {name: getattr(outcome, name) for name in Outcome.__slots__}
    data["kind"] = outcome.kind.value
    data["auth_time"] = outcome.auth_time.isoformat() if outcome.auth_time else None
    return json.dumps(data, separators=(",", ":")).encode()


def _outcome_from_json(raw: bytes) -> Outcome:
    data = json.loads(raw)
    data["kind"] = OutcomeKind(data["kind"])
    data["auth_time"] = datetime.fromisoformat(data["auth_time"]) if data["auth_time"] else None
    data["amr"] = tuple(data["amr"])
    data["consented_attributes"] = tuple(data["consented_attributes"])
    return Outcome(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionState:
    """A transaction and where it stood when read: one consistent read of all its keys."""

    transaction: LoginTransaction
    status: TransactionStatus
    outcome: Outcome | None
    """The decision, when there is one; written once, so it stays true after the read."""


class TransactionStore:
    """Opens, reads and settles login transactions in the ephemeral store."""

    def __init__(self, store: EphemeralStore, *, ttl: timedelta, keep: timedelta = timedelta(0)) -> None:
        """``ttl``: how long the user has to decide; ``keep``: how long an expired one is remembered."""
        self._store = store
        self._ttl = ttl
        self._keep = keep

    def __repr__(self) -> str:
        return f"TransactionStore(ttl={self._ttl}, keep={self._keep})"

    def open(
        self,
        *,
        request: AuthorizationRequest,
        rp_name: str,
        browser_secret: str,
        now: datetime,
    ) -> LoginTransaction:
        """Create a transaction for ``request``; ``browser_secret`` goes in the browser's cookie."""
        transaction = LoginTransaction(
            id=secrets.token_urlsafe(16),
            request=request,
            rp_name=rp_name,
            verification_code=f"{secrets.randbelow(10**VERIFICATION_CODE_DIGITS):0{VERIFICATION_CODE_DIGITS}d}",
            qr_secret=secrets.token_bytes(32),
            browser_binding=browser_binding(browser_secret),
            challenge=secrets.token_bytes(32),
            created_at=now.astimezone(UTC),
            expires_at=now.astimezone(UTC) + self._ttl,
        )
        if not self._store.put_new(_key(transaction.id), transaction.to_json(), ttl=self._ttl + self._keep):
            raise RuntimeError("transaction id collision")  # 128 random bits: never in practice
        return transaction

    def get(self, transaction_id: str) -> LoginTransaction:
        """The live transaction. Raises UnknownTransaction when it is absent or expired."""
        raw = self._store.get(_key(transaction_id))
        if raw is None:
            raise UnknownTransaction(transaction_id)
        return LoginTransaction.from_json(raw)

    def load(self, transaction_id: str, *, now: datetime) -> TransactionState:
        """The live transaction and its status, in one read. Raises UnknownTransaction."""
        raw, *parts = self._store.get_many([_key(transaction_id), *_part_keys(transaction_id)])
        if raw is None:
            raise UnknownTransaction(transaction_id)
        transaction = LoginTransaction.from_json(raw)
        return _state(transaction, *parts, now=now)

    def status(self, transaction: LoginTransaction, *, now: datetime) -> TransactionStatus:
        """Where the transaction stands, derived from its keys (read in one MGET)."""
        return _state(transaction, *self._store.get_many(_part_keys(transaction.id)), now=now).status

    def mark_scanned(self, transaction: LoginTransaction) -> bool:
        """Record that a phone fetched the transaction; True for the first phone only."""
        return self._store.put_new(_key(transaction.id, "scanned"), b"1", ttl=self._remaining(transaction))

    def settle(self, transaction: LoginTransaction, outcome: Outcome) -> bool:
        """Record the decision once. False when another decision (or a cancel) came first."""
        return self._store.put_new(_key(transaction.id, "outcome"), _outcome_to_json(outcome),
                                   ttl=self._remaining(transaction))

    def outcome(self, transaction: LoginTransaction) -> Outcome | None:
        """The decision, when there is one."""
        raw = self._store.get(_key(transaction.id, "outcome"))
        return None if raw is None else _outcome_from_json(raw)

    def claim(self, transaction: LoginTransaction, outcome: Outcome | None = None) -> Outcome | None:
        """Take an approved outcome for the browser, once: None when not approved or already claimed.

        ``outcome``: the decision as ``load`` read it (an outcome is written once), else read here.
        """
        if outcome is None:
            outcome = self.outcome(transaction)
        if outcome is None or outcome.kind is not OutcomeKind.APPROVED:
            return None
        if not self._store.put_new(_key(transaction.id, "claimed"), b"1", ttl=self._remaining(transaction)):
            return None
        return outcome

    def release_claim(self, transaction: LoginTransaction) -> None:
        """Undo ``claim`` when no code came of it (a store failed while minting): the browser may claim again."""
        self._store.delete(_key(transaction.id, "claimed"))

    def _remaining(self, transaction: LoginTransaction) -> timedelta:  # noqa: ARG002 - one rule for every part
        """How long a transaction's parts live: as long as the transaction itself was given."""
        return self._ttl


def browser_binding(browser_secret: str) -> str:
    """What the transaction stores of the browser's secret: its SHA-256, base64url."""
    return base64.urlsafe_b64encode(hashlib.sha256(browser_secret.encode()).digest()).rstrip(b"=").decode()


def _part_keys(transaction_id: str) -> list[str]:
    """The keys ``_state`` derives the status from, in its argument order."""
    return [_key(transaction_id, "claimed"), _key(transaction_id, "outcome"), _key(transaction_id, "scanned")]


def _state(
    transaction: LoginTransaction, claimed: bytes | None, outcome_raw: bytes | None, scanned: bytes | None,
    *, now: datetime,
) -> TransactionState:
    """Where the transaction stands, from which of its keys exist."""
    outcome = None if outcome_raw is None else _outcome_from_json(outcome_raw)
    if claimed is not None:
        status = TransactionStatus.COMPLETED
    elif outcome is not None:
        status = TransactionStatus(outcome.kind.value)
    elif now >= transaction.expires_at:
        status = TransactionStatus.EXPIRED
    elif scanned is not None:
        status = TransactionStatus.SCANNED
    else:
        status = TransactionStatus.PENDING
    return TransactionState(transaction=transaction, status=status, outcome=outcome)


def _key(transaction_id: str, part: str | None = None) -> str:
    return f"txn:{transaction_id}" if part is None else f"txn:{transaction_id}:{part}"
