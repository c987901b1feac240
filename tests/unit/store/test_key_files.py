"""Key files at rest: sealed under the KEK with their place as associated data, migrated atomically, locked."""

from __future__ import annotations

import logging
import secrets
import stat
import threading
import time
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from idp.store import key_files
from idp.store.key_files import KeyEncryptionKeyError, KeyFileError

if TYPE_CHECKING:
    from pathlib import Path

PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
)
"""A key made for this test run: no key is kept in the repository."""


@pytest.fixture
def kek() -> bytes:
    return secrets.token_bytes(32)


def test_written_with_a_kek_the_file_is_sealed_private_and_reads_back(tmp_path: Path, kek: bytes) -> None:
    written = key_files.write_key_file(tmp_path / "ca.key.pem", PEM, purpose="pki/ca.key", kek=kek)
    assert written == tmp_path / "ca.key.sealed"
    assert not (tmp_path / "ca.key.pem").exists()
    assert b"PRIVATE KEY" not in written.read_bytes()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    opened = key_files.read_key_file(tmp_path / "ca.key.pem", purpose="pki/ca.key", kek=kek)
    assert (opened.data, opened.path, opened.sealed) == (PEM, written, True)


def test_written_without_a_kek_the_file_is_plain_and_private(tmp_path: Path) -> None:
    written = key_files.write_key_file(tmp_path / "pairwise.secret", b"s" * 32, purpose="keys/pairwise.secret",
                                       kek=None)
    assert written == tmp_path / "pairwise.secret"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    opened = key_files.read_key_file(written, purpose="keys/pairwise.secret", kek=None)
    assert (opened.data, opened.sealed) == (b"s" * 32, False)


def test_a_key_file_is_never_replaced_in_either_form(tmp_path: Path, kek: bytes) -> None:
    key_files.write_key_file(tmp_path / "ca.key.pem", PEM, purpose="pki/ca.key", kek=kek)
    with pytest.raises(FileExistsError, match="a key file is never replaced"):
        key_files.write_key_file(tmp_path / "ca.key.pem", b"other", purpose="pki/ca.key", kek=None)


def test_sealed_file_without_a_kek_is_refused_naming_it(tmp_path: Path, kek: bytes) -> None:
    key_files.write_key_file(tmp_path / "ca.key.pem", PEM, purpose="pki/ca.key", kek=kek)
    with pytest.raises(KeyEncryptionKeyError, match=r"ca\.key\.sealed is encrypted: set IDP_KEK or IDP_KEK_FILE"):
        key_files.read_key_file(tmp_path / "ca.key.pem", purpose="pki/ca.key", kek=None)


def test_sealed_file_with_a_wrong_kek_is_refused_naming_it(tmp_path: Path, kek: bytes) -> None:
    key_files.write_key_file(tmp_path / "ca.key.pem", PEM, purpose="pki/ca.key", kek=kek)
    with pytest.raises(KeyEncryptionKeyError, match=r"ca\.key\.sealed does not open with this KEK"):
        key_files.read_key_file(tmp_path / "ca.key.pem", purpose="pki/ca.key", kek=secrets.token_bytes(32))


def test_sealed_file_moved_to_another_keys_place_does_not_open(tmp_path: Path, kek: bytes) -> None:
    key_files.write_key_file(tmp_path / "root.key.pem", PEM, purpose="pki/root.key", kek=kek)
    (tmp_path / "root.key.sealed").rename(tmp_path / "ca.key.sealed")
    with pytest.raises(KeyEncryptionKeyError, match=r"ca\.key\.sealed does not open with this KEK"):
        key_files.read_key_file(tmp_path / "ca.key.pem", purpose="pki/ca.key", kek=kek)


def test_truncated_sealed_file_is_refused(tmp_path: Path, kek: bytes) -> None:
    (tmp_path / "ca.key.sealed").write_bytes(b"short")
    with pytest.raises(KeyEncryptionKeyError, match="does not open with this KEK"):
        key_files.read_key_file(tmp_path / "ca.key.pem", purpose="pki/ca.key", kek=kek)


def test_missing_key_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"ca\.key\.pem cannot be read"):
        key_files.read_key_file(tmp_path / "ca.key.pem", purpose="pki/ca.key", kek=None)


def test_sealing_a_plain_file_replaces_it_and_is_idempotent(tmp_path: Path, kek: bytes) -> None:
    plain = tmp_path / "ca.key.pem"
    key_files.write_new(plain, PEM)
    assert key_files.seal_key_file(plain, purpose="pki/ca.key", kek=kek) == tmp_path / "ca.key.sealed"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ca.key.sealed"]
    assert key_files.read_key_file(plain, purpose="pki/ca.key", kek=kek).data == PEM
    before = (tmp_path / "ca.key.sealed").read_bytes()
    assert key_files.seal_key_file(plain, purpose="pki/ca.key", kek=kek) is None
    assert (tmp_path / "ca.key.sealed").read_bytes() == before


def test_sealing_that_stopped_before_removing_the_plain_file_is_finished_by_a_second_run(
    tmp_path: Path, kek: bytes,
) -> None:
    plain = tmp_path / "ca.key.pem"
    key_files.write_new(plain, PEM)
    key_files.seal_copy(plain, purpose="pki/ca.key", kek=kek)  # the crash: both forms on disk
    assert key_files.read_key_file(plain, purpose="pki/ca.key", kek=kek).sealed  # the sealed form is read
    key_files.seal_key_file(plain, purpose="pki/ca.key", kek=kek)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ca.key.sealed"]


def test_sealing_refuses_a_sealed_form_that_holds_another_key(tmp_path: Path, kek: bytes) -> None:
    plain = tmp_path / "ca.key.pem"
    key_files.write_new(plain, PEM)
    key_files.write_new(tmp_path / "ca.key.sealed", key_files.seal(kek, "pki/ca.key", b"another key"))
    with pytest.raises(KeyFileError, match=r"ca\.key\.sealed and .*ca\.key\.pem hold different keys"):
        key_files.seal_key_file(plain, purpose="pki/ca.key", kek=kek)
    assert plain.read_bytes() == PEM


def test_atomic_replace_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    key_files.replace_file(target, b"one")
    key_files.replace_file(target, b"two")
    assert [path.name for path in tmp_path.iterdir()] == ["manifest.json"]
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_plain_key_files_of_an_instance_are_listed_and_logged(tmp_path: Path, kek: bytes,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    for directory in ("keys", "pki", "tsa"):
        (tmp_path / directory).mkdir()
    key_files.write_new(tmp_path / "pki" / "portal-root.key.pem", PEM)
    key_files.write_new(tmp_path / "pki" / "portal-root.crt.pem", b"certificate")
    key_files.write_new(tmp_path / "keys" / "pairwise.secret", b"s" * 32)
    key_files.write_key_file(tmp_path / "tsa" / "timestamping.key.pem", PEM, purpose="tsa/timestamping.key", kek=kek)
    with caplog.at_level(logging.WARNING, logger="idp.store.key_files"):
        plain = key_files.warn_plain_key_files(tmp_path)
    assert [str(path) for path in plain] == ["keys/pairwise.secret", "pki/portal-root.key.pem"]
    assert [record.getMessage().split()[:2] for record in caplog.records] == [
        ["keys.unencrypted", "files=keys/pairwise.secret,pki/portal-root.key.pem"],
    ]


def test_no_warning_when_every_key_is_sealed(tmp_path: Path, kek: bytes, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "pki").mkdir()
    key_files.write_key_file(tmp_path / "pki" / "portal-root.key.pem", PEM, purpose="pki/portal-root.key", kek=kek)
    with caplog.at_level(logging.WARNING, logger="idp.store.key_files"):
        assert key_files.warn_plain_key_files(tmp_path) == []
    assert caplog.records == []


def test_exclusive_lock_makes_a_second_holder_wait(tmp_path: Path) -> None:
    entered = threading.Event()

    def second() -> None:
        with key_files.exclusive_lock(tmp_path):
            entered.set()

    with key_files.exclusive_lock(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        assert not entered.is_set()
    thread.join(timeout=10)
    assert entered.is_set()


def test_failed_atomic_replace_leaves_the_target_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.mkdir()
    (target / "inside").write_bytes(b"kept")
    with pytest.raises(OSError, match=r"Directory not empty|Is a directory"):
        key_files.replace_file(target, b"new")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.json"]
    assert (target / "inside").read_bytes() == b"kept"
