"""Private key files at rest, sealed under the key-encryption key (AES-256-GCM, NIST SP 800-38D).

Every private key the portal keeps in its instance directory is one file, mode 0600: the
token-signing keys and the pairwise secret in ``keys/``, the CA keys in ``pki/``, the
timestamping unit's key in ``tsa/``. With a key-encryption key (KEK) in the environment,
``IDP_KEK`` (base64 of 32 bytes) or ``IDP_KEK_FILE`` (a file holding that base64), a key file is
*sealed*: a 12-byte random nonce, then the AES-256-GCM ciphertext and tag of the plain file, with
the file's *purpose* as associated data (its place in the instance, ``pki/portal-root.key``, or
for a token-signing key its key id), so a sealed file moved or copied to another key's place does
not open. Without a KEK a key file is plain (PKCS#8 PEM, or the raw pairwise secret) and only its
mode protects it.

A key's two forms have two names, ``<stem>.pem`` plain and ``<stem>.sealed`` sealed (a plain name
without ``.pem`` gets ``.sealed`` appended: ``pairwise.secret.sealed``), so a loader knows which
form it holds without guessing from the bytes. ``seal_key_file`` turns a plain file into its
sealed form: the sealed file is written under a temporary name, fsynced and renamed into place,
checked to open, and only then is the plain file removed; a crash leaves a complete form, and a
second run finishes the job. While both forms exist the sealed one is read.

``exclusive_lock`` serializes the writers of one directory (``idp keys rotate``,
``idp keys encrypt``) with an exclusive ``flock`` on the directory itself.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import logging
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "KEK_BYTES",
    "KeyEncryptionKeyError",
    "KeyFile",
    "KeyFileError",
    "exclusive_lock",
    "kek_from_environment",
    "key_file_exists",
    "plain_key_files",
    "read_key_file",
    "remove_file",
    "replace_file",
    "seal",
    "seal_copy",
    "seal_key_file",
    "sealed_name",
    "unseal",
    "warn_plain_key_files",
    "write_key_file",
    "write_new",
]

log = logging.getLogger(__name__)

KEK_BYTES = 32
"""AES-256: the key-encryption key is 32 random bytes."""
NONCE_BYTES = 12
"""The GCM nonce (NIST SP 800-38D §8.2.2: 96 random bits, fresh for every file sealed)."""
SEALED_SUFFIX = ".sealed"
PLAIN_SUFFIX = ".pem"
_PLAIN_KEY_PATTERNS = ("keys/*.key.pem", "keys/pairwise.secret", "pki/*.key.pem", "tsa/*.key.pem")
"""Where an instance keeps private keys in plain form (``idp init``, ``idp keys rotate``)."""


class KeyFileError(RuntimeError):
    """A key file cannot be read or written: missing, unreadable, or its two forms disagree."""


class KeyEncryptionKeyError(KeyFileError):
    """The KEK is malformed, missing for a sealed key file, or not the one that sealed it."""


@dataclass(frozen=True, slots=True)
class KeyFile:
    """A key file as read: where it is, its plain bytes, and whether it was sealed."""

    path: Path
    data: bytes = field(repr=False)
    sealed: bool


def kek_from_environment(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key-encryption key from ``IDP_KEK`` or ``IDP_KEK_FILE``; None when neither is set.

    Raises KeyEncryptionKeyError when both are set, the file is unreadable, or the value is not
    the base64 of exactly 32 bytes: a KEK that is silently ignored would leave keys unsealed.
    """
    env = os.environ if environ is None else environ
    inline, path = env.get("IDP_KEK", ""), env.get("IDP_KEK_FILE", "")
    if inline and path:
        raise KeyEncryptionKeyError("set IDP_KEK or IDP_KEK_FILE, not both")
    if path:
        try:
            inline = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyEncryptionKeyError(f"IDP_KEK_FILE {path} cannot be read: {exc}") from exc
    if not inline:
        return None
    try:
        kek = base64.b64decode(inline.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyEncryptionKeyError("the KEK (IDP_KEK / IDP_KEK_FILE) is not valid base64") from exc
    if len(kek) != KEK_BYTES:
        raise KeyEncryptionKeyError(f"the KEK (IDP_KEK / IDP_KEK_FILE) must be {KEK_BYTES} bytes, not {len(kek)}")
    return kek


def sealed_name(plain_name: str) -> str:
    """The name of a key file's sealed form: ``a.key.pem`` → ``a.key.sealed``, ``x`` → ``x.sealed``."""
    return plain_name.removesuffix(PLAIN_SUFFIX) + SEALED_SUFFIX


def seal(kek: bytes, purpose: str, data: bytes) -> bytes:
    """AES-256-GCM over ``data`` with ``purpose`` as associated data: nonce || ciphertext || tag."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, data, purpose.encode("utf-8"))


def unseal(kek: bytes | None, purpose: str, sealed: bytes, *, path: Path) -> bytes:
    """Open a sealed key file's bytes; raises KeyEncryptionKeyError naming ``path`` when there is
    no KEK, or the KEK or the purpose is not the one it was sealed with."""
    if kek is None:
        raise KeyEncryptionKeyError(f"{path} is encrypted: set IDP_KEK or IDP_KEK_FILE to the key-encryption key")
    try:
        return AESGCM(kek).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], purpose.encode("utf-8"))
    except (InvalidTag, ValueError) as exc:
        raise KeyEncryptionKeyError(
            f"{path} does not open with this KEK (IDP_KEK / IDP_KEK_FILE): a wrong key, "
            "or a file moved from another key's place",
        ) from exc


def key_file_exists(plain: Path) -> bool:
    """Whether the key whose plain form is ``plain`` exists in either form."""
    return plain.exists() or plain.with_name(sealed_name(plain.name)).exists()


def read_key_file(plain: Path, *, purpose: str, kek: bytes | None) -> KeyFile:
    """Read the key whose plain form is ``plain``: its sealed form when present, else the plain one.

    Raises KeyEncryptionKeyError (naming the file) when it is sealed and does not open with
    ``kek``, KeyFileError when neither form can be read.
    """
    sealed = plain.with_name(sealed_name(plain.name))
    if sealed.exists():
        return KeyFile(sealed, unseal(kek, purpose, _read(sealed), path=sealed), sealed=True)
    return KeyFile(plain, _read(plain), sealed=False)


def write_key_file(plain: Path, data: bytes, *, purpose: str, kek: bytes | None) -> Path:
    """Create a key file, sealed under ``kek`` when given, else plain at ``plain``; mode 0600.

    Never replaces a key: raises FileExistsError when either form exists. Returns the path written.
    """
    if key_file_exists(plain):
        raise FileExistsError(f"{plain} exists (plain or sealed); a key file is never replaced")
    if kek is None:
        write_new(plain, data)
        return plain
    path = plain.with_name(sealed_name(plain.name))
    write_new(path, seal(kek, purpose, data))
    return path


def seal_copy(plain: Path, *, purpose: str, kek: bytes, sealed: Path | None = None) -> Path:
    """Write the sealed form of the plain key file ``plain`` beside it, atomically; keep ``plain``.

    ``sealed`` defaults to ``sealed_name(plain)``. When the sealed form exists already (an
    earlier run stopped half-way) it is kept if it opens with ``kek`` to the same bytes; else
    KeyFileError (or KeyEncryptionKeyError), and nothing is written.
    """
    target = sealed if sealed is not None else plain.with_name(sealed_name(plain.name))
    data = _read(plain)
    if target.exists():
        if unseal(kek, purpose, _read(target), path=target) != data:
            raise KeyFileError(f"{target} and {plain} hold different keys: restore one from the backup")
        return target
    replace_file(target, seal(kek, purpose, data))
    if unseal(kek, purpose, _read(target), path=target) != data:  # pragma: no cover - AES-GCM round trip
        raise KeyFileError(f"{target} does not read back as {plain}")
    return target


def seal_key_file(plain: Path, *, purpose: str, kek: bytes) -> Path | None:
    """Turn the plain key file ``plain`` into its sealed form (``seal_copy``, then remove
    ``plain``); idempotent. Returns the sealed path, or None when there was no plain form."""
    if not plain.exists():
        return None
    target = seal_copy(plain, purpose=purpose, kek=kek)
    remove_file(plain)
    return target


def plain_key_files(instance: Path) -> list[Path]:
    """The instance's private key files that are not sealed, relative to it, sorted."""
    return sorted(path.relative_to(instance) for pattern in _PLAIN_KEY_PATTERNS for path in instance.glob(pattern))


def warn_plain_key_files(instance: Path) -> list[Path]:
    """Log ``keys.unencrypted`` (warning) naming the instance's plain key files, if any; return them."""
    plain = plain_key_files(instance)
    if plain:
        log.warning("keys.unencrypted files=%s hint=%s", ",".join(str(path) for path in plain),
                    "set IDP_KEK or IDP_KEK_FILE and run `idp keys encrypt`")
    return plain


@contextmanager
def exclusive_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (which must exist) until the block ends.

    Every writer of the directory takes it, so two ``idp keys`` commands, in two processes or
    two threads, run one after the other. It binds processes on one host (or a file system with
    working ``flock``), not hosts sharing a volume without it.
    """
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the last descriptor releases the lock


def write_new(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Create ``path`` with ``mode`` and fsync it; an existing file is never replaced (FileExistsError)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    path.chmod(mode)


def replace_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``path`` atomically: a new file beside it, fsynced, renamed over it; then the directory fsynced."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        write_new(temporary, data, mode=mode)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def remove_file(path: Path) -> None:
    """Remove ``path`` if it is there, and fsync its directory."""
    path.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be read: {exc}") from exc


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
