"""Private keys at rest, as an operator meets them: `idp init` with a KEK seals every key, `idp keys
encrypt` seals an older instance, and a missing or wrong KEK stops the portal at start-up, naming
the file."""

from __future__ import annotations

import base64
import dataclasses
import logging
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization

from idp.app import create_app
from idp.cli import main
from idp.clock import SystemClock
from idp.oidc.keys import KeyStore, managed_keys, rotate_signing_key
from idp.pki.service import seal_pki_keys
from idp.settings import Settings
from idp.store.key_files import KeyEncryptionKeyError, kek_from_environment

if TYPE_CHECKING:
    from pathlib import Path

    from flask import Flask

PRIVATE_KEY_PLACES = ("keys", "pki", "tsa")


@pytest.fixture(autouse=True)
def _no_kek_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IDP_KEK", "IDP_KEK_FILE", "IDP_CONFIG", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def kek() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def idp(*args: str, kek: str | None = None) -> Result:
    env = {"IDP_CONFIG": None, "DATABASE_URL": None, "REDIS_URL": None, "IDP_KEK": kek, "IDP_KEK_FILE": None}
    return CliRunner(env=env).invoke(main, list(args))


def key_files_of(instance: Path) -> list[Path]:
    """Every file holding private key material: all but certificates and the manifest and database."""
    return sorted(
        path for place in PRIVATE_KEY_PLACES for path in (instance / place).iterdir()
        if not path.name.endswith(".crt.pem") and path.name != "manifest.json"
    )


def app_of(instance: Path, monkeypatch: pytest.MonkeyPatch, kek: str | None) -> Flask:
    if kek is None:
        monkeypatch.delenv("IDP_KEK", raising=False)
    else:
        monkeypatch.setenv("IDP_KEK", kek)
    return create_app(dataclasses.replace(Settings(), instance=instance))


@pytest.fixture
def sealed_instance(tmp_path: Path, kek: str) -> Path:
    instance = tmp_path / "instance"
    result = idp("init", "--instance", str(instance), kek=kek)
    assert result.exit_code == 0, result.output
    return instance


@pytest.fixture
def plain_instance(tmp_path: Path) -> Path:
    instance = tmp_path / "instance"
    result = idp("init", "--instance", str(instance))
    assert result.exit_code == 0, result.output
    return instance


# --- idp init with a KEK ------------------------------------------------------------------------


def test_init_with_a_kek_seals_every_private_key_it_writes(sealed_instance: Path) -> None:
    written = key_files_of(sealed_instance)
    assert [path.relative_to(sealed_instance).as_posix() for path in written if path.parent.name != "keys"] == [
        "pki/portal-root.key.sealed", "pki/smartphone-ca.key.sealed", "tsa/timestamping.key.sealed",
    ]
    assert len(written) == 6  # and ES256, RS256 and the pairwise secret in keys/
    for path in written:
        assert path.name.endswith(".sealed")
        assert path.stat().st_mode & 0o777 == 0o600
        with pytest.raises(ValueError, match="Unable to load PEM file"):
            serialization.load_pem_private_key(path.read_bytes(), password=None)


def test_keys_sealed_by_init_load_with_the_kek_and_the_portal_is_ready(
    sealed_instance: Path, kek: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = app_of(sealed_instance, monkeypatch, kek)
    response = app.test_client().get("/readyz")
    body = response.json
    assert response.status_code == 200
    assert body is not None
    assert (body["checks"]["signing_keys"], body["checks"]["ca_keys"]) == ({"ok": True}, {"ok": True})


def test_init_with_a_kek_twice_changes_nothing(sealed_instance: Path, kek: str) -> None:
    before = {path: path.read_bytes() for path in key_files_of(sealed_instance)}
    again = idp("init", "--instance", str(sealed_instance), kek=kek)
    assert again.exit_code == 0, again.output
    assert "CAs already present" in again.output
    assert {path: path.read_bytes() for path in key_files_of(sealed_instance)} == before


def test_init_with_a_malformed_kek_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    result = idp("init", "--instance", str(tmp_path / "instance"), kek="c2hvcnQ=")
    assert result.exit_code == 1
    assert "must be 32 bytes, not 5" in result.output
    assert not (tmp_path / "instance").exists()


# --- start-up with a missing or wrong KEK -------------------------------------------------------


@pytest.mark.parametrize(("given", "reason"), [
    (None, r"pki/portal-root\.key\.sealed is encrypted: set IDP_KEK or IDP_KEK_FILE"),
    (base64.b64encode(b"w" * 32).decode(), r"pki/portal-root\.key\.sealed does not open with this KEK"),
])
def test_portal_does_not_start_without_the_right_kek_and_names_the_file(
    sealed_instance: Path, monkeypatch: pytest.MonkeyPatch, given: str | None, reason: str,
) -> None:
    with pytest.raises(KeyEncryptionKeyError, match=reason):
        app_of(sealed_instance, monkeypatch, given)


def test_portal_does_not_start_when_only_a_token_signing_key_is_sealed(
    plain_instance: Path, kek: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    added = rotate_signing_key(plain_instance, alg="ES256", now=SystemClock().now(), overlap=timedelta(hours=2),
                               kek=kek_from_environment({"IDP_KEK": kek}))
    with pytest.raises(KeyEncryptionKeyError, match=rf"keys/es256-{added.kid}\.key\.sealed is encrypted"):
        app_of(plain_instance, monkeypatch, None)  # at start-up, not at the first token


def test_ca_key_files_swapped_do_not_open(sealed_instance: Path, kek: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root, ca = sealed_instance / "pki" / "portal-root.key.sealed", sealed_instance / "pki" / "smartphone-ca.key.sealed"
    root_bytes = root.read_bytes()
    root.write_bytes(ca.read_bytes())
    ca.write_bytes(root_bytes)
    with pytest.raises(KeyEncryptionKeyError, match=r"pki/portal-root\.key\.sealed does not open with this KEK"):
        app_of(sealed_instance, monkeypatch, kek)


def test_serve_with_a_wrong_kek_stops_before_gunicorn_naming_the_file(sealed_instance: Path) -> None:
    result = idp("serve", "--instance", str(sealed_instance), kek=base64.b64encode(b"w" * 32).decode())
    assert result.exit_code == 1
    assert "pki/portal-root.key.sealed does not open with this KEK" in result.output


def test_serve_without_the_kek_stops_naming_the_file(sealed_instance: Path) -> None:
    result = idp("serve", "--instance", str(sealed_instance))
    assert result.exit_code == 1
    assert "pki/portal-root.key.sealed is encrypted: set IDP_KEK or IDP_KEK_FILE" in result.output


def test_plain_instance_starts_and_warns_that_its_keys_are_not_encrypted(
    plain_instance: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="idp.store.key_files"):
        app_of(plain_instance, monkeypatch, None)
    warnings = [record.getMessage() for record in caplog.records if record.getMessage().startswith("keys.unencrypted")]
    assert len(warnings) == 1
    assert "files=keys/es256.key.pem,keys/pairwise.secret,keys/rs256.key.pem,pki/portal-root.key.pem," in warnings[0]


def test_sealed_instance_starts_without_the_warning(
    sealed_instance: Path, kek: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="idp.store.key_files"):
        app_of(sealed_instance, monkeypatch, kek)
    assert not [record for record in caplog.records if record.getMessage().startswith("keys.unencrypted")]


# --- idp keys encrypt -------------------------------------------------------------------------


def test_keys_encrypt_seals_a_plain_instance_which_then_serves_the_same_keys(
    plain_instance: Path, kek: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    before_jwks = KeyStore(plain_instance).jwks()
    root_certificate = (plain_instance / "pki" / "portal-root.crt.pem").read_bytes()
    result = idp("keys", "encrypt", "--instance", str(plain_instance), kek=kek)
    assert result.exit_code == 0, result.output
    sealed = [line.removeprefix("sealed ") for line in result.output.splitlines() if line.startswith("sealed ")]
    assert sorted(sealed) == [
        "keys/es256.key.pem", "keys/pairwise.secret", "keys/rs256.key.pem",
        "pki/portal-root.key.pem", "pki/smartphone-ca.key.pem", "tsa/timestamping.key.pem",
    ]
    assert all(path.name.endswith(".sealed") for path in key_files_of(plain_instance))
    assert all(key.encrypted for key in managed_keys(plain_instance))
    app = app_of(plain_instance, monkeypatch, kek)
    assert app.test_client().get("/readyz").status_code == 200
    assert app.test_client().get("/jwks").json == before_jwks
    assert (plain_instance / "pki" / "portal-root.crt.pem").read_bytes() == root_certificate


def test_keys_encrypt_twice_changes_nothing(plain_instance: Path, kek: str) -> None:
    assert idp("keys", "encrypt", "--instance", str(plain_instance), kek=kek).exit_code == 0
    before = {path: path.read_bytes() for path in key_files_of(plain_instance)}
    again = idp("keys", "encrypt", "--instance", str(plain_instance), kek=kek)
    assert again.exit_code == 0, again.output
    assert "every key is sealed already; nothing to do" in again.output
    assert {path: path.read_bytes() for path in key_files_of(plain_instance)} == before


def test_keys_encrypt_without_a_kek_is_refused(plain_instance: Path) -> None:
    result = idp("keys", "encrypt", "--instance", str(plain_instance))
    assert result.exit_code == 1
    assert "no key-encryption key: set IDP_KEK or IDP_KEK_FILE" in result.output


def test_keys_encrypt_with_another_kek_than_the_instance_is_refused_and_writes_nothing(
    sealed_instance: Path,
) -> None:
    before = {path: path.read_bytes() for path in key_files_of(sealed_instance)}
    result = idp("keys", "encrypt", "--instance", str(sealed_instance), kek=base64.b64encode(b"w" * 32).decode())
    assert result.exit_code == 1
    assert "pki/portal-root.key.sealed does not open with this KEK" in result.output
    assert {path: path.read_bytes() for path in key_files_of(sealed_instance)} == before


def test_keys_encrypt_outside_an_instance_is_refused(tmp_path: Path, kek: str) -> None:
    result = idp("keys", "encrypt", "--instance", str(tmp_path), kek=kek)
    assert result.exit_code == 1
    assert "is not an instance: run `idp init` first" in result.output


def test_init_with_a_kek_on_a_plain_instance_says_which_keys_are_not_sealed(plain_instance: Path, kek: str) -> None:
    result = idp("init", "--instance", str(plain_instance), kek=kek)
    assert result.exit_code == 0, result.output
    assert "6 key files are not sealed (" in result.output
    assert "run `idp keys encrypt`" in result.output
    assert not [path for path in key_files_of(plain_instance) if path.name.endswith(".sealed")]


def test_keys_rotate_with_another_kek_than_the_ca_keys_is_refused_and_writes_nothing(
    plain_instance: Path, kek: str,
) -> None:
    seal_pki_keys(plain_instance, kek=base64.b64decode(kek))
    before = {path: path.read_bytes() for path in key_files_of(plain_instance)}
    result = idp("keys", "rotate", "--instance", str(plain_instance), kek=base64.b64encode(b"w" * 32).decode())
    assert result.exit_code == 1
    assert "pki/portal-root.key.sealed does not open with this KEK" in result.output
    assert {path: path.read_bytes() for path in key_files_of(plain_instance)} == before
    assert not (plain_instance / "keys" / "manifest.json").exists()


def test_keys_rotate_with_the_instance_kek_seals_the_new_key(sealed_instance: Path, kek: str) -> None:
    result = idp("keys", "rotate", "--instance", str(sealed_instance), kek=kek)
    assert result.exit_code == 0, result.output
    assert "(sealed with the KEK)" in result.output
    assert all(key.encrypted for key in managed_keys(sealed_instance))
