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

At rest (``idp.store.key_files``) a private key is plain PKCS#8 PEM (mode 0600) unless a
key-encryption key (KEK) is set in the environment, ``IDP_KEK`` (base64 of 32 bytes) or
``IDP_KEK_FILE`` (a file holding that base64): then ``init_signing_keys`` and
``rotate_signing_key`` seal each new key with AES-256-GCM under the KEK, with the key id as
associated data, so a sealed file moved to another key's name does not open; the pairwise secret
is sealed with its place, ``keys/pairwise.secret``. ``seal_signing_keys`` (``idp keys encrypt``)
seals an existing instance's plain keys.

Writers of the keys directory (rotation, sealing) hold an exclusive lock on it, so two
``idp keys rotate`` run one after the other and each sees the other's manifest. A rotation also
*prunes* the retired keys (past ``retire_after`` since their successor started): their private
files are deleted and the manifest keeps only their public JWK, for verifying signed-document
assertions (which do not expire) in ``KeyStore.verification_jwks``.

``KeyStore`` re-reads the manifest when it changes (checked at most every ``RELOAD_INTERVAL``
by the provider's clock), so a rotation reaches running workers without a restart. Its JWK Set
holds public parts only, and its repr shows key ids, never key material.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey

from idp.clock import SystemClock
from idp.store import key_files

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from idp.clock import Clock
    from idp.settings import Settings

__all__ = [
    "KeyEncryptionKeyError",
    "KeyState",
    "KeyStatus",
    "KeyStore",
    "ManagedKey",
    "PrunedKey",
    "RotationRefused",
    "SigningKey",
    "SigningKeysMissing",
    "init_signing_keys",
    "kek_from_environment",
    "key_statuses",
    "managed_keys",
    "open_at_start_up",
    "rotate_signing_key",
    "seal_signing_keys",
]

ALGORITHMS = ("ES256", "RS256")
"""The JWS algorithms the portal signs with, default first."""
RSA_KEY_BITS = 2048
PAIRWISE_SECRET_BYTES = 32
KEK_BYTES = key_files.KEK_BYTES
RELOAD_INTERVAL = timedelta(seconds=5)
"""The longest a worker keeps using a manifest it read before looking for a rotation."""
_FILES = {"ES256": "es256.key.pem", "RS256": "rs256.key.pem"}
_PAIRWISE_FILE = "pairwise.secret"
_PAIRWISE_PURPOSE = "keys/pairwise.secret"
"""The pairwise secret's associated data when sealed: its place in the instance."""
_MANIFEST = "manifest.json"
_SINCE_EVER = datetime(1970, 1, 1, tzinfo=UTC)
"""The publication and start time of a key from the single-file layout: it has always signed."""


class SigningKeysMissing(RuntimeError):
    """The instance has no signing keys, or a key file is unreadable: run ``idp init``."""


class KeyEncryptionKeyError(SigningKeysMissing, key_files.KeyEncryptionKeyError):
    """The key-encryption key is malformed, missing for sealed keys, or not the one that sealed them.

    Both a SigningKeysMissing and the ``key_files.KeyEncryptionKeyError`` every key loader raises.
    """


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
class PrunedKey:
    """A retired key whose private file a rotation deleted: its public JWK stays in the manifest,
    for verifying old signed-document assertions."""

    alg: str
    kid: str
    public_jwk: dict[str, Any]
    pruned_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The manifest form."""
        return {"alg": self.alg, "kid": self.kid, "jwk": self.public_jwk, "pruned_at": self.pruned_at.isoformat()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PrunedKey:
        """Read a pruned entry; ValueError (or KeyError, TypeError) when malformed, private or not its kid."""
        alg, kid = str(data["alg"]), str(data["kid"])
        if alg not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {alg!r}")
        key = ECKey.import_key(data["jwk"]) if alg == "ES256" else RSAKey.import_key(data["jwk"])
        if key.is_private:
            raise ValueError(f"pruned key {kid} holds a private part")
        if key.thumbprint() != kid:
            raise ValueError(f"pruned key {kid} is not the key of its JWK")
        return cls(alg=alg, kid=kid, public_jwk=dict(key.as_dict(private=False)), pruned_at=_utc(data["pruned_at"]))

    def signing_key(self) -> SigningKey:
        """The public key as a SigningKey (it never signs again: only its public JWK is used)."""
        key = ECKey.import_key(self.public_jwk) if self.alg == "ES256" else RSAKey.import_key(self.public_jwk)
        return SigningKey(alg=self.alg, kid=self.kid, key=key)


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """A key's state at one moment, and when it stopped signing / leaves the JWK Set (if known)."""

    key: ManagedKey
    state: KeyState
    stopped_at: datetime | None
    retires_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Manifest:
    keys: list[ManagedKey]
    pruned: list[PrunedKey]


def init_signing_keys(instance: Path, *, kek: bytes | None = None) -> bool:
    """Create the signing keys and the pairwise secret in ``instance/keys`` where missing.

    Without ``kek`` they are plain files (``es256.key.pem``, ``rs256.key.pem``,
    ``pairwise.secret``); with it each is sealed, and the keys are listed in a manifest (the key
    id is a sealed key's associated data, so only a manifest can name it). Idempotent: an existing
    key is never replaced, sealed or plain. Returns whether anything was created.
    """
    directory = instance / "keys"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = False
    with key_files.exclusive_lock(directory):
        if not (directory / _MANIFEST).exists():
            created = _init_keys(directory, kek)
        pairwise = directory / _PAIRWISE_FILE
        if not key_files.key_file_exists(pairwise):
            key_files.write_key_file(pairwise, secrets.token_bytes(PAIRWISE_SECRET_BYTES),
                                     purpose=_PAIRWISE_PURPOSE, kek=kek)
            created = True
    return created


def _init_keys(directory: Path, kek: bytes | None) -> bool:
    """The first key of each algorithm that has none, in an instance without a manifest."""
    missing = [alg for alg, name in _FILES.items() if not (directory / name).exists()]
    if kek is None:
        for alg in missing:
            key_files.write_new(directory / _FILES[alg], _new_private_pem(alg))
        return bool(missing)
    if not missing:
        return False  # plain keys of an older instance: `idp keys encrypt` seals them
    entries = [_legacy_entry(directory, alg, name) for alg, name in _FILES.items() if alg not in missing]
    for alg in missing:
        pem = _new_private_pem(alg)
        kid = _import(alg, pem).thumbprint()
        name = f"{alg.lower()}-{kid}.key.sealed"
        key_files.write_new(directory / name, key_files.seal(kek, kid, pem))
        entries.append(ManagedKey(alg=alg, kid=kid, file=name, published_at=_SINCE_EVER, signs_from=_SINCE_EVER,
                                  encrypted=True))
    _write_manifest(directory, _Manifest(keys=entries, pruned=[]))
    return True


def kek_from_environment(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key-encryption key from ``IDP_KEK`` or ``IDP_KEK_FILE``; None when neither is set.

    Raises KeyEncryptionKeyError when both are set, the file is unreadable, or the value is not
    the base64 of exactly 32 bytes (``key_files.kek_from_environment``).
    """
    with _as_signing_key_errors():
        return key_files.kek_from_environment(environ)


def managed_keys(instance: Path) -> list[ManagedKey]:
    """The instance's keys from its manifest, or its single-file keys when it has none.

    Raises SigningKeysMissing when the manifest or a single-file key cannot be read.
    """
    return _read_manifest(instance / "keys").keys


def _read_manifest(directory: Path) -> _Manifest:
    manifest = directory / _MANIFEST
    try:
        if manifest.exists():
            document = json.loads(manifest.read_text(encoding="utf-8"))
            return _Manifest(
                keys=[ManagedKey.from_json(entry) for entry in document["keys"]],
                pruned=[PrunedKey.from_json(entry) for entry in document.get("pruned", [])],
            )
        return _Manifest(keys=[_legacy_entry(directory, alg, name) for alg, name in _FILES.items()], pruned=[])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
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
    retire_after: timedelta | None = None,
) -> ManagedKey:
    """Publish a new ``next`` key for ``alg`` that starts signing ``overlap`` after ``now``.

    Holds the keys directory's lock throughout, so concurrent rotations serialize. Opens every
    key of the manifest first: a KEK that does not open the instance's sealed keys (or no KEK for
    them) is refused before anything is written, as the portal could not load a key it sealed.
    Writes the key file (sealed when ``kek`` is given), then replaces the manifest atomically, so
    a failure leaves the old manifest in force. With ``retire_after`` (the ID token lifetime),
    keys retired at ``now`` are pruned: the manifest keeps their public JWK and their private
    files are deleted. An instance in the single-file layout gets its manifest here. Raises
    RotationRefused for an unknown algorithm or while a next key of the algorithm is still
    pending (two pending keys would give RPs a key that never signs); SigningKeysMissing (or
    KeyEncryptionKeyError) when the instance's keys do not open.
    """
    if alg not in ALGORITHMS:
        raise RotationRefused(f"unknown algorithm {alg!r}: one of {', '.join(ALGORITHMS)}")
    directory = instance / "keys"
    if not directory.is_dir():
        raise SigningKeysMissing(f"{directory} holds no usable signing keys: run `idp init`")
    with key_files.exclusive_lock(directory):
        manifest = _read_manifest(directory)
        opened = {entry.kid: _open_entry(directory, entry, kek) for entry in manifest.keys}
        pending = [key for key in manifest.keys if key.alg == alg and key.signs_from > now]
        if pending:
            raise RotationRefused(
                f"{alg} key {pending[0].kid} is still next (it signs from {pending[0].signs_from.isoformat()}): "
                "rotate again after that",
            )
        retired = [] if retire_after is None else [
            status.key for status in key_statuses(manifest.keys, now=now, retire_after=retire_after)
            if status.state is KeyState.RETIRED
        ]
        pem = _new_private_pem(alg)
        kid = _import(alg, pem).thumbprint()
        name = f"{alg.lower()}-{kid}.key.{'sealed' if kek is not None else 'pem'}"
        key_files.write_new(directory / name, key_files.seal(kek, kid, pem) if kek is not None else pem)
        added = ManagedKey(alg=alg, kid=kid, file=name, published_at=now, signs_from=now + overlap,
                           encrypted=kek is not None)
        pruned = [
            PrunedKey(alg=key.alg, kid=key.kid, public_jwk=dict(opened[key.kid].key.as_dict(private=False)),
                      pruned_at=now)
            for key in retired
        ]
        _write_manifest(directory, _Manifest(
            keys=[*(key for key in manifest.keys if key not in retired), added],
            pruned=[*manifest.pruned, *pruned],
        ))
        for key in retired:  # after the manifest: no reader is ever sent to a deleted file
            key_files.remove_file(directory / key.file)
    return added


def seal_signing_keys(instance: Path, *, kek: bytes) -> list[str]:
    """Seal the instance's plain token-signing keys and pairwise secret under ``kek``
    (``idp keys encrypt``); returns the plain files sealed, as ``keys/<name>``.

    Idempotent and safe to re-run after a crash: each sealed file is written atomically beside
    its plain one, then the manifest names the sealed files, and only then are the plain ones
    removed. Keys sealed already must open with ``kek`` (one KEK per instance), else
    KeyEncryptionKeyError and nothing is written. An instance in the single-file layout gets its
    manifest here. Raises SigningKeysMissing when a key does not hold the key id its manifest names.
    """
    directory = instance / "keys"
    if not directory.is_dir():
        return []
    sealed: list[str] = []
    with key_files.exclusive_lock(directory), _as_signing_key_errors():
        manifest = _read_manifest(directory)
        for entry in manifest.keys:
            _open_entry(directory, entry, kek)
        entries: list[ManagedKey] = []
        for entry in manifest.keys:
            if entry.encrypted:
                entries.append(entry)
                continue
            target = key_files.seal_copy(directory / entry.file, purpose=entry.kid, kek=kek)
            entries.append(dataclasses.replace(entry, file=target.name, encrypted=True))
            sealed.append(f"keys/{entry.file}")
        if sealed:
            _write_manifest(directory, _Manifest(keys=entries, pruned=manifest.pruned))
        for entry in entries:  # the plain forms, of this run and of a run that stopped half-way
            plain = directory / (entry.file.removesuffix(key_files.SEALED_SUFFIX) + key_files.PLAIN_SUFFIX)
            if plain.exists():
                key_files.seal_copy(plain, purpose=entry.kid, kek=kek, sealed=directory / entry.file)
                key_files.remove_file(plain)
        if key_files.seal_key_file(directory / _PAIRWISE_FILE, purpose=_PAIRWISE_PURPOSE, kek=kek) is not None:
            sealed.append(f"keys/{_PAIRWISE_FILE}")
    return sealed


def open_at_start_up(instance: Path, load: Callable[[], object]) -> None:
    """Open the token-signing keys as the portal starts (``load``: ``OidcProvider.keys``), so a
    missing or wrong KEK stops the start with KeyEncryptionKeyError naming the file, not the
    first login; and log ``keys.unencrypted`` naming the instance's plain key files.

    An instance without token-signing keys yet still starts (its PKI serves); ``/readyz``
    reports the ``signing_keys`` check failing then.
    """
    try:
        load()
    except SigningKeysMissing as exc:
        if isinstance(exc, KeyEncryptionKeyError):
            raise
    key_files.warn_plain_key_files(instance)


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
        pairwise = self._directory / _PAIRWISE_FILE
        try:
            secret = key_files.read_key_file(pairwise, purpose=_PAIRWISE_PURPOSE, kek=self._kek)
        except key_files.KeyEncryptionKeyError as exc:
            raise KeyEncryptionKeyError(str(exc)) from exc
        except key_files.KeyFileError as exc:
            raise SigningKeysMissing(f"{self._directory} holds no usable signing keys: run `idp init` ({exc})") from exc
        self._pairwise_secret = secret.data
        if len(self._pairwise_secret) < PAIRWISE_SECRET_BYTES:
            raise SigningKeysMissing(f"{secret.path} is shorter than {PAIRWISE_SECRET_BYTES} bytes")
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
        """Every key's public JWK, retired and pruned ones included: for verifying, offline, a
        signed-document assertion (which has no expiry) signed by a key that no longer signs."""
        self._reload_if_changed()
        return {"keys": [key.public_jwk() for key in [*self._keys.values(), *self._pruned]]}

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
        try:
            manifest = _read_manifest(self._directory)
            keys = {entry.kid: _open_entry(self._directory, entry, self._kek) for entry in manifest.keys}
        except SigningKeysMissing:
            if _stamp(self._directory / _MANIFEST) == stamp:
                raise
            # A rotation replaced the manifest (and pruned a file it named) while we read: read the new one.
            stamp = _stamp(self._directory / _MANIFEST)
            manifest = _read_manifest(self._directory)
            keys = {entry.kid: _open_entry(self._directory, entry, self._kek) for entry in manifest.keys}
        pruned = [entry.signing_key() for entry in manifest.pruned]
        self._entries, self._keys, self._pruned, self._manifest_stamp = manifest.keys, keys, pruned, stamp


def _open_entry(directory: Path, entry: ManagedKey, kek: bytes | None) -> SigningKey:
    """The private key a manifest entry names, checked to be the key of its kid."""
    path = directory / entry.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeysMissing(f"{path} cannot be read: {exc}") from exc
    if entry.encrypted:
        with _as_signing_key_errors():
            data = key_files.unseal(kek, entry.kid, data, path=path)
    try:
        key = _import(entry.alg, data)
    except ValueError as exc:
        raise SigningKeysMissing(f"{path} is not a usable {entry.alg} key ({exc})") from exc
    if key.thumbprint() != entry.kid:
        raise SigningKeysMissing(f"{path} does not hold key {entry.kid} that the manifest names")
    return SigningKey(alg=entry.alg, kid=entry.kid, key=key)


@contextmanager
def _as_signing_key_errors() -> Iterator[None]:
    """``key_files`` errors as this module's: KeyEncryptionKeyError, else SigningKeysMissing."""
    try:
        yield
    except KeyEncryptionKeyError:
        raise
    except key_files.KeyEncryptionKeyError as exc:
        raise KeyEncryptionKeyError(str(exc)) from exc
    except key_files.KeyFileError as exc:
        raise SigningKeysMissing(str(exc)) from exc


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


def _write_manifest(directory: Path, manifest: _Manifest) -> None:
    """Replace the manifest atomically (write a new file, fsync, rename over the old one)."""
    document: dict[str, Any] = {"keys": [key.to_json() for key in manifest.keys]}
    if manifest.pruned:
        document["pruned"] = [key.to_json() for key in manifest.pruned]
    key_files.replace_file(directory / _MANIFEST, json.dumps(document, indent=2).encode("utf-8"))


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
