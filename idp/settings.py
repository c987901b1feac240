"""The portal's settings: one typed object, read from an optional TOML file and the environment.

Every setting is a field of a frozen dataclass below, documented by the docstring under it;
``config/idp.example.toml`` is generated from those docstrings (``idp settings example``) and a
test keeps the two equal. An unknown key in the file or the environment is an error, never
silently ignored: a mistyped setting must not leave a security default in place unnoticed.

Precedence, lowest first: the defaults here, the TOML file, then the environment. Environment
variables are ``IDP_<SECTION>__<FIELD>`` (``IDP_PKI__CRL_LIFETIME=3600``) and, for the top-level
fields, ``IDP_<FIELD>``; the two connection strings also answer to the conventional
``DATABASE_URL`` and ``REDIS_URL``. Durations are whole seconds.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import os
import textwrap
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DeviceSettings",
    "LoginSettings",
    "OidcSettings",
    "PkiSettings",
    "Settings",
    "SettingsError",
    "example_toml",
    "load_settings",
]

ENV_PREFIX = "IDP_"
_T = typing.TypeVar("_T")


class SettingsError(ValueError):
    """A setting is unknown, or its value cannot be read as its type."""


@dataclass(frozen=True, kw_only=True)
class PkiSettings:
    """The portal's certificate authorities and the trust it places in others."""

    smartphone_certificate_lifetime: timedelta = timedelta(days=5 * 365)
    """How long a smartphone certificate is valid; never past the card certificate it came from."""

    crl_lifetime: timedelta = timedelta(days=1)
    """A CRL's nextUpdate is this long after its thisUpdate; JPKI publishes daily."""

    ocsp_lifetime: timedelta = timedelta(minutes=15)
    """An OCSP response's nextUpdate is this long after its thisUpdate; JPKI refreshes every 15 minutes."""

    jlis_roots: tuple[Path, ...] = ()
    """PEM files of the J-LIS root certificates that card certificates must chain to."""

    attestation_roots: tuple[Path, ...] = ()
    """PEM files of the SE vendor attestation roots the portal trusts; no other attestation is accepted."""

    jlis_intermediates: tuple[Path, ...] = ()
    """PEM files of the J-LIS issuing CA certificates (user authentication, digital signature) that
    card certificates are issued by. The portal builds card certificate paths from these, never
    from certificates a phone sends."""

    jlis_crl_urls: tuple[str, ...] = ()
    """CRLs that ``idp pki sync-revocations`` fetches besides the CRL distribution points named in
    the J-LIS CA certificates: the issuing CAs' own CRLs, which list card certificates."""

    jlis_fetch_timeout: timedelta = timedelta(seconds=3)
    """How long one J-LIS CRL download or OCSP query may take; an unreachable OCSP responder at
    enrollment falls back to the cached CRLs."""


@dataclass(frozen=True, kw_only=True)
class DeviceSettings:
    """The device API that the phone app speaks (``/device/v1``)."""

    enrollment_ttl: timedelta = timedelta(minutes=5)
    """How long a started enrollment waits for the phone to complete it; it is used once."""


@dataclass(frozen=True, kw_only=True)
class OidcSettings:
    """The OpenID Connect provider: lifetimes of what it issues."""

    code_ttl: timedelta = timedelta(seconds=60)
    """How long an authorization code may be redeemed; RFC 9700 §4.2.1 wants it short-lived."""

    access_token_ttl: timedelta = timedelta(minutes=10)
    """How long an access token (opaque, kept in the ephemeral store) opens userinfo."""

    refresh_token_ttl: timedelta = timedelta(days=30)
    """How long a refresh token lives; each use rotates it to a new one with a fresh lifetime."""

    id_token_lifetime: timedelta = timedelta(minutes=10)
    """The ID token's exp is this long after its iat."""

    request_uri_ttl: timedelta = timedelta(seconds=60)
    """How long a pushed authorization request's request_uri may be used (RFC 9126 §2.2)."""

    client_assertion_max_age: timedelta = timedelta(minutes=5)
    """How long a private_key_jwt assertion's jti is remembered to refuse its replay (RFC 7523 §3)."""

    client_cache_ttl: timedelta = timedelta(seconds=30)
    """How long each process reuses what it read of a registered client. ``idp clients remove``
    (or a new registration) takes effect in a running portal within this time."""


@dataclass(frozen=True, kw_only=True)
class LoginSettings:
    """The login page and its transaction."""

    transaction_ttl: timedelta = timedelta(seconds=300)
    """How long the user has to approve a login on the phone before the page shows it expired."""

    qr_rotation: timedelta = timedelta(seconds=1)
    """How often the login QR changes; a photographed code is stale a second later."""

    qr_max_age: timedelta = timedelta(seconds=3)
    """How old a scanned QR code may be when the phone presents it: rotation plus network delay."""

    link_max_age: timedelta = timedelta(seconds=60)
    """How old a same-device link may be when the phone opens it. The page renews the link every
    rotation, like the QR code, so a link copied from the page and relayed goes stale."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the portal reads at start-up."""

    issuer: str = "http://127.0.0.1:8000"
    """The portal's public base URL: the OIDC issuer, and the base of the CRL and OCSP URLs in
    every certificate it issues. Must be https outside loopback."""

    instance: Path = Path(".instance")
    """The instance directory made by ``idp init``: the SQLite database (when no database_url is
    set) and the CA keys and certificates."""

    database_url: str = ""
    """SQLAlchemy URL of the durable store; empty means the SQLite file in the instance directory.
    Production: postgresql+psycopg://user@host/dbname."""

    redis_url: str = ""
    """Redis URL of the ephemeral store; empty means the in-process store, which serves one
    process only and refuses to run in a second worker."""

    pki: PkiSettings = field(default_factory=PkiSettings)
    """Certificate authorities and trust."""

    device: DeviceSettings = field(default_factory=DeviceSettings)
    """The device API."""

    oidc: OidcSettings = field(default_factory=OidcSettings)
    """The OpenID Connect provider."""

    login: LoginSettings = field(default_factory=LoginSettings)
    """The login page and its transaction."""

    @property
    def effective_database_url(self) -> str:
        """The configured database URL, or the instance's SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.instance / 'idp.sqlite3').resolve()}"

    def __post_init__(self) -> None:
        parts = urlsplit(self.issuer)
        if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
            raise SettingsError(
                f"issuer must be an http(s) URL without query or fragment, not {self.issuer!r}",
            )
        if parts.scheme == "http" and parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
            raise SettingsError("issuer must use https unless it is on loopback")
        if self.issuer.endswith("/"):
            raise SettingsError("issuer must not end with '/'")


def load_settings(
    toml_path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read settings from ``toml_path`` (or ``$IDP_CONFIG``) and the environment.

    Raises SettingsError naming the offending key.
    """
    env = os.environ if environ is None else environ
    if toml_path is None and env.get("IDP_CONFIG"):
        toml_path = Path(env["IDP_CONFIG"])
    values: dict[str, Any] = {}
    if toml_path is not None:
        try:
            values = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read settings file {toml_path}: {exc}") from exc
    _merge(values, _from_environment(env))
    return _build(Settings, values, "")


def _from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for conventional in ("DATABASE_URL", "REDIS_URL"):
        if env.get(conventional):
            values[conventional.lower()] = env[conventional]
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == "IDP_CONFIG":
            continue
        path = name.removeprefix(ENV_PREFIX).lower().split("__")
        target = values
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = raw
    return values


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _build(cls: type[_T], values: Mapping[str, Any], where: str) -> _T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise SettingsError(f"unknown setting {where}{unknown[0]}")
    kwargs: dict[str, Any] = {}
    for name, raw in values.items():
        kwargs[name] = _convert(hints[name], raw, f"{where}{name}")
    return cls(**kwargs)


def _convert(kind: Any, raw: Any, key: str) -> Any:
    if dataclasses.is_dataclass(kind):
        if not isinstance(raw, Mapping):
            raise SettingsError(f"setting {key} must be a table")
        return _build(kind, raw, f"{key}.")  # type: ignore[arg-type]
    if typing.get_origin(kind) is tuple:
        (item, _ellipsis) = typing.get_args(kind)
        parts = raw.split(",") if isinstance(raw, str) else list(raw)
        return tuple(_convert(item, part.strip() if isinstance(part, str) else part, key)
                     for part in parts if part != "")
    reader = _SCALAR_READERS.get(kind)
    if reader is None:
        raise SettingsError(f"setting {key} has a type the loader does not know: {kind}")
    try:
        return reader(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {key}: cannot read {raw!r}: {exc}") from exc


def _seconds(raw: Any) -> timedelta:
    seconds = int(raw)
    if seconds <= 0:
        raise ValueError("must be positive")
    return timedelta(seconds=seconds)


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    lowered = str(raw).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


_SCALAR_READERS: dict[Any, typing.Callable[[Any], Any]] = {
    str: str,
    int: int,
    bool: _boolean,
    Path: lambda raw: Path(str(raw)),
    timedelta: _seconds,
}


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a settings dataclass (PEP 257 attribute docstrings)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _toml_value(value: Any) -> str:
    if isinstance(value, timedelta):
        return str(int(value.total_seconds()))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def example_toml() -> str:
    """The documented example settings file, generated from the dataclasses above."""
    lines = [
        "# Myna Gateway portal settings. Generated by `idp settings example` from idp/settings.py;",
        "# a test keeps this file equal to that output. Every key shows its default.",
        "# Durations are whole seconds. Environment variables override this file:",
        "# IDP_<FIELD>, IDP_<SECTION>__<FIELD>, and DATABASE_URL / REDIS_URL.",
        "",
    ]
    tables: list[tuple[str, Any]] = []
    defaults = Settings()
    for name, doc in _field_docs(Settings).items():
        value = getattr(defaults, name)
        if dataclasses.is_dataclass(value):
            tables.append((name, value))
            continue
        lines.extend(f"# {line}".rstrip() for line in doc.splitlines())
        lines.extend([f"{name} = {_toml_value(value)}", ""])
    for table, value in tables:
        lines.append(f"[{table}]")
        for name, doc in _field_docs(type(value)).items():
            lines.extend(f"# {line}".rstrip() for line in doc.splitlines())
            lines.extend([f"{name} = {_toml_value(getattr(value, name))}", ""])
    return "\n".join(lines).rstrip() + "\n"
