"""The portal's token-signing keys (RFC 7517 JWK, RFC 7638 key ids), their rotation, and the pairwise secret.

``init_signing_keys`` makes them once, into ``<instance>/keys`` (mode 0600 each): an ES256 key
(P-256), the default for ID tokens, and an RS256 key (RSA-2048, FAPI 2.0 §5.4's minimum) for
clients registered with ``id_token_alg = RS256``; and a 32-byte secret that keys the pairwise
``sub`` HMAC (``idp.oidc.pairwise``).

Rotation without downtime (``rotate_signing_key``, ``idp keys rotate``): each algorithm has a
small key set listed in ``<instance>/keys/manifest.json``, each key with the time it was
published and the time it starts signing (``oidc.key_rotation_overlap`` later). A key's state
follows from those times and the clock, so every worker and host agrees without coordination:
``next`` (in the JWK Set, not signing yet: RPs that cache the set learn it first), ``current``
(the newest key past its start: it signs), ``previous`` (superseded; in the JWK Set until the
tokens it signed have expired) and ``retired`` (gone from the JWK Set). An instance without a
manifest (the single-file layout of ``init_signing_keys``) has one current key per algorithm;
the first rotation writes the manifest around its files.

At rest a private key is plain PKCS#8 PEM (mode 0600) unless a key-encryption key (KEK) is set
in the environment, ``IDP_KEK`` (base64 of 32 bytes) or ``IDP_KEK_FILE`` (a file holding that
base64): then ``idp keys rotate`` seals the PEM with AES-256-GCM under the KEK, with the key id
as associated data, so a sealed file moved to another key's name does not open.

``KeyStore`` re-reads the manifest when it changes (checked at most every ``RELOAD_INTERVAL``
by the provider's clock), so a rotation reaches running workers without a restart. Its JWK Set
holds public parts only, and its repr shows key ids, never key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import ECKey, RSAKey

from idp.clock import SystemClock

if TYPE_CHECKING:
    from collections.abc import Mapping

    from idp.clock import Clock
    from idp.settings import Settings

__all__ = [
    "KeyEncryptionKeyError",
    "KeyState",
    "KeyStatus",
    "KeyStore",
    "ManagedKey",
    "RotationRefused",
    "SigningKey",
    "SigningKeysMissing",
    "init_signing_keys",
    "kek_from_environment",
    "key_statuses",
    "managed_keys",
    "rotate_signing_key",
]

ALGORITHMS = ("ES256", "RS256")
"""The JWS algorithms the portal signs with, default first."""
RSA_KEY_BITS = 2048
PAIRWISE_SECRET_BYTES = 32
KEK_BYTES = 32
"""AES-256: the key-encryption key is 32 random bytes."""
RELOAD_INTERVAL = timedelta(seconds=5)
"""The longest a worker keeps using a manifest it read before looking for a rotation."""
_FILES = {"ES256": "es256.key.pem", "RS256": "rs256.key.pem"}
_PAIRWISE_FILE = "pairwise.secret"
_MANIFEST = "manifest.json"
_NONCE_BYTES = 12
_SINCE_EVER = datetime(1970, 1, 1, tzinfo=UTC)
"""The publication and start time of a key from the single-file layout: it has always signed."""


class SigningKeysMissing(RuntimeError):
    """The instance has no signing keys, or a key file is unreadable: run ``idp init``."""


class KeyEncryptionKeyError(SigningKeysMissing):
    """The key-encryption key is malformed, missing for sealed keys, or not the one that sealed them."""


class RotationRefused(RuntimeError):
    """``idp keys rotate`` cannot add a key now (an unknown algorithm, a next key still pending)."""


class KeyState(StrEnum):
    """Where a key is in its life, by the clock (see the module docstring)."""

    NEXT = "next"
    CURRENT = "current"
    PREVIOUS = "previous"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One private signing key with its algorithm and RFC 7638 thumbprint as ``kid``."""

    alg: str
    kid: str
    key: ECKey | RSAKey = field(repr=False)

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK with ``kid``, ``alg`` and ``use``."""
        data: dict[str, Any] = dict(self.key.as_dict(private=False))
        data.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return data


@dataclass(frozen=True, slots=True)
class ManagedKey:
    """One manifest entry: a key file and its times; no key material."""

    alg: str
    kid: str
    file: str
    published_at: datetime
    signs_from: datetime
    encrypted: bool

    def to_json(self) -> dict[str, Any]:
        """The manifest form."""
        return {
            "alg": self.alg, "kid": self.kid, "file": self.file, "encrypted": self.encrypted,
            "published_at": self.published_at.isoformat(), "signs_from": self.signs_from.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ManagedKey:
        """Read a manifest entry; ValueError (or KeyError, TypeError) when malformed."""
        file = str(data["file"])
        if "/" in file or file.startswith("."):
            raise ValueError(f"key file name {file!r} leaves the keys directory")
        alg = str(data["alg"])
        if alg not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {alg!r}")
        return cls(
            alg=alg, kid=str(data["kid"]), file=file, encrypted=bool(data["encrypted"]),
            published_at=_utc(data["published_at"]), signs_from=_utc(data["signs_from"]),
        )


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """A key's state at one moment, and when it stopped signing / leaves the JWK Set (if known)."""

    key: ManagedKey
    state: KeyState
    stopped_at: datetime | None
    retires_at: datetime | None


def init_signing_keys(instance: Path) -> bool:
    """Create the signing keys and the pairwise secret in ``instance/keys`` where missing.

    Idempotent: an existing file is never replaced. Returns whether anything was created.
    """
    directory = instance / "keys"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = False
    for alg, name in _FILES.items():
        path = directory / name
        if path.exists():
            continue
        _write_new(path, _new_private_pem(alg))
        created = True
    pairwise = directory / _PAIRWISE_FILE
    if not pairwise.exists():
        _write_new(pairwise, secrets.token_bytes(PAIRWISE_SECRET_BYTES))
        created = True
    return created


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


def managed_keys(instance: Path) -> list[ManagedKey]:
    """The instance's keys from its manifest, or its single-file keys when it has none.

    Raises SigningKeysMissing when the manifest or a single-file key cannot be read.
    """
    directory = instance / "keys"
    manifest = directory / _MANIFEST
    try:
        if manifest.exists():
            document = json.loads(manifest.read_text(encoding="utf-8"))
            return [ManagedKey.from_json(entry) for entry in document["keys"]]
        return [_legacy_entry(directory, alg, name) for alg, name in _FILES.items()]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SigningKeysMissing(f"{directory} holds no usable signing keys: run `idp init` ({exc})") from exc


def key_statuses(keys: list[ManagedKey], *, now: datetime, retire_after: timedelta) -> list[KeyStatus]:
    """Each key's state at ``now``: the newest started key of an algorithm signs; the ones it
    superseded stay published for ``retire_after`` (the longest lifetime of what they signed)
    after their successor started."""
    statuses: list[KeyStatus] = []
    for alg in ALGORITHMS:
        started = sorted((key for key in keys if key.alg == alg and key.signs_from <= now), key=_start_order)
        pending = [key for key in keys if key.alg == alg and key.signs_from > now]
        statuses.extend(KeyStatus(key, KeyState.NEXT, None, None) for key in pending)
        for index, key in enumerate(started):
            if index == len(started) - 1:
                statuses.append(KeyStatus(key, KeyState.CURRENT, None, None))
                continue
            stopped = started[index + 1].signs_from
            retires = stopped + retire_after
            state = KeyState.PREVIOUS if now < retires else KeyState.RETIRED
            statuses.append(KeyStatus(key, state, stopped, retires))
    return statuses


def rotate_signing_key(
    instance: Path, *, alg: str, now: datetime, overlap: timedelta, kek: bytes | None,
) -> ManagedKey:
    """Publish a new ``next`` key for ``alg`` that starts signing ``overlap`` after ``now``.

    Writes the key file (sealed when ``kek`` is given), then replaces the manifest atomically, so
    a failure leaves the old manifest in force. An instance in the single-file layout gets its
    manifest here. Raises RotationRefused for an unknown algorithm or while a next key of the
    algorithm is still pending (two pending keys would give RPs a key that never signs).
    """
    if alg not in ALGORITHMS:
        raise RotationRefused(f"unknown algorithm {alg!r}: one of {', '.join(ALGORITHMS)}")
    keys = managed_keys(instance)
    pending = [key for key in keys if key.alg == alg and key.signs_from > now]
    if pending:
        raise RotationRefused(
            f"{alg} key {pending[0].kid} is still next (it signs from {pending[0].signs_from.isoformat()}): "
            "rotate again after that",
        )
    pem = _new_private_pem(alg)
    kid = _import(alg, pem).thumbprint()
    directory = instance / "keys"
    name = f"{alg.lower()}-{kid}.key.{'sealed' if kek is not None else 'pem'}"
    _write_new(directory / name, _seal(kek, kid, pem) if kek is not None else pem)
    added = ManagedKey(alg=alg, kid=kid, file=name, published_at=now, signs_from=now + overlap,
                       encrypted=kek is not None)
    _write_manifest(directory, [*keys, added])
    return added


class KeyStore:
    """The instance's signing keys and pairwise secret. Raises SigningKeysMissing.

    ``clock`` (default: the system clock) decides which key signs and which are published;
    ``retire_after`` is how long a superseded key stays published (the ID token lifetime);
    ``kek`` defaults to the environment's (``kek_from_environment``). Every key in the manifest
    is opened at load, so a wrong KEK fails when the store loads, not at some later request.
    """

    def __init__(
        self,
        instance: Path,
        *,
        clock: Clock | None = None,
        retire_after: timedelta = timedelta(minutes=10),
        kek: bytes | None = None,
    ) -> None:
        self._directory = instance / "keys"
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._retire_after = retire_after
        self._kek = kek if kek is not None else kek_from_environment()
        try:
            self._pairwise_secret = (self._directory / _PAIRWISE_FILE).read_bytes()
        except OSError as exc:
            raise SigningKeysMissing(f"{self._directory} holds no usable signing keys: run `idp init` ({exc})") from exc
        if len(self._pairwise_secret) < PAIRWISE_SECRET_BYTES:
            raise SigningKeysMissing(
                f"{self._directory / _PAIRWISE_FILE} is shorter than {PAIRWISE_SECRET_BYTES} bytes",
            )
        self._checked_at: datetime | None = None
        self._manifest_stamp: int | None = None
        self._load()

    @classmethod
    def of(cls, settings: Settings, *, clock: Clock) -> KeyStore:
        """The store for a portal's settings: its instance and its ID token lifetime, on ``clock``."""
        return cls(settings.instance, clock=clock, retire_after=settings.oidc.id_token_lifetime)

    def __repr__(self) -> str:
        """Key ids only."""
        kids = ", ".join(f"{key.alg}:{key.kid}" for key in self._entries)
        return f"KeyStore({kids})"

    def signing_key(self, alg: str) -> SigningKey:
        """The key that signs ``alg`` (ES256 or RS256) now; KeyError for another."""
        for status in self._statuses():
            if status.key.alg == alg and status.state is KeyState.CURRENT:
                return self._keys[status.key.kid]
        raise KeyError(alg)

    @property
    def pairwise_secret(self) -> bytes:
        """The HMAC key of pairwise subjects; never leaves the portal."""
        return self._pairwise_secret

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set served at ``/jwks`` (RFC 7517 §5): public parts of every key that is
        current, next or previous now; a retired key is left out."""
        order = {KeyState.CURRENT: 0, KeyState.NEXT: 1, KeyState.PREVIOUS: 2}
        published = sorted(
            (status for status in self._statuses() if status.state is not KeyState.RETIRED),
            key=lambda status: (ALGORITHMS.index(status.key.alg), order[status.state]),
        )
        return {"keys": [self._keys[status.key.kid].public_jwk() for status in published]}

    def verification_jwks(self) -> dict[str, Any]:
        """Every key's public JWK, retired ones included: for verifying, offline, a signed-document
        assertion (which has no expiry) signed by a key that no longer signs."""
        self._reload_if_changed()
        return {"keys": [key.public_jwk() for key in self._keys.values()]}

    def _now(self) -> datetime:
        return self._clock.now()

    def _statuses(self) -> list[KeyStatus]:
        self._reload_if_changed()
        return key_statuses(self._entries, now=self._now(), retire_after=self._retire_after)

    def _reload_if_changed(self) -> None:
        """Re-read the manifest when its modification time changed, looking at most every RELOAD_INTERVAL."""
        now = self._now()
        if self._checked_at is not None and now < self._checked_at + RELOAD_INTERVAL:
            return
        self._checked_at = now
        if _stamp(self._directory / _MANIFEST) != self._manifest_stamp:
            self._load()

    def _load(self) -> None:
        stamp = _stamp(self._directory / _MANIFEST)
        entries = managed_keys(self._directory.parent)
        keys = {entry.kid: self._open(entry) for entry in entries}
        self._entries, self._keys, self._manifest_stamp = entries, keys, stamp

    def _open(self, entry: ManagedKey) -> SigningKey:
        path = self._directory / entry.file
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SigningKeysMissing(f"{path} cannot be read: {exc}") from exc
        if entry.encrypted:
            data = _unseal(self._kek, entry.kid, data, path)
        try:
            key = _import(entry.alg, data)
        except ValueError as exc:
            raise SigningKeysMissing(f"{path} is not a usable {entry.alg} key ({exc})") from exc
        if key.thumbprint() != entry.kid:
            raise SigningKeysMissing(f"{path} does not hold key {entry.kid} that the manifest names")
        return SigningKey(alg=entry.alg, kid=entry.kid, key=key)


def _new_private_pem(alg: str) -> bytes:
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    )
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    )


def _import(alg: str, pem: bytes) -> ECKey | RSAKey:
    return ECKey.import_key(pem) if alg == "ES256" else RSAKey.import_key(pem)


def _legacy_entry(directory: Path, alg: str, name: str) -> ManagedKey:
    """A single-file key as a manifest entry: current since ever, plain."""
    kid = _import(alg, (directory / name).read_bytes()).thumbprint()
    return ManagedKey(alg=alg, kid=kid, file=name, published_at=_SINCE_EVER, signs_from=_SINCE_EVER, encrypted=False)


def _seal(kek: bytes, kid: str, pem: bytes) -> bytes:
    """AES-256-GCM over the PEM with the kid as associated data: nonce || ciphertext+tag."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, pem, kid.encode("ascii"))


def _unseal(kek: bytes | None, kid: str, sealed: bytes, path: Path) -> bytes:
    if kek is None:
        raise KeyEncryptionKeyError(f"{path} is encrypted: set IDP_KEK or IDP_KEK_FILE to the key-encryption key")
    try:
        return AESGCM(kek).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], kid.encode("ascii"))
    except InvalidTag as exc:
        raise KeyEncryptionKeyError(
            f"{path} does not open with this KEK (IDP_KEK / IDP_KEK_FILE): a wrong key",
        ) from exc


def _write_manifest(directory: Path, keys: list[ManagedKey]) -> None:
    """Replace the manifest atomically (write a new file, fsync, rename over the old one)."""
    body = json.dumps({"keys": [key.to_json() for key in keys]}, indent=2).encode("utf-8")
    temporary = directory / f".{_MANIFEST}.{secrets.token_hex(8)}"
    _write_new(temporary, body)
    temporary.replace(directory / _MANIFEST)


def _stamp(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _start_order(key: ManagedKey) -> tuple[datetime, datetime]:
    return key.signs_from, key.published_at


def _utc(value: object) -> datetime:
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone")
    return moment.astimezone(UTC)


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600; an existing file is never replaced."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    path.chmod(0o600)
