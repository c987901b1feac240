"""Liveness and readiness: is the process alive, and can it serve a ceremony right now?

Readiness runs one check per dependency and names each in its answer, so an operator (or a
load balancer's log) sees which part failed: the database and the ephemeral store answer, the
token-signing and CA keys are loaded, and every stored J-LIS CRL is still before its nextUpdate
(a stale CRL means ``idp pki sync-revocations`` stopped running, and enrollments would be
refused). A check reports an error by its type name only: never a URL with a password, a key
path or a stack trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from idp.ceremonies.records import ExternalCrl
from idp.pki.authority import CertificateAuthority
from idp.store.ephemeral import KeyValueStore

__all__ = [
    "Check",
    "CheckResult",
    "CrlState",
    "ca_keys_check",
    "crl_states",
    "database_check",
    "ephemeral_check",
    "jlis_crls_check",
    "readiness",
    "run_checks",
    "signing_keys_check",
]

READINESS_KEY = "ops:readyz"
"""The ephemeral-store key that readiness reads (and never writes) to see that the store answers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One readiness check's outcome; ``detail`` is safe to show to anyone who can reach /readyz."""

    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CrlState:
    """A stored J-LIS CRL, as readiness and the revocation metrics see it."""

    issuer: str
    this_update: datetime
    next_update: datetime
    fetched_at: datetime


Check = Callable[[], CheckResult]


def crl_states(sessions: sessionmaker[Session]) -> list[CrlState]:
    """The stored J-LIS CRLs (one per J-LIS CA), without their DER."""
    query = select(ExternalCrl.issuer_name, ExternalCrl.this_update, ExternalCrl.next_update, ExternalCrl.fetched_at)
    with sessions.begin() as session:
        rows = session.execute(query.order_by(ExternalCrl.issuer_name)).all()
    return [CrlState(issuer=row[0], this_update=row[1], next_update=row[2], fetched_at=row[3]) for row in rows]


def database_check(sessions: sessionmaker[Session]) -> Check:
    """The database answers ``SELECT 1``."""
    def check() -> CheckResult:
        with sessions.begin() as session:
            session.execute(text("SELECT 1"))
        return CheckResult(ok=True)
    return check


def ephemeral_check(store: KeyValueStore) -> Check:
    """The ephemeral store (Redis in production) answers a read."""
    def check() -> CheckResult:
        store.get(READINESS_KEY)
        return CheckResult(ok=True)
    return check


def signing_keys_check(load_keys: Callable[[], object]) -> Check:
    """The token-signing keys and the pairwise secret are loaded (``OidcProvider.keys``)."""
    def check() -> CheckResult:
        load_keys()
        return CheckResult(ok=True)
    return check


def ca_keys_check(authorities: Callable[[], tuple[CertificateAuthority, ...]], *, now: Callable[[], datetime]) -> Check:
    """The portal's CAs have a key and a certificate valid now."""
    def check() -> CheckResult:
        loaded = authorities()
        if not loaded:
            return CheckResult(ok=False, detail="no portal CA loaded")
        moment = now()
        expired = [ca.name for ca in loaded
                   if not ca.certificate.not_valid_before_utc <= moment < ca.certificate.not_valid_after_utc]
        if expired:
            return CheckResult(ok=False, detail=f"CA certificate not valid now: {', '.join(expired)}")
        return CheckResult(ok=True)
    return check


def jlis_crls_check(sessions: sessionmaker[Session], *, configured: bool, now: Callable[[], datetime]) -> Check:
    """Every stored J-LIS CRL is before its nextUpdate, and there is one when J-LIS is configured."""
    def check() -> CheckResult:
        states = crl_states(sessions)
        if not states:
            if configured:
                return CheckResult(ok=False, detail="no J-LIS CRL stored: run `idp pki sync-revocations`")
            return CheckResult(ok=True, detail="no J-LIS CA configured")
        moment = now()
        stale = [state.issuer for state in states if state.next_update <= moment]
        if stale:
            return CheckResult(ok=False, detail=f"past nextUpdate: {'; '.join(stale)}")
        soonest = min(state.next_update for state in states)
        return CheckResult(ok=True, detail=f"{len(states)} CRLs, next update {soonest.isoformat()}")
    return check


def run_checks(checks: dict[str, Check]) -> dict[str, CheckResult]:
    """Run every check; one that raises fails with its exception's type name, the others still run."""
    results = {}
    for name, check in checks.items():
        try:
            results[name] = check()
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure of a dependency as that check failing
            results[name] = CheckResult(ok=False, detail=type(exc).__name__)
    return results


def readiness(checks: dict[str, Check]) -> tuple[bool, dict[str, object]]:
    """Whether every check passed, and the JSON body that names each check's outcome."""
    results = run_checks(checks)
    ready = all(result.ok for result in results.values())
    body: dict[str, object] = {
        "status": "ready" if ready else "not ready",
        "checks": {
            name: {"ok": result.ok, **({"detail": result.detail} if result.detail else {})}
            for name, result in results.items()
        },
    }
    return ready, body
