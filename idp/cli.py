"""The portal's command line: ``idp init``, ``idp serve``, ``idp clients``, ``idp settings example``.

Every command reads the same settings as the server (``--config`` or ``$IDP_CONFIG``, then
the environment); ``--instance`` overrides the instance directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from idp.clock import SystemClock
from idp.settings import Settings, SettingsError, example_toml, load_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.orm import Session, sessionmaker

    from idp.oidc.clients import ClientInfo

__all__ = ["main"]


def _settings(config: Path | None, instance: Path | None) -> Settings:
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    if instance is not None:
        settings = dataclasses.replace(settings, instance=instance)
    return settings


_config_option = click.option(
    "--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="TOML settings file (default: $IDP_CONFIG, else none).",
)
_instance_option = click.option(
    "--instance", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Instance directory (overrides the `instance` setting).",
)


@click.group()
def main() -> None:
    """Myna Gateway: the portal's command line."""


@main.command()
@_config_option
@_instance_option
def init(config: Path | None, instance: Path | None) -> None:
    """Create the instance: database schema, CA keys and certificates. Idempotent."""
    from idp.oidc.keys import init_signing_keys  # noqa: PLC0415 - keep `idp --help` fast
    from idp.pki.service import init_pki  # noqa: PLC0415 - keep `idp --help` fast
    from idp.store.database import make_engine, upgrade  # noqa: PLC0415

    settings = _settings(config, instance)
    if settings.instance.exists() and not settings.instance.is_dir():  # named in a settings file
        raise click.ClickException(f"{settings.instance} exists and is not a directory")
    settings.instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    init_signing_keys(settings.instance)  # the OIDC token-signing keys and the pairwise secret
    created = init_pki(settings.instance, issuer_url=settings.issuer, now=SystemClock().now())
    click.echo(f"instance {settings.instance}: database up to date; "
               f"{'created the portal CAs' if created else 'CAs already present'}")


@main.command()
@_config_option
@_instance_option
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Address gunicorn listens on.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="gunicorn workers (default: 1 on the in-process store, else 2 per core + 1).")
def serve(config: Path | None, instance: Path | None, bind: str, workers: int | None) -> None:
    """Run the portal under gunicorn."""
    from gunicorn.app.base import BaseApplication  # noqa: PLC0415

    from idp.app import create_app  # noqa: PLC0415

    settings = _settings(config, instance)
    if not (settings.instance / "pki").is_dir():
        raise click.ClickException(f"{settings.instance} is not an instance: run `idp init` first")
    if workers is None:
        workers = 1 if not settings.redis_url else 2 * (os.cpu_count() or 1) + 1
    if workers > 1 and not settings.redis_url:
        raise click.ClickException("the in-process ephemeral store serves one worker only: set REDIS_URL")

    class _Portal(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", [bind])
            self.cfg.set("workers", workers)

        def load(self) -> Any:
            return create_app(settings)

    click.echo(f"Myna Gateway portal on http://{bind} (issuer {settings.issuer})")
    _Portal().run()


@main.group()
def settings() -> None:
    """Inspect settings."""


@settings.command("example")
def settings_example() -> None:
    """Print the documented example settings file (config/idp.example.toml)."""
    click.echo(example_toml(), nl=False)


# --- idp clients: the OAuth client registry ---------------------------------------------------

_CLIENT_OPTIONS = {
    "client_name": "--name",
    "redirect_uris": "--redirect-uri",
    "token_endpoint_auth_method": "--auth-method",
    "jwks": "--jwks",
    "jwks_uri": "--jwks-uri",
    "scope": "--scope",
    "id_token_signed_response_alg": "--id-token-alg",
    "sector_identifier": "--sector",
}
"""The option of ``idp clients add`` that sets each RFC 7591 metadata value, to name it in errors."""


@contextmanager
def _initialised_database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the instance's database; refuses one that ``idp init`` has not brought to head.

    Never creates a database: a missing SQLite file is refused before anything connects to it.
    """
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415 - keep `idp --help` fast

    from idp.store.database import (  # noqa: PLC0415
        current_revision,
        head_revision,
        make_engine,
        make_session_factory,
    )

    try:
        engine = make_engine(settings.effective_database_url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        if engine.dialect.name == "sqlite" and not Path(engine.url.database or "").is_file():
            raise click.ClickException(f"{settings.instance} has no database: run `idp init` first")
        try:
            current = current_revision(engine)
        except SQLAlchemyError as exc:
            raise click.ClickException(f"cannot read the database: {type(exc).__name__}") from exc
        head = head_revision()
        if current != head:
            raise click.ClickException(
                f"the database is at revision {current or 'none'}, not {head}: run `idp init` first",
            )
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _read_jwks(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"{path} is not a readable JSON file: {exc}", param_hint="--jwks") from exc


def _client_json(client: ClientInfo) -> dict[str, Any]:
    """A client in RFC 7591 §3.2.1 response terms; never a secret or its hash."""
    return {
        "client_id": client.client_id,
        "client_name": client.name,
        "redirect_uris": list(client.redirect_uris),
        "token_endpoint_auth_method": client.auth_method.value,
        "scope": " ".join(client.scopes),
        "jwks": client.jwks,
        "jwks_uri": client.jwks_uri,
        "require_pushed_authorization_requests": client.require_par,
        "id_token_signed_response_alg": client.id_token_alg.value,
        "sector_identifier": client.sector,
        "client_id_issued_at": int(client.created_at.timestamp()),
    }


@main.group()
def clients() -> None:
    """Register, list and remove the relying parties (OAuth clients)."""


@clients.command("add")
@_config_option
@_instance_option
@click.option("--name", required=True, help="The RP's name, shown on the login page and on the phone.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, required=True,
              help="An exact redirect URI: https, or http on 127.0.0.1/localhost/[::1]. Repeatable.")
@click.option("--auth-method", default="client_secret_basic", show_default=True,
              help="Token endpoint authentication: client_secret_basic or private_key_jwt.")
@click.option("--scope", "scopes", multiple=True, default=("openid",), show_default=True,
              help="A scope the client may request: openid (required), name, address, birthdate, gender, sign. "
                   "Repeatable.")
@click.option("--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSON file with the client's public JWK Set (private_key_jwt).")
@click.option("--jwks-uri", default=None, help="https URL of the client's public JWK Set (private_key_jwt).")
@click.option("--require-par", is_flag=True, help="The client must push its authorization requests (RFC 9126).")
@click.option("--id-token-alg", default="ES256", show_default=True, help="ID token signature: ES256 or RS256.")
@click.option("--sector", default=None,
              help="Host for pairwise sub values; required when the redirect URIs are on several hosts.")
@click.option("--json", "as_json", is_flag=True, help="Print the registration as JSON.")
def clients_add(
    *,
    config: Path | None,
    instance: Path | None,
    name: str,
    redirect_uris: tuple[str, ...],
    auth_method: str,
    scopes: tuple[str, ...],
    jwks_file: Path | None,
    jwks_uri: str | None,
    require_par: bool,
    id_token_alg: str,
    sector: str | None,
    as_json: bool,
) -> None:
    """Register a client and print its client_id and, this once, its secret."""
    from idp.oidc.clients import ClientRegistry, InvalidClientMetadata  # noqa: PLC0415 - keep `idp --help` fast

    settings = _settings(config, instance)
    jwks = _read_jwks(jwks_file)
    with _initialised_database(settings) as sessions:
        try:
            registered = ClientRegistry(sessions).register(
                name=name,
                redirect_uris=redirect_uris,
                auth_method=auth_method,
                scopes=scopes,
                jwks=jwks,
                jwks_uri=jwks_uri,
                require_par=require_par,
                id_token_alg=id_token_alg,
                sector=sector,
                now=SystemClock().now(),
            )
        except InvalidClientMetadata as exc:
            raise click.BadParameter(exc.message, param_hint=_CLIENT_OPTIONS.get(exc.field, exc.field)) from exc
    if as_json:
        document = _client_json(registered.client)
        if registered.client_secret is not None:
            # RFC 7591 §3.2.1: client_secret_expires_at is required with a secret; 0 means never.
            document |= {"client_secret": registered.client_secret, "client_secret_expires_at": 0}
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    click.echo(f"client_id: {registered.client.client_id}")
    if registered.client_secret is not None:
        click.echo(f"client_secret: {registered.client_secret}")
        click.echo("Store the secret now: it is not shown again, and the portal keeps only its hash.", err=True)


@clients.command("list")
@_config_option
@_instance_option
@click.option("--json", "as_json", is_flag=True, help="Print the clients as a JSON array.")
def clients_list(config: Path | None, instance: Path | None, as_json: bool) -> None:
    """List the registered clients, oldest first; never shows a secret."""
    from idp.oidc.clients import ClientRegistry  # noqa: PLC0415 - keep `idp --help` fast

    with _initialised_database(_settings(config, instance)) as sessions:
        registered = ClientRegistry(sessions).list()
    if as_json:
        click.echo(json.dumps([_client_json(client) for client in registered], indent=2, ensure_ascii=False))
        return
    if not registered:
        click.echo("no clients registered")
    for client in registered:
        click.echo("\t".join([
            client.client_id, client.auth_method.value, " ".join(client.scopes), client.name,
            " ".join(client.redirect_uris),
        ]))


@clients.command("remove")
@_config_option
@_instance_option
@click.argument("client_id")
def clients_remove(config: Path | None, instance: Path | None, client_id: str) -> None:
    """Remove a client: it can no longer log anyone in or redeem codes and tokens."""
    from idp.oidc.clients import ClientRegistry  # noqa: PLC0415 - keep `idp --help` fast

    with _initialised_database(_settings(config, instance)) as sessions:
        removed = ClientRegistry(sessions).remove(client_id)
    if not removed:
        raise click.ClickException(f"no client {client_id!r} is registered")
    click.echo(f"removed client {client_id}")


# --- idp pki: J-LIS revocation information ----------------------------------------------------


@main.group()
def pki() -> None:
    """The portal's view of other PKIs: the J-LIS CRLs that card certificates are checked against."""


@pki.command("sync-revocations")
@_config_option
@_instance_option
def pki_sync_revocations(config: Path | None, instance: Path | None) -> None:
    """Fetch, verify and store the CRLs of the configured J-LIS CAs, then revoke the smartphone
    certificates issued from any revoked card certificate; exit 1 if a CRL could not be stored."""
    from idp.ceremonies.card_revocations import revoke_phones_of_revoked_cards  # noqa: PLC0415
    from idp.ceremonies.devices import SqlDeviceDirectory  # noqa: PLC0415
    from idp.ceremonies.enrollment_service import load_certificates  # noqa: PLC0415 - keep `idp --help` fast
    from idp.ceremonies.revocation_cache import HttpRevocationFetcher, JlisRevocationCache  # noqa: PLC0415
    from idp.oidc.provider import OidcProvider  # noqa: PLC0415
    from idp.pki.service import PortalPki  # noqa: PLC0415
    from idp.store.ephemeral import open_ephemeral_store  # noqa: PLC0415

    settings = _settings(config, instance)
    try:
        authorities = load_certificates((*settings.pki.jlis_roots, *settings.pki.jlis_intermediates))
    except (OSError, ValueError) as exc:
        raise click.ClickException(
            f"cannot read the J-LIS certificates (pki.jlis_roots, pki.jlis_intermediates): {exc}",
        ) from exc
    if not authorities:
        raise click.ClickException("no J-LIS certificate is configured: set pki.jlis_roots and pki.jlis_intermediates")
    with _initialised_database(settings) as sessions:
        cache = JlisRevocationCache(
            sessions,
            authorities=authorities,
            extra_crl_urls=settings.pki.jlis_crl_urls,
            fetcher=HttpRevocationFetcher(timeout=settings.pki.jlis_fetch_timeout),
        )
        outcomes = cache.sync(now=SystemClock().now())
        cascaded = revoke_phones_of_revoked_cards(
            crls=cache.crls(), pki=PortalPki(settings=settings, sessions=sessions, clock=SystemClock()),
        )
        # The same rule as a phone's self-revocation: what its devices approved stops working.
        oidc = OidcProvider(settings=settings, clock=SystemClock(), sessions=sessions,
                            ephemeral=open_ephemeral_store(settings.redis_url))
        devices = SqlDeviceDirectory(sessions).holding({status.serial_number for status in cascaded})
        grants = sum(oidc.revoke_device_grants(device_id) for device_id in devices)
    if not outcomes:
        raise click.ClickException("the configured J-LIS certificates name no CRL: set pki.jlis_crl_urls")
    failed = [outcome for outcome in outcomes if outcome.refused is not None]
    for outcome in outcomes:
        if outcome.refused is not None:
            click.echo(f"refused {outcome.url}: {outcome.refused} ({outcome.refused.reason.value})", err=True)
            continue
        state = "stored" if outcome.stored else "unchanged"
        next_update = outcome.next_update.isoformat() if outcome.next_update else "?"
        click.echo(f"{state} {outcome.url}: CRL number {outcome.number} from {outcome.issuer}, "
                   f"next update {next_update}")
    click.echo(f"revoked {len(cascaded)} smartphone certificates issued from revoked card certificates, "
               f"and {grants} grants issued on their devices")
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(outcomes)} CRLs could not be stored")
