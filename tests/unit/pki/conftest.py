"""The test PKI, declared once and minted per session: J-LIS, a My Number Card, our CAs, an SE vendor.

Its registries are SQL ones on a session SQLite database. Certificates that a test revokes are
minted by that test (``issue_smartphone``, ``fresh_ca``), never the shared ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pki_material import (
    AAGUID,
    NOW,
    TARO,
    YEAR,
    KeyAndCertificate,
    TestPki,
    issue,
    make_authority,
    make_intermediate,
    make_root,
    name,
)

from idp.pki import attributes
from idp.pki.authority import CertificateAuthority
from idp.pki.profiles import (
    ATTESTATION,
    CARD_AUTH,
    CARD_SIGN,
    JLIS_AUTH_CA,
    JLIS_ROOT,
    JLIS_SIGN_CA,
    PORTAL_ROOT,
    SMARTPHONE_AUTH,
    SMARTPHONE_CA,
    SMARTPHONE_SIGN,
    VENDOR_ROOT,
    CertificateProfile,
    KeyAlgorithm,
    attestation_subject,
    build_certificate,
    card_auth_subject,
    card_sign_subject,
    generate_key,
    jlis_name,
)
from idp.store.database import make_engine, make_session_factory, upgrade

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.orm import Session, sessionmaker


@pytest.fixture(scope="session")
def pki_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated SQLite database for the session's registries."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('pki') / 'pki.sqlite3'}")
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def pki(pki_sessions: sessionmaker[Session]) -> TestPki:
    """The session's PKI."""
    jlis_root = make_authority(
        pki_sessions, name_=JLIS_ROOT.name,
        issuer=make_root(JLIS_ROOT, jlis_name("JPKI Root Certification Authority")),
        profiles=frozenset({JLIS_AUTH_CA.name, JLIS_SIGN_CA.name}),
    )
    jlis_auth_ca = make_intermediate(
        jlis_root, pki_sessions, profile=JLIS_AUTH_CA, subject=jlis_name("JPKI for user authentication"),
        issues=frozenset({CARD_AUTH.name}),
    )
    jlis_sign_ca = make_intermediate(
        jlis_root, pki_sessions, profile=JLIS_SIGN_CA, subject=jlis_name("JPKI for digital signature"),
        issues=frozenset({CARD_SIGN.name}),
    )
    card_auth = issue(jlis_auth_ca, CARD_AUTH, subject=card_auth_subject("A0001"), lifetime=5 * YEAR)
    card_sign = issue(
        jlis_sign_ca, CARD_SIGN, subject=card_sign_subject("S0001", prefecture="東京都", city="千代田区"),
        lifetime=5 * YEAR, alternative_names=attributes.encode(TARO),
    )
    portal_root = make_authority(
        pki_sessions, name_=PORTAL_ROOT.name, issuer=make_root(PORTAL_ROOT, name("Portal Root")),
        profiles=frozenset({SMARTPHONE_CA.name}),
    )
    smartphone_ca = make_intermediate(
        portal_root, pki_sessions, profile=SMARTPHONE_CA, subject=name("Smartphone CA"),
        issues=frozenset({SMARTPHONE_AUTH.name, SMARTPHONE_SIGN.name}),
    )
    sources = (card_auth.ref, card_sign.ref)
    smartphone_auth = issue(smartphone_ca, SMARTPHONE_AUTH, issued_from=sources)
    smartphone_sign = issue(
        smartphone_ca, SMARTPHONE_SIGN, issued_from=sources, alternative_names=attributes.encode(TARO),
    )
    vendor_root = make_root(VENDOR_ROOT, name("SE Vendor Attestation Root"))
    attestation_key = generate_key(KeyAlgorithm.EC_P256)
    attestation = build_certificate(
        profile=ATTESTATION,
        subject=attestation_subject(vendor="SE Vendor", model="Secure Element 1"),
        public_key=attestation_key.public_key(),
        issuer=vendor_root,
        not_before=NOW - YEAR,
        not_after=NOW + 5 * YEAR,
        aaguid=AAGUID,
    )
    return TestPki(
        sessions=pki_sessions,
        jlis_root=jlis_root,
        jlis_auth_ca=jlis_auth_ca,
        jlis_sign_ca=jlis_sign_ca,
        card_auth=card_auth,
        card_sign=card_sign,
        portal_root=portal_root,
        smartphone_ca=smartphone_ca,
        smartphone_auth=smartphone_auth,
        smartphone_sign=smartphone_sign,
        vendor_root=vendor_root,
        attestation=KeyAndCertificate(key=attestation_key, certificate=attestation),
    )


@pytest.fixture
def issue_smartphone(pki: TestPki) -> Callable[..., KeyAndCertificate]:
    """Mint a new smartphone certificate (auth by default) for a test that changes its state."""

    def mint(profile: CertificateProfile = SMARTPHONE_AUTH, **kwargs: object) -> KeyAndCertificate:
        if profile is SMARTPHONE_SIGN:
            kwargs.setdefault("alternative_names", attributes.encode(TARO))
        kwargs.setdefault("issued_from", (pki.card_auth.ref, pki.card_sign.ref))
        return issue(pki.smartphone_ca, profile, **kwargs)  # type: ignore[arg-type]

    return mint


@pytest.fixture
def fresh_ca(pki: TestPki) -> CertificateAuthority:
    """A smartphone CA of its own, whose registry no other test touches (exact CRL contents)."""
    return make_intermediate(
        pki.portal_root, pki.sessions, profile=SMARTPHONE_CA, subject=name("Fresh Smartphone CA"),
        issues=frozenset({SMARTPHONE_AUTH.name, SMARTPHONE_SIGN.name}),
    )
