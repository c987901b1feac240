"""The portal's CA and timestamping keys at rest: sealed under the KEK with their place as
associated data, checked against their certificates, sealed later by `seal_pki_keys`."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization

from idp.clock import FixedClock
from idp.pki.service import PkiSetupError, PortalPki, init_pki, open_pki_keys, seal_pki_keys
from idp.settings import Settings
from idp.store import key_files
from idp.store.database import make_engine, make_session_factory
from idp.store.key_files import KeyEncryptionKeyError

if TYPE_CHECKING:
    from pathlib import Path

ISSUER = "http://127.0.0.1:8000"
NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
KEYS = ("pki/portal-root.key", "pki/smartphone-ca.key", "tsa/timestamping.key")


@pytest.fixture
def kek() -> bytes:
    return secrets.token_bytes(32)


def public(holder: Any) -> bytes:
    """The SubjectPublicKeyInfo of a private key or a certificate."""
    der: bytes = holder.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return der


def test_init_with_a_kek_seals_each_key_beside_its_plain_certificate(tmp_path: Path, kek: bytes) -> None:
    assert init_pki(tmp_path, issuer_url=ISSUER, now=NOW, kek=kek)
    for stem in KEYS:
        assert not (tmp_path / f"{stem}.pem").exists()
        assert b"PRIVATE KEY" not in (tmp_path / f"{stem}.sealed").read_bytes()
        assert (tmp_path / f"{stem.removesuffix('.key')}.crt.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    root, ca, timestamping = open_pki_keys(tmp_path, kek=kek)
    for issuer in (root, ca, timestamping):
        assert public(issuer.private_key) == public(issuer.certificate)


def test_init_with_a_kek_twice_opens_the_sealed_keys_and_writes_nothing(tmp_path: Path, kek: bytes) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW, kek=kek)
    before = {stem: (tmp_path / f"{stem}.sealed").read_bytes() for stem in KEYS}
    assert not init_pki(tmp_path, issuer_url=ISSUER, now=NOW, kek=kek)
    assert {stem: (tmp_path / f"{stem}.sealed").read_bytes() for stem in KEYS} == before


def test_init_again_with_another_kek_is_refused_naming_the_file(tmp_path: Path, kek: bytes) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW, kek=kek)
    with pytest.raises(KeyEncryptionKeyError, match=r"pki/portal-root\.key\.sealed does not open with this KEK"):
        init_pki(tmp_path, issuer_url=ISSUER, now=NOW, kek=secrets.token_bytes(32))


def test_sealed_key_of_another_ca_resealed_in_its_place_does_not_fit_the_certificate(
    tmp_path: Path, kek: bytes,
) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW, kek=kek)
    root_pem = key_files.read_key_file(tmp_path / "pki" / "portal-root.key.pem", purpose="pki/portal-root.key",
                                       kek=kek).data
    (tmp_path / "pki" / "smartphone-ca.key.sealed").write_bytes(key_files.seal(kek, "pki/smartphone-ca.key", root_pem))
    with pytest.raises(PkiSetupError, match=r"smartphone-ca\.key\.sealed does not belong to the certificate"):
        open_pki_keys(tmp_path, kek=kek)


def test_sealing_a_plain_instance_keeps_each_key_and_is_idempotent(tmp_path: Path, kek: bytes) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW)
    before = [public(issuer.private_key) for issuer in open_pki_keys(tmp_path, kek=None)]
    assert seal_pki_keys(tmp_path, kek=kek) == [f"{stem}.pem" for stem in KEYS]
    assert not [stem for stem in KEYS if (tmp_path / f"{stem}.pem").exists()]
    assert [public(issuer.private_key) for issuer in open_pki_keys(tmp_path, kek=kek)] == before
    assert seal_pki_keys(tmp_path, kek=kek) == []


def test_portal_pki_reads_the_kek_from_the_environment(
    tmp_path: Path, kek: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW, kek=kek)
    settings = Settings(instance=tmp_path)
    engine = make_engine(settings.effective_database_url)
    try:
        monkeypatch.setenv("IDP_KEK", base64.b64encode(kek).decode())
        monkeypatch.delenv("IDP_KEK_FILE", raising=False)
        portal = PortalPki(settings=settings, sessions=make_session_factory(engine), clock=FixedClock(NOW))
        assert public(portal.timestamping.private_key) == public(portal.timestamping.certificate)
        monkeypatch.delenv("IDP_KEK")
        with pytest.raises(KeyEncryptionKeyError, match=r"portal-root\.key\.sealed is encrypted"):
            PortalPki(settings=settings, sessions=make_session_factory(engine), clock=FixedClock(NOW))
    finally:
        engine.dispose()
