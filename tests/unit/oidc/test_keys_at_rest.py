"""Token-signing keys at rest: sealed from the first, migrated by `idp keys encrypt`, rotated
under a lock, and pruned once retired (their public key kept for old assertions)."""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.clock import FixedClock
from idp.oidc.keys import (
    RELOAD_INTERVAL,
    KeyEncryptionKeyError,
    KeyStore,
    RotationRefused,
    SigningKeysMissing,
    init_signing_keys,
    managed_keys,
    open_at_start_up,
    rotate_signing_key,
    seal_signing_keys,
)
from idp.store import key_files

if TYPE_CHECKING:
    from pathlib import Path

OVERLAP = timedelta(hours=24)
ID_TOKEN_LIFETIME = timedelta(minutes=10)
START = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_kek_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDP_KEK", raising=False)
    monkeypatch.delenv("IDP_KEK_FILE", raising=False)


@pytest.fixture
def kek() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


def store(instance: Path, clock: FixedClock, kek: bytes | None = None) -> KeyStore:
    return KeyStore(instance, clock=clock, retire_after=ID_TOKEN_LIFETIME, kek=kek)


def rotate(instance: Path, clock: FixedClock, kek: bytes | None = None, alg: str = "ES256",
           retire_after: timedelta | None = ID_TOKEN_LIFETIME) -> str:
    return rotate_signing_key(instance, alg=alg, now=clock.now(), overlap=OVERLAP, kek=kek,
                              retire_after=retire_after).kid


def files(instance: Path) -> list[str]:
    return sorted(path.name for path in (instance / "keys").iterdir())


def snapshot(instance: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (instance / "keys").iterdir()}


def signed_by(keys: KeyStore, clock: FixedClock) -> str:
    key = keys.signing_key("ES256")
    now = int(clock.now().timestamp())
    return jwt.encode({"alg": "ES256", "kid": key.kid}, {"iss": "https://idp.example", "iat": now}, key.key)


# --- idp init with a KEK ----------------------------------------------------------------------


def test_init_with_a_kek_seals_every_key_and_none_reads_as_pem(tmp_path: Path, clock: FixedClock, kek: bytes) -> None:
    assert init_signing_keys(tmp_path, kek=kek)
    names = files(tmp_path)
    assert [name for name in names if not name.endswith(".sealed")] == ["manifest.json"]
    assert len(names) == 4  # ES256, RS256, the pairwise secret, the manifest
    for name in names:
        if name.endswith(".sealed"):
            data = (tmp_path / "keys" / name).read_bytes()
            assert b"PRIVATE KEY" not in data
            with pytest.raises(ValueError, match="Unable to load PEM file"):
                serialization.load_pem_private_key(data, password=None)
    keys = store(tmp_path, clock, kek)
    assert {key.alg for key in managed_keys(tmp_path)} == {"ES256", "RS256"}
    assert all(key.encrypted for key in managed_keys(tmp_path))
    assert len(keys.pairwise_secret) == 32
    assert KeySet.import_key_set(keys.jwks())  # type: ignore[arg-type]


def test_init_with_a_kek_is_idempotent(tmp_path: Path, kek: bytes) -> None:
    init_signing_keys(tmp_path, kek=kek)
    before = snapshot(tmp_path)
    assert not init_signing_keys(tmp_path, kek=kek)
    assert not init_signing_keys(tmp_path)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("wrong", "reason"), [
    (None, r"\.sealed is encrypted: set IDP_KEK or IDP_KEK_FILE"),
    (b"w" * 32, r"\.sealed does not open with this KEK"),
])
def test_keys_sealed_at_init_do_not_load_without_their_kek(
    tmp_path: Path, clock: FixedClock, kek: bytes, wrong: bytes | None, reason: str,
) -> None:
    init_signing_keys(tmp_path, kek=kek)
    with pytest.raises(KeyEncryptionKeyError, match=reason):
        store(tmp_path, clock, wrong)


def test_sealed_pairwise_secret_swapped_with_a_signing_key_does_not_open(
    tmp_path: Path, clock: FixedClock, kek: bytes,
) -> None:
    init_signing_keys(tmp_path, kek=kek)
    directory = tmp_path / "keys"
    es256 = next(key for key in managed_keys(tmp_path) if key.alg == "ES256")
    (directory / "pairwise.secret.sealed").write_bytes((directory / es256.file).read_bytes())
    with pytest.raises(KeyEncryptionKeyError, match=r"pairwise\.secret\.sealed does not open"):
        store(tmp_path, clock, kek)


def test_init_with_a_kek_completes_an_older_instance_without_rewriting_its_keys(
    tmp_path: Path, clock: FixedClock, kek: bytes,
) -> None:
    init_signing_keys(tmp_path)
    (tmp_path / "keys" / "rs256.key.pem").unlink()
    es256 = (tmp_path / "keys" / "es256.key.pem").read_bytes()
    assert init_signing_keys(tmp_path, kek=kek)
    assert (tmp_path / "keys" / "es256.key.pem").read_bytes() == es256
    assert [(key.alg, key.encrypted) for key in managed_keys(tmp_path)] == [("ES256", False), ("RS256", True)]
    assert store(tmp_path, clock, kek).signing_key("RS256").alg == "RS256"


# --- idp keys encrypt: the migration ----------------------------------------------------------


def test_sealing_a_plain_instance_keeps_every_key_and_leaves_no_plain_file(
    tmp_path: Path, clock: FixedClock, kek: bytes,
) -> None:
    init_signing_keys(tmp_path)
    before = store(tmp_path, clock)
    kids = {alg: before.signing_key(alg).kid for alg in ("ES256", "RS256")}
    sealed = seal_signing_keys(tmp_path, kek=kek)
    assert sorted(sealed) == ["keys/es256.key.pem", "keys/pairwise.secret", "keys/rs256.key.pem"]
    assert files(tmp_path) == ["es256.key.sealed", "manifest.json", "pairwise.secret.sealed", "rs256.key.sealed"]
    after = store(tmp_path, clock, kek)
    assert {alg: after.signing_key(alg).kid for alg in ("ES256", "RS256")} == kids
    assert after.pairwise_secret == before.pairwise_secret
    assert after.jwks() == before.jwks()


def test_sealing_twice_changes_nothing(tmp_path: Path, kek: bytes) -> None:
    init_signing_keys(tmp_path)
    seal_signing_keys(tmp_path, kek=kek)
    before = snapshot(tmp_path)
    assert seal_signing_keys(tmp_path, kek=kek) == []
    assert snapshot(tmp_path) == before


def test_sealing_a_rotated_instance_seals_only_its_plain_keys(tmp_path: Path, clock: FixedClock, kek: bytes) -> None:
    init_signing_keys(tmp_path)
    plain = rotate(tmp_path, clock)
    clock.advance(OVERLAP)
    already = rotate(tmp_path, clock, kek=kek)
    sealed_before = (tmp_path / "keys" / f"es256-{already}.key.sealed").read_bytes()
    seal_signing_keys(tmp_path, kek=kek)
    assert (tmp_path / "keys" / f"es256-{already}.key.sealed").read_bytes() == sealed_before
    assert f"es256-{plain}.key.sealed" in files(tmp_path)
    assert not [name for name in files(tmp_path) if name.endswith(".pem")]
    assert {key.kid for key in managed_keys(tmp_path)} >= {plain, already}
    assert all(key.encrypted for key in managed_keys(tmp_path))


def test_sealing_that_stopped_before_the_manifest_is_finished_by_a_second_run(
    tmp_path: Path, clock: FixedClock, kek: bytes,
) -> None:
    init_signing_keys(tmp_path)
    kids = {key.file: key.kid for key in managed_keys(tmp_path)}
    for name, kid in kids.items():  # the first run wrote the sealed files, then stopped
        key_files.seal_copy(tmp_path / "keys" / name, purpose=kid, kek=kek)
    seal_signing_keys(tmp_path, kek=kek)
    assert not [name for name in files(tmp_path) if name.endswith(".pem") or name == "pairwise.secret"]
    assert store(tmp_path, clock, kek).signing_key("ES256").kid == kids["es256.key.pem"]


def test_sealing_that_stopped_before_removing_the_plain_files_is_finished_by_a_second_run(
    tmp_path: Path, clock: FixedClock, kek: bytes,
) -> None:
    init_signing_keys(tmp_path)
    plain = snapshot(tmp_path)
    seal_signing_keys(tmp_path, kek=kek)
    for name in ("es256.key.pem", "rs256.key.pem"):  # the plain files the first run did not remove
        key_files.write_new(tmp_path / "keys" / name, plain[name])
    assert seal_signing_keys(tmp_path, kek=kek) == []
    assert files(tmp_path) == ["es256.key.sealed", "manifest.json", "pairwise.secret.sealed", "rs256.key.sealed"]
    assert store(tmp_path, clock, kek).signing_key("RS256")


def test_sealing_with_another_kek_than_the_sealed_keys_is_refused_and_writes_nothing(
    tmp_path: Path, clock: FixedClock, kek: bytes,
) -> None:
    init_signing_keys(tmp_path)
    sealed = rotate(tmp_path, clock, kek=kek)
    before = snapshot(tmp_path)
    with pytest.raises(KeyEncryptionKeyError, match=f"es256-{sealed}.key.sealed does not open with this KEK"):
        seal_signing_keys(tmp_path, kek=secrets.token_bytes(32))
    assert snapshot(tmp_path) == before


# --- rotation: one KEK, one rotation at a time --------------------------------------------------


@pytest.mark.parametrize(("rotating_kek", "reason"), [
    (None, r"\.sealed is encrypted: set IDP_KEK or IDP_KEK_FILE"),
    (b"w" * 32, r"\.sealed does not open with this KEK"),
])
def test_rotation_with_a_kek_that_does_not_open_the_instance_is_refused_and_writes_nothing(
    tmp_path: Path, clock: FixedClock, kek: bytes, rotating_kek: bytes | None, reason: str,
) -> None:
    init_signing_keys(tmp_path, kek=kek)
    before = snapshot(tmp_path)
    with pytest.raises(KeyEncryptionKeyError, match=reason):
        rotate(tmp_path, clock, kek=rotating_kek)
    assert snapshot(tmp_path) == before


ROTATE = """
import sys
from datetime import timedelta
from pathlib import Path
from idp.clock import SystemClock
from idp.oidc.keys import RotationRefused, rotate_signing_key
try:
    added = rotate_signing_key(Path(sys.argv[1]), alg=sys.argv[2], now=SystemClock().now(),
                               overlap=timedelta(hours=24), kek=None)
except RotationRefused:
    print("refused")
else:
    print("added", added.kid)
"""


def test_concurrent_rotations_serialize_and_leave_a_consistent_manifest(tmp_path: Path) -> None:
    init_signing_keys(tmp_path)
    with key_files.exclusive_lock(tmp_path / "keys"):  # every rotation starts while another holds the lock
        workers = [
            subprocess.Popen([sys.executable, "-c", ROTATE, str(tmp_path), alg], stdout=subprocess.PIPE, text=True)
            for alg in ("ES256", "ES256", "RS256", "RS256")
        ]
        time.sleep(3)
        assert [worker.poll() for worker in workers] == [None] * 4  # all waiting for the lock
    outcomes = [worker.communicate(timeout=60)[0].split() for worker in workers]
    assert sorted(outcome[0] for outcome in outcomes) == ["added", "added", "refused", "refused"]
    added = {outcome[1] for outcome in outcomes if outcome[0] == "added"}
    entries = managed_keys(tmp_path)
    assert len(entries) == 4
    assert {key.kid for key in entries if key.file.endswith(f"{key.kid}.key.pem")} == added
    assert sorted(key.alg for key in entries if key.kid in added) == ["ES256", "RS256"]
    assert len([name for name in files(tmp_path) if name.endswith(".key.pem")]) == 4  # no orphan key file
    assert KeyStore(tmp_path).verification_jwks()


# --- pruning retired keys -------------------------------------------------------------------------


def test_rotation_prunes_a_retired_key_keeping_its_public_key_for_old_assertions(
    tmp_path: Path, clock: FixedClock, kek: bytes,
) -> None:
    init_signing_keys(tmp_path, kek=kek)
    keys = store(tmp_path, clock, kek)
    first = keys.signing_key("ES256").kid
    assertion = signed_by(keys, clock)  # signed-document assertions do not expire
    first_file = next(key.file for key in managed_keys(tmp_path) if key.kid == first)
    second = rotate(tmp_path, clock, kek=kek)
    clock.advance(OVERLAP + ID_TOKEN_LIFETIME)  # the first key's last ID tokens have expired
    third = rotate(tmp_path, clock, kek=kek)
    assert first not in {key.kid for key in managed_keys(tmp_path)}
    assert not (tmp_path / "keys" / first_file).exists()
    pruned = json.loads((tmp_path / "keys" / "manifest.json").read_text())["pruned"]
    assert [(entry["kid"], "d" in entry["jwk"]) for entry in pruned] == [(first, False)]
    clock.advance(RELOAD_INTERVAL)
    assert [key["kid"] for key in keys.jwks()["keys"] if key["alg"] == "ES256"] == [second, third]
    verification = keys.verification_jwks()
    assert first in {key["kid"] for key in verification["keys"]}
    decoded = jwt.decode(assertion, KeySet.import_key_set(verification), algorithms=["ES256"])  # type: ignore[arg-type]
    assert decoded.header["kid"] == first
    assert store(tmp_path, clock, kek).signing_key("ES256").kid == second


def test_rotation_keeps_a_previous_key_whose_tokens_may_still_be_valid(tmp_path: Path, clock: FixedClock) -> None:
    init_signing_keys(tmp_path)
    first = store(tmp_path, clock).signing_key("ES256").kid
    rotate(tmp_path, clock)
    clock.advance(OVERLAP + ID_TOKEN_LIFETIME - timedelta(seconds=1))
    rotate(tmp_path, clock)
    assert first in {key.kid for key in managed_keys(tmp_path)}
    assert "es256.key.pem" in files(tmp_path)


def test_rotation_without_a_retirement_time_prunes_nothing(tmp_path: Path, clock: FixedClock) -> None:
    init_signing_keys(tmp_path)
    rotate(tmp_path, clock, retire_after=None)
    clock.advance(OVERLAP * 3)
    rotate(tmp_path, clock, retire_after=None)
    assert "es256.key.pem" in files(tmp_path)


def test_pruned_entry_holding_a_private_key_is_refused(tmp_path: Path, clock: FixedClock) -> None:
    init_signing_keys(tmp_path)
    private = store(tmp_path, clock).signing_key("ES256")
    rotate(tmp_path, clock)
    clock.advance(OVERLAP + ID_TOKEN_LIFETIME)
    rotate(tmp_path, clock)
    path = tmp_path / "keys" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["pruned"][0]["jwk"] = dict(private.key.as_dict(private=True))
    path.write_text(json.dumps(manifest))
    with pytest.raises(SigningKeysMissing, match=f"pruned key {private.kid} holds a private part"):
        store(tmp_path, clock)


def test_a_running_store_follows_a_rotation_that_pruned_a_key_it_had_loaded(
    tmp_path: Path, clock: FixedClock,
) -> None:
    init_signing_keys(tmp_path)
    keys = store(tmp_path, clock)
    rotate(tmp_path, clock)
    clock.advance(OVERLAP + ID_TOKEN_LIFETIME)
    third = rotate(tmp_path, clock)
    clock.advance(OVERLAP + RELOAD_INTERVAL)
    assert keys.signing_key("ES256").kid == third


def test_rotation_refused_while_a_key_is_next_prunes_nothing(tmp_path: Path, clock: FixedClock) -> None:
    init_signing_keys(tmp_path)
    rotate(tmp_path, clock)
    clock.advance(OVERLAP + ID_TOKEN_LIFETIME)
    rotate(tmp_path, clock, alg="RS256")
    before = snapshot(tmp_path)
    with pytest.raises(RotationRefused, match="is still next"):
        rotate(tmp_path, clock, alg="RS256")
    assert snapshot(tmp_path) == before


# --- start-up -------------------------------------------------------------------------------------


def test_start_up_fails_on_a_wrong_kek_naming_the_file(tmp_path: Path, clock: FixedClock, kek: bytes) -> None:
    init_signing_keys(tmp_path, kek=kek)
    with pytest.raises(KeyEncryptionKeyError, match=r"keys/pairwise\.secret\.sealed does not open with this KEK"):
        open_at_start_up(tmp_path, lambda: store(tmp_path, clock, b"w" * 32))


def test_start_up_without_token_keys_goes_on_and_warns_of_plain_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "pki").mkdir()
    key_files.write_new(tmp_path / "pki" / "portal-root.key.pem", b"plain")
    with caplog.at_level(logging.WARNING):
        open_at_start_up(tmp_path, lambda: KeyStore(tmp_path))
    assert [record.getMessage().split()[:2] for record in caplog.records] == [
        ["keys.unencrypted", "files=pki/portal-root.key.pem"],
    ]


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("alg", "HS256", "unknown algorithm 'HS256'"),
    ("kid", "not-the-thumbprint", "pruned key not-the-thumbprint is not the key of its JWK"),
])
def test_tampered_pruned_entry_is_refused(
    tmp_path: Path, clock: FixedClock, field: str, value: str, reason: str,
) -> None:
    init_signing_keys(tmp_path)
    rotate(tmp_path, clock)
    clock.advance(OVERLAP + ID_TOKEN_LIFETIME)
    rotate(tmp_path, clock)
    path = tmp_path / "keys" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["pruned"][0][field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(SigningKeysMissing, match=reason):
        store(tmp_path, clock)


def test_a_store_loading_while_a_rotation_prunes_reads_the_new_manifest(
    tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import idp.oidc.keys as module  # noqa: PLC0415

    init_signing_keys(tmp_path)
    rotate(tmp_path, clock)
    clock.advance(OVERLAP + ID_TOKEN_LIFETIME)
    read = module._read_manifest
    raced: list[str] = []

    def read_then_rotate(directory: Path) -> object:
        manifest = read(directory)
        if not raced:  # the rotation lands between reading the manifest and opening its files
            raced.append("rotating")
            raced[0] = rotate(tmp_path, clock)
        return manifest

    monkeypatch.setattr(module, "_read_manifest", read_then_rotate)
    keys = store(tmp_path, clock)
    assert [key["kid"] for key in keys.jwks()["keys"] if key["alg"] == "ES256"][-1] == raced[0]
    assert "es256.key.pem" not in files(tmp_path)


def test_rotation_of_an_instance_without_keys_says_run_init(tmp_path: Path, clock: FixedClock) -> None:
    with pytest.raises(SigningKeysMissing, match="holds no usable signing keys: run `idp init`"):
        rotate(tmp_path, clock)


def test_sealing_an_instance_without_keys_seals_nothing(tmp_path: Path, kek: bytes) -> None:
    assert seal_signing_keys(tmp_path, kek=kek) == []


def test_sealing_refuses_a_sealed_file_that_holds_another_key_and_keeps_the_plain_one(
    tmp_path: Path, kek: bytes,
) -> None:
    init_signing_keys(tmp_path)
    es256 = next(key for key in managed_keys(tmp_path) if key.alg == "ES256")
    key_files.write_new(tmp_path / "keys" / "es256.key.sealed", key_files.seal(kek, es256.kid, b"another key"))
    with pytest.raises(SigningKeysMissing, match=r"es256\.key\.sealed and .*es256\.key\.pem hold different keys"):
        seal_signing_keys(tmp_path, kek=kek)
    assert not (tmp_path / "keys" / "manifest.json").exists()
    assert "es256.key.pem" in files(tmp_path)
