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
import ipaddress
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
    "CARD_REVOCATION_POLICIES",
    "DeviceSettings",
    "LoginSettings",
    "OidcSettings",
    "OpsSettings",
    "PkiSettings",
    "Settings",
    "SettingsError",
    "SigningSettings",
    "example_toml",
    "load_settings",
]

ENV_PREFIX = "IDP_"
_NOT_SETTINGS = frozenset({"IDP_CONFIG", "IDP_KEK", "IDP_KEK_FILE"})
"""Environment variables with the prefix that are no setting: the settings file, and the
key-encryption key of ``idp.oidc.keys``, a secret read only where keys are opened."""
MIN_METRICS_TOKEN_LENGTH = 32
_T = typing.TypeVar("_T")


JWKS_MAX_AGE = timedelta(hours=1)
"""How long an RP may cache /jwks (its Cache-Control max-age); a rotation's overlap exceeds it."""


CARD_REVOCATION_POLICIES = ("ocsp-then-fresh-crl", "ocsp-only", "crl-only")
"""The values of ``pki.card_revocation`` (``idp.ceremonies.revocation_cache.CardRevocationPolicy``)."""


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

    jlis_linking_url: str = ""
    """The J-LIS linking-data feed (e.g. ``http://127.0.0.1:8100/linking``) that ``idp pki sync`` reads
    after the CRLs, so that a renewed, moved or reissued card stays the same person. Empty: not read."""

    card_revocation: str = "ocsp-then-fresh-crl"
    """How an enrollment learns that the card certificates are not revoked: ``ocsp-then-fresh-crl``
    asks J-LIS OCSP and, when it cannot answer, uses the cached CRL while that is fresh;
    ``ocsp-only`` refuses the enrollment when OCSP cannot answer; ``crl-only`` never asks OCSP.
    Whatever the policy, an enrollment with no usable status is refused (card_revocation_unavailable)."""

    card_crl_max_age: timedelta = timedelta(hours=48)
    """How old (since its thisUpdate) a cached J-LIS CRL may be and still vouch for a card
    certificate; a CRL past its nextUpdate never does. J-LIS publishes daily."""

    def __post_init__(self) -> None:
        if self.card_revocation not in CARD_REVOCATION_POLICIES:
            choices = ", ".join(CARD_REVOCATION_POLICIES)
            raise SettingsError(f"pki.card_revocation must be one of {choices}, not {self.card_revocation!r}")


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

    jwks_uri_cache_ttl: timedelta = timedelta(minutes=5)
    """How long each process uses the keys it fetched from a private_key_jwt client's jwks_uri
    before fetching them again."""

    jwks_uri_refetch_interval: timedelta = timedelta(seconds=60)
    """The least time between two fetches of one client's jwks_uri by one process. An assertion
    naming a key id the portal has not seen (the client rotated its keys) fetches again at most
    this often, and a failed fetch is not retried sooner, so bad assertions cannot make the
    portal hammer a client's server."""

    jwks_uri_timeout: timedelta = timedelta(seconds=3)
    """How long one fetch of a client's jwks_uri may take; a slower client fails to authenticate."""

    key_rotation_overlap: timedelta = timedelta(hours=24)
    """How long a key added by ``idp keys rotate`` is published in /jwks before it signs anything,
    so that every RP's cached JWK Set holds it first. Must exceed the hour /jwks lets RPs cache it."""

    def __post_init__(self) -> None:
        if self.key_rotation_overlap <= JWKS_MAX_AGE:
            raise SettingsError("oidc.key_rotation_overlap must exceed 1 hour, the JWKS cache lifetime of /jwks")


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

    session_idle_ttl: timedelta = timedelta(minutes=30)
    """How long the portal session a completed login leaves in the browser lasts unused. The
    session serves ``prompt=none`` requests (and the account page) only: every other login still
    asks the phone."""

    session_lifetime: timedelta = timedelta(hours=8)
    """How long a portal session lasts at most after its login, however often it is used."""


@dataclass(frozen=True, kw_only=True)
class SigningSettings:
    """Document signatures, their timestamps (RFC 3161) and their verification."""

    tsa_policy: str = "2.25.75866854229242772120746479556451608109.3.1"
    """The TSA policy OID that every timestamp names (RFC 3161 §2.4.2 TSTInfo.policy); a request
    asking for another policy is refused with unacceptedPolicy."""

    assertion_alg: str = "ES256"
    """The JWS algorithm of signed-document assertions: ES256 or RS256 (the OIDC signing keys)."""

    max_document_bytes: int = 20 * 1024 * 1024
    """Largest document (a PDF to sign or to verify, or a document checked against a detached
    signature) the portal reads; anything larger is refused before it is read."""

    def __post_init__(self) -> None:
        if not all(arc.isdigit() for arc in self.tsa_policy.split(".")) or self.tsa_policy.count(".") < 1:
            raise SettingsError(f"signing.tsa_policy must be a dotted OID, not {self.tsa_policy!r}")
        if self.assertion_alg not in {"ES256", "RS256"}:
            raise SettingsError("signing.assertion_alg must be ES256 or RS256")
        if self.max_document_bytes < 1:
            raise SettingsError("signing.max_document_bytes must be positive")


@dataclass(frozen=True, kw_only=True)
class OpsSettings:
    """What operators see: metrics, health and logs (docs/operations.md)."""

    metrics: bool = True
    """Serve Prometheus metrics at /metrics and time every request per endpoint. Off saves the
    per-request timing (a few microseconds) and hides the endpoint."""

    metrics_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Source networks (CIDR) allowed to read /metrics. A request that came through a reverse
    proxy (it carries Forwarded or X-Forwarded-For) is refused whatever its source."""

    metrics_token: str = ""
    """When set, /metrics also wants ``Authorization: Bearer <token>`` (at least 32 characters).
    Set it in the environment (IDP_OPS__METRICS_TOKEN), never in a file under version control."""

    json_logs: bool = True
    """Log one JSON object per line (events, errors and the access log), each with its request
    id; off gives plain text lines. Read by config/gunicorn.conf.py at start-up."""

    def __post_init__(self) -> None:
        for network in self.metrics_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise SettingsError(f"ops.metrics_networks: {network!r} is not a CIDR network") from exc
        if self.metrics_token and len(self.metrics_token) < MIN_METRICS_TOKEN_LENGTH:
            raise SettingsError(f"ops.metrics_token must be at least {MIN_METRICS_TOKEN_LENGTH} characters")


@dataclass(frozen=True, kw_only=True)
class LimitsSettings:
    """Rate limits: over a limit the portal answers HTTP 429 with Retry-After (docs/operations.md).

    Counted in the ephemeral store (shared by every worker and host) per fixed window; each
    limited request costs one store round trip. The defaults leave normal use far below them.
    """

    enabled: bool = True
    """Count and enforce the limits below."""

    window: timedelta = timedelta(seconds=60)
    """The counting window of the per-client and per-address limits."""

    token_per_client: int = 600
    """Token requests per authenticated client per window."""

    token_per_address: int = 1200
    """Token requests per source address per window, counted before client authentication (so
    guessing a client secret is slowed too)."""

    par_per_client: int = 600
    """Pushed authorization requests per authenticated client per window."""

    par_per_address: int = 1200
    """Pushed authorization requests per source address per window, counted before client
    authentication."""

    authorize_per_address: int = 300
    """Login pages opened (/authorize) per source address per window."""

    device_per_address: int = 600
    """Device API requests per source address per window."""

    failed_approvals: int = 5
    """Approvals refused for one person (bad signature, counter replay, refused certificate...)
    within ``failure_window`` after which that person's pending logins are locked."""

    failure_window: timedelta = timedelta(minutes=10)
    """The window ``failed_approvals`` is counted in."""

    person_lock: timedelta = timedelta(minutes=15)
    """How long a person's approvals are refused once ``failed_approvals`` is reached."""

    proxy_hops: int = 0
    """Reverse proxies in front of the portal that append to X-Forwarded-For: the source address
    is the entry this many hops from the right. 0: the TCP peer (no proxy)."""

    def __post_init__(self) -> None:
        for name in ("token_per_client", "token_per_address", "par_per_client", "par_per_address",
                     "authorize_per_address", "device_per_address", "failed_approvals"):
            if getattr(self, name) < 1:
                raise SettingsError(f"limits.{name} must be at least 1")
        for name in ("window", "failure_window", "person_lock"):
            if getattr(self, name) < timedelta(seconds=1):
                raise SettingsError(f"limits.{name} must be at least one second")
        if self.proxy_hops < 0:
            raise SettingsError("limits.proxy_hops must not be negative")


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

    redis_prefix: str = "myna:"
    """Prefix of every key the portal writes in Redis: several portals (or test runs) can share
    one Redis without seeing each other's transactions, codes or rate-limit counters."""

    pki: PkiSettings = field(default_factory=PkiSettings)
    """Certificate authorities and trust."""

    device: DeviceSettings = field(default_factory=DeviceSettings)
    """The device API."""

    oidc: OidcSettings = field(default_factory=OidcSettings)
    """The OpenID Connect provider."""

    login: LoginSettings = field(default_factory=LoginSettings)
    """The login page and its transaction."""

    signing: SigningSettings = field(default_factory=SigningSettings)
    """Document signatures, timestamps and verification."""

    ops: OpsSettings = field(default_factory=OpsSettings)
    """Metrics, health and logs."""

    limits: LimitsSettings = field(default_factory=LimitsSettings)
    """Rate limits."""

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
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
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
