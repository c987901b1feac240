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
    from idp.store.key_files import KeyFileError, plain_key_files  # noqa: PLC0415

    settings = _settings(config, instance)
    kek = _kek()  # with a KEK, every private key written here is sealed under it
    if settings.instance.exists() and not settings.instance.is_dir():  # named in a settings file
        raise click.ClickException(f"{settings.instance} exists and is not a directory")
    settings.instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    try:
        init_signing_keys(settings.instance, kek=kek)  # the OIDC token-signing keys and the pairwise secret
        created = init_pki(settings.instance, issuer_url=settings.issuer, now=SystemClock().now(), kek=kek)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"instance {settings.instance}: database up to date; "
               f"{'created the portal CAs' if created else 'CAs already present'}")
    plain = plain_key_files(settings.instance)
    if kek is not None and plain:
        click.echo(f"{len(plain)} key files are not sealed ({', '.join(map(str, plain))}): run `idp keys encrypt`",
                   err=True)


def _kek() -> bytes | None:
    """The key-encryption key from IDP_KEK / IDP_KEK_FILE (``idp.store.key_files``); None when unset."""
    from idp.store.key_files import KeyEncryptionKeyError, kek_from_environment  # noqa: PLC0415

    try:
        return kek_from_environment()
    except KeyEncryptionKeyError as exc:
        raise click.ClickException(str(exc)) from exc


def _open_keys(settings: Settings, kek: bytes | None) -> None:
    """Open every private key of the instance as the portal will, so that a missing or wrong KEK
    stops ``idp serve`` (or ``idp keys encrypt``) here, naming the file, before anything happens."""
    from idp.oidc.keys import KeyEncryptionKeyError, KeyStore, SigningKeysMissing  # noqa: PLC0415
    from idp.pki.service import PkiSetupError, open_pki_keys  # noqa: PLC0415
    from idp.store.key_files import KeyFileError  # noqa: PLC0415

    try:
        open_pki_keys(settings.instance, kek=kek)
        KeyStore(settings.instance, kek=kek)
    except KeyEncryptionKeyError as exc:
        raise click.ClickException(str(exc)) from exc
    except SigningKeysMissing:
        pass  # an instance without token-signing keys still serves its PKI; /readyz reports it
    except (PkiSetupError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from exc


GUNICORN_CONFIG = Path(__file__).resolve().parents[1] / "config" / "gunicorn.conf.py"
"""The one gunicorn configuration, shared with the container image (``Dockerfile``)."""


@main.command()
@_config_option
@_instance_option
@click.option("--bind", default=None,
              help="Address gunicorn listens on (default: $GUNICORN_BIND, else 127.0.0.1:8000).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="gunicorn workers (default: 1 on the in-process store, else $GUNICORN_WORKERS or 2 per CPU + 1).")
@click.option("--gunicorn-config", type=click.Path(dir_okay=False, path_type=Path), default=GUNICORN_CONFIG,
              show_default=True, help="The gunicorn configuration file.")
def serve(config: Path | None, instance: Path | None, bind: str | None, workers: int | None,
          gunicorn_config: Path) -> None:
    """Run the portal under gunicorn, configured by config/gunicorn.conf.py (GUNICORN_* variables)."""
    from gunicorn.app.base import Application  # noqa: PLC0415

    settings = _settings(config, instance)
    if not (settings.instance / "pki").is_dir():
        raise click.ClickException(f"{settings.instance} is not an instance: run `idp init` first")
    if workers is not None and workers > 1 and not settings.redis_url:
        raise click.ClickException("the in-process ephemeral store serves one worker only: set REDIS_URL")
    if not gunicorn_config.is_file():
        raise click.ClickException(f"{gunicorn_config} does not exist: pass --gunicorn-config")
    # Before gunicorn's configuration names the metrics directory: the key check must not import
    # prometheus_client, which picks single- or multi-process values when first imported.
    _open_keys(settings, _kek())
    if config is not None:
        os.environ["IDP_CONFIG"] = str(config.resolve())  # the gunicorn configuration reads the same settings

    class _Portal(Application):  # type: ignore[misc] # gunicorn is untyped
        def init(self, parser: object, opts: object, args: object) -> None:
            """No command line of its own: click has read it."""

        def load_config(self) -> None:
            self.load_config_from_file(str(gunicorn_config))
            if bind is not None:
                self.cfg.set("bind", [bind])
            if workers is not None:
                self.cfg.set("workers", workers)

        def load(self) -> Any:
            from idp.app import create_app  # noqa: PLC0415 - in the worker, after the metrics directory is set

            return create_app(settings)

    portal = _Portal()
    click.echo(f"Myna Gateway portal on http://{portal.cfg.bind[0]} (issuer {settings.issuer})")
    portal.run()


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
    "post_logout_redirect_uris": "--post-logout-redirect-uri",
    "webhook_url": "--webhook-url",
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
    """A client in RFC 7591 §3.2.1 response terms; never a secret or its hash.

    ``post_logout_redirect_uris`` (RP-Initiated Logout 1.0 §3.1) only when some are registered.
    """
    logout = {"post_logout_redirect_uris": list(client.post_logout_redirect_uris)}
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
    } | (logout if client.post_logout_redirect_uris else {})


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
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True,
              help="Where logout (the end_session endpoint) may return the browser: an exact URI, https or "
                   "loopback http. Repeatable.")
@click.option("--webhook-url", default=None,
              help="Where signing requests' outcomes are posted (docs/signing.md, Webhooks): https, or http on "
                   "a loopback host. Prints the webhook secret once.")
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
    post_logout_redirect_uris: tuple[str, ...],
    webhook_url: str | None,
    as_json: bool,
) -> None:
    """Register a client and print its client_id and, this once, its secret (and webhook secret)."""
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
                post_logout_redirect_uris=post_logout_redirect_uris,
                webhook_url=webhook_url,
                now=SystemClock().now(),
            )
        except InvalidClientMetadata as exc:
            raise click.BadParameter(exc.message, param_hint=_CLIENT_OPTIONS.get(exc.field, exc.field)) from exc
    if as_json:
        document = _client_json(registered.client)
        if registered.client_secret is not None:
            # RFC 7591 §3.2.1: client_secret_expires_at is required with a secret; 0 means never.
            document |= {"client_secret": registered.client_secret, "client_secret_expires_at": 0}
        if registered.webhook_secret is not None:
            document |= {"webhook_url": webhook_url, "webhook_secret": registered.webhook_secret}
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    click.echo(f"client_id: {registered.client.client_id}")
    if registered.client_secret is not None:
        click.echo(f"client_secret: {registered.client_secret}")
        click.echo("Store the secret now: it is not shown again, and the portal keeps only its hash.", err=True)
    if registered.webhook_secret is not None:
        click.echo(f"webhook_secret: {registered.webhook_secret}")
        click.echo("Store the webhook secret now: it is not shown again.", err=True)


@clients.command("list")
@_config_option
@_instance_option
@click.option("--json", "as_json", is_flag=True, help="Print the clients as a JSON array.")
def clients_list(config: Path | None, instance: Path | None, as_json: bool) -> None:
    """List the registered clients, oldest first (a last column names a client's webhook); never shows a secret."""
    from idp.oidc.clients import ClientRegistry  # noqa: PLC0415 - keep `idp --help` fast
    from idp.webhooks import WebhookRegistry  # noqa: PLC0415

    with _initialised_database(_settings(config, instance)) as sessions:
        registered = ClientRegistry(sessions).list()
        webhooks = WebhookRegistry(sessions).urls()
    if as_json:
        click.echo(json.dumps([  # webhook_url only when the client has a webhook
            _client_json(client) | ({"webhook_url": webhooks[client.client_id]} if client.client_id in webhooks else {})
            for client in registered
        ], indent=2, ensure_ascii=False))
        return
    if not registered:
        click.echo("no clients registered")
    for client in registered:
        click.echo("\t".join([
            client.client_id, client.auth_method.value, " ".join(client.scopes), client.name,
            " ".join(client.redirect_uris),
            *([f"webhook {webhooks[client.client_id]}"] if client.client_id in webhooks else []),
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


@clients.command("webhook")
@_config_option
@_instance_option
@click.argument("client_id")
@click.option("--url", default=None, help="Set (or change) the webhook URL: https, or http on a loopback host.")
@click.option("--remove", is_flag=True, help="Remove the client's webhook.")
def clients_webhook(config: Path | None, instance: Path | None, client_id: str, url: str | None, remove: bool) -> None:
    """Set a client's webhook with a new secret (printed once; the old one stops working), or remove it."""
    from idp.webhooks import InvalidWebhookUrl, WebhookRegistry  # noqa: PLC0415 - keep `idp --help` fast

    if (url is None) == (not remove):
        raise click.UsageError("give --url URL or --remove")
    with _initialised_database(_settings(config, instance)) as sessions:
        webhooks = WebhookRegistry(sessions)
        if remove:
            if not webhooks.remove(client_id):
                raise click.ClickException(f"client {client_id!r} has no webhook")
            click.echo(f"removed the webhook of client {client_id}")
            return
        try:
            secret = webhooks.set(client_id, url or "", now=SystemClock().now())
        except InvalidWebhookUrl as exc:
            raise click.BadParameter(str(exc), param_hint="--url") from exc
    if secret is None:
        raise click.ClickException(f"no client {client_id!r} is registered")
    click.echo(f"webhook_secret: {secret}")
    click.echo("Store the webhook secret now: it is not shown again.", err=True)


# --- idp pki: J-LIS revocation information ----------------------------------------------------


@main.group()
def pki() -> None:
    """The portal's view of other PKIs: the J-LIS CRLs card certificates are checked against, and
    the J-LIS linking data that keeps a person one person across card certificates."""


@pki.command("sync")
@_config_option
@_instance_option
def pki_sync(config: Path | None, instance: Path | None) -> None:
    """Fetch, verify and store the CRLs of the configured J-LIS CAs, revoke the smartphone
    certificates issued from any revoked card certificate, then read the J-LIS linking data
    (pki.jlis_linking_url); exit 1 if a CRL or a linking feed page could not be stored."""
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
                            ephemeral=open_ephemeral_store(settings.redis_url, prefix=settings.redis_prefix))
        devices = SqlDeviceDirectory(sessions).holding({status.serial_number for status in cascaded})
        grants = sum(oidc.revoke_device_grants(device_id) for device_id in devices)
        linking_refused = _sync_linking(settings, sessions, crls=cache.crls())
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
    if linking_refused:
        raise click.ClickException("the J-LIS linking data could not be stored")


pki.add_command(pki_sync, name="sync-revocations")  # the name before linking data joined the sync


def _sync_linking(settings: Settings, sessions: sessionmaker[Session], *, crls: tuple[bytes, ...]) -> bool:
    """Read the J-LIS linking-data feed into the database (``idp.ceremonies.linking``); print what
    happened and return True when a page was refused. Nothing to do without pki.jlis_linking_url."""
    from idp.ceremonies.enrollment_service import load_certificates  # noqa: PLC0415 - keep `idp --help` fast
    from idp.ceremonies.linking import HttpLinkingFetcher, LinkingRefused, LinkingStore, sync_linking  # noqa: PLC0415

    url = settings.pki.jlis_linking_url
    if not url:
        return False
    try:
        result = sync_linking(
            url=url, fetcher=HttpLinkingFetcher(timeout=settings.pki.jlis_fetch_timeout),
            store=LinkingStore(sessions), roots=load_certificates(settings.pki.jlis_roots), crls=crls,
            now=SystemClock().now(),
        )
    except LinkingRefused as exc:
        click.echo(f"refused linking data from {url}: {exc} ({exc.reason.value})", err=True)
        return True
    click.echo(f"linking data from {url}: {result.links} links read, {result.attached} certificates "
               f"attached to persons, cursor at {result.cursor}")
    return False


# --- idp persons: who a person is, for an operator ---------------------------------------------


@main.group()
def persons() -> None:
    """Persons: the card certificates and J-LIS links that make one person (never their attributes)."""


@persons.command("show")
@_config_option
@_instance_option
@click.argument("person_id")
def persons_show(config: Path | None, instance: Path | None, person_id: str) -> None:
    """Explain which card certificates make up PERSON_ID and which J-LIS links tie them together.

    Prints issuers, serials, validity and how each certificate was tied to the person; never a
    name, address, date of birth or sex.
    """
    from idp.ceremonies.linking import LinkingStore  # noqa: PLC0415 - keep `idp --help` fast

    settings = _settings(config, instance)
    with _initialised_database(settings) as sessions:
        person = LinkingStore(sessions).person(person_id)
    if person is None:
        raise click.ClickException(f"no person {person_id!r} holds a card certificate")
    names = _jlis_names(settings)
    click.echo(f"person {person.person_id}: {len(person.certificates)} card certificates")
    for row in person.certificates:
        issuer = names.get(row.issuer_key_id, row.issuer_key_id.hex())
        click.echo(f"  {row.kind:<4} serial {int(row.serial):x} from {issuer}, until {row.not_after.isoformat()}; "
                   f"{row.linked_by} at {row.linked_at.isoformat()}")
    click.echo(f"J-LIS links naming them: {len(person.links)}")
    for link in person.links:
        first, second = int(link.first_serial), int(link.second_serial)
        if link.kind == "successor":
            click.echo(f"  #{link.seq} {link.first_kind} {first:x} succeeded by {second:x} ({link.reason})")
        else:
            click.echo(f"  #{link.seq} same person: auth {first:x} and sign {second:x}")


def _jlis_names(settings: Settings) -> dict[bytes, str]:
    """The configured J-LIS CAs' names by subject key identifier, to name a certificate's issuer."""
    from cryptography import x509  # noqa: PLC0415 - keep `idp --help` fast

    from idp.ceremonies.enrollment_service import load_certificates  # noqa: PLC0415

    try:
        authorities = load_certificates((*settings.pki.jlis_roots, *settings.pki.jlis_intermediates))
    except (OSError, ValueError):
        return {}
    return {
        x509.SubjectKeyIdentifier.from_public_key(authority.public_key()).digest: authority.subject.rfc4514_string()
        for authority in authorities
    }


# --- idp phones: a lost phone suspended, a found one resumed, by an operator ------------------------


@main.group()
def phones() -> None:
    """Phones: suspend a lost phone (both certificates on hold) and resume it when found."""


@contextmanager
def _phone_life(settings: Settings) -> Iterator[Any]:
    """``idp.ceremonies.phone_life.PhoneLife`` on the instance's database, revoking grants as the portal does."""
    from idp.ceremonies.phone_life import PhoneLife  # noqa: PLC0415 - keep `idp --help` fast
    from idp.oidc.provider import OidcProvider  # noqa: PLC0415
    from idp.pki.service import PortalPki  # noqa: PLC0415
    from idp.store.ephemeral import open_ephemeral_store  # noqa: PLC0415

    with _initialised_database(settings) as sessions:
        clock = SystemClock()
        oidc = OidcProvider(settings=settings, clock=clock, sessions=sessions,
                            ephemeral=open_ephemeral_store(settings.redis_url, prefix=settings.redis_prefix))
        yield PhoneLife(sessions=sessions, pki=PortalPki(settings=settings, sessions=sessions, clock=clock),
                        clock=clock, revoke_grants=oidc.revoke_device_grants)


@phones.command("suspend")
@_config_option
@_instance_option
@click.argument("device_id")
def phones_suspend(config: Path | None, instance: Path | None, device_id: str) -> None:
    """Suspend the lost phone DEVICE_ID: its two certificates go on hold (certificateHold) and the
    grants issued on its logins are revoked."""
    from idp.web.problems import Problem  # noqa: PLC0415 - keep `idp --help` fast

    with _phone_life(_settings(config, instance)) as life:
        try:
            life.suspend(device_id, actor="operator")
        except Problem as exc:
            raise click.ClickException(f"{device_id}: {exc.title}") from exc
    click.echo(f"suspended {device_id}: both certificates on hold, its grants revoked")


@phones.command("resume")
@_config_option
@_instance_option
@click.argument("device_id")
def phones_resume(config: Path | None, instance: Path | None, device_id: str) -> None:
    """Resume the found phone DEVICE_ID: its user-authentication certificate is good again; its
    signature certificate is revoked (superseded) and the phone enrolls a new signature key."""
    from idp.web.problems import Problem  # noqa: PLC0415 - keep `idp --help` fast

    with _phone_life(_settings(config, instance)) as life:
        try:
            life.resume(device_id, actor="operator")
        except Problem as exc:
            raise click.ClickException(f"{device_id}: {exc.title}") from exc
    click.echo(f"resumed {device_id}: user-authentication certificate good again; enroll a new signature key")


@main.command("verify")
@_config_option
@_instance_option
@click.option("--signature", "signature_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A detached CAdES signature (DER), with --document or --digest.")
@click.option("--pdf", "pdf_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A signed PDF (PAdES).")
@click.option("--assertion", "assertion_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A signed-document assertion (compact JWS), optionally with --document.")
@click.option("--document", "document_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The signed document.")
@click.option("--digest", default=None, help="The signed document's SHA-256, 64 hex digits (instead of --document).")
@click.option("--root", "root_files", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="PEM trust root (repeatable); default: the instance's portal root. Needs no portal running.")
@click.option("--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The portal's published JWK Set for --assertion; default: the instance's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def verify(
    *,
    config: Path | None,
    instance: Path | None,
    signature_file: Path | None,
    pdf_file: Path | None,
    assertion_file: Path | None,
    document_file: Path | None,
    digest: str | None,
    root_files: tuple[Path, ...],
    jwks_file: Path | None,
    as_json: bool,
) -> None:
    """Verify a detached signature, a signed PDF or an assertion, offline; exit 1 when invalid.

    Prints `valid` or `invalid: <reason>` (the reasons are in docs/signing.md).
    """
    from idp.signing.cli import run_verify  # noqa: PLC0415 - keep `idp --help` fast

    verdict = run_verify(
        settings=_settings(config, instance), signature_file=signature_file, pdf_file=pdf_file,
        assertion_file=assertion_file, document_file=document_file, digest=digest, root_files=root_files,
        jwks_file=jwks_file,
    )
    if as_json:
        click.echo(json.dumps(verdict.to_json(), ensure_ascii=False, indent=2))
    elif verdict.valid:
        signed_at = f", signed at {verdict.signing_time.isoformat()}" if verdict.signing_time else ""
        click.echo(f"valid{signed_at}")
    else:
        click.echo(f"invalid: {verdict.reason.value if verdict.reason else 'unknown'} ({verdict.detail})")
    if not verdict.valid:
        raise SystemExit(1)


# --- idp audit: the tamper-evident audit log --------------------------------------------------


@main.group()
def audit() -> None:
    """The audit log: check its hash chain, export its records (docs/audit.md)."""


@audit.command("verify")
@_config_option
@_instance_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def audit_verify(config: Path | None, instance: Path | None, as_json: bool) -> None:
    """Check the chain from record 1 to the head; exit 1 naming the first broken link.

    Prints `intact: N records, head H` or `broken at record N: <reason> (<why>)`.
    """
    from idp.audit import AuditLog  # noqa: PLC0415 - keep `idp --help` fast

    with _initialised_database(_settings(config, instance)) as sessions:
        report = AuditLog(sessions, clock=SystemClock()).verify()
    if as_json:
        click.echo(json.dumps(report.to_json(), sort_keys=True))
    elif report.broken is None:
        head = report.head.hash if report.head is not None and report.count else "none"
        click.echo(f"intact: {report.count} records, head {head}")
    else:
        click.echo(f"broken at record {report.broken.seq}: {report.broken.reason.value} ({report.broken.message})")
    if not report.intact:
        raise SystemExit(1)


@audit.command("export")
@_config_option
@_instance_option
@click.option("--since", "since", type=click.IntRange(min=0), default=0, show_default=True, metavar="SEQ",
              help="Write only the records numbered above SEQ (the last one you already have).")
def audit_export(config: Path | None, instance: Path | None, since: int) -> None:
    """Write the audit records as JSON lines, oldest first, to standard output."""
    from idp.audit import AuditLog  # noqa: PLC0415 - keep `idp --help` fast

    with _initialised_database(_settings(config, instance)) as sessions:
        for entry in AuditLog(sessions, clock=SystemClock()).export(after=since):
            click.echo(json.dumps(entry.to_json(), sort_keys=True, separators=(",", ":")))


# --- idp keys: token-signing key rotation -----------------------------------------------------


@main.group()
def keys() -> None:
    """The portal's keys: list and rotate the token-signing keys, seal every key with the KEK
    (docs/operations.md, "Key rotation")."""


@keys.command("rotate")
@_config_option
@_instance_option
@click.option("--alg", default="ES256", show_default=True, type=click.Choice(["ES256", "RS256"]),
              help="The algorithm whose key to rotate.")
def keys_rotate(config: Path | None, instance: Path | None, alg: str) -> None:
    """Publish a new key now; it signs after `oidc.key_rotation_overlap`, the old key then stays
    published until the ID tokens it signed have expired. Sealed with the KEK when one is set.
    Retired keys lose their private file (their public key stays for verifying assertions)."""
    from idp.audit import AuditEvent, AuditLog  # noqa: PLC0415 - keep `idp --help` fast
    from idp.oidc.keys import (  # noqa: PLC0415
        RotationRefused,
        SigningKeysMissing,
        kek_from_environment,
        rotate_signing_key,
    )

    settings = _settings(config, instance)
    clock = SystemClock()
    if (settings.instance / "pki").is_dir():  # one KEK per instance: the CA keys must open with it too
        _open_keys(settings, _kek())
    with _initialised_database(settings) as sessions:
        try:
            added = rotate_signing_key(settings.instance, alg=alg, now=clock.now(),
                                       overlap=settings.oidc.key_rotation_overlap, kek=kek_from_environment(),
                                       retire_after=settings.oidc.id_token_lifetime)
        except (RotationRefused, SigningKeysMissing) as exc:
            raise click.ClickException(str(exc)) from exc
        AuditLog(sessions, clock=clock).append(
            AuditEvent.KEY_ROTATED, actor="operator", subject=f"key:{added.kid}",
            details={"kid": added.kid, "purpose": "token-signing"},
        )
    sealed = "sealed with the KEK" if added.encrypted else "plain (no KEK set)"
    click.echo(f"published {alg} key {added.kid} ({sealed}); it signs from {added.signs_from.isoformat()}")


@keys.command("encrypt")
@_config_option
@_instance_option
def keys_encrypt(config: Path | None, instance: Path | None) -> None:
    """Seal every plain private key of the instance (token-signing keys, pairwise secret, CA and
    timestamping keys) with the KEK from IDP_KEK or IDP_KEK_FILE. Atomic per file; idempotent."""
    from idp.oidc.keys import SigningKeysMissing, seal_signing_keys  # noqa: PLC0415 - keep `idp --help` fast
    from idp.pki.service import PkiSetupError, seal_pki_keys  # noqa: PLC0415
    from idp.store.key_files import KeyFileError  # noqa: PLC0415

    settings = _settings(config, instance)
    kek = _kek()
    if kek is None:
        raise click.ClickException("no key-encryption key: set IDP_KEK or IDP_KEK_FILE")
    if not (settings.instance / "pki").is_dir():
        raise click.ClickException(f"{settings.instance} is not an instance: run `idp init` first")
    _open_keys(settings, kek)  # every sealed key opens with this KEK: one KEK per instance, checked first
    try:
        sealed = [*seal_pki_keys(settings.instance, kek=kek), *seal_signing_keys(settings.instance, kek=kek)]
    except (SigningKeysMissing, PkiSetupError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not sealed:
        click.echo("every key is sealed already; nothing to do")
        return
    for name in sealed:
        click.echo(f"sealed {name}")
    click.echo(f"{len(sealed)} key files sealed with the KEK; back up the instance directory again")


@keys.command("list")
@_config_option
@_instance_option
@click.option("--json", "as_json", is_flag=True, help="Print the keys as a JSON array.")
def keys_list(config: Path | None, instance: Path | None, as_json: bool) -> None:
    """Show each key: kid, alg, state (next, current, previous, retired) and its times."""
    from idp.oidc.keys import SigningKeysMissing, key_statuses, managed_keys  # noqa: PLC0415

    settings = _settings(config, instance)
    try:
        statuses = key_statuses(managed_keys(settings.instance), now=SystemClock().now(),
                                retire_after=settings.oidc.id_token_lifetime)
    except SigningKeysMissing as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [
        {
            "kid": status.key.kid, "alg": status.key.alg, "state": status.state.value,
            "published_at": status.key.published_at.isoformat(), "signs_from": status.key.signs_from.isoformat(),
            "stopped_at": status.stopped_at.isoformat() if status.stopped_at else None,
            "retires_at": status.retires_at.isoformat() if status.retires_at else None,
            "encrypted": status.key.encrypted,
        }
        for status in statuses
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        until = f" retires {row['retires_at']}" if row["retires_at"] else ""
        click.echo(f"{row['alg']} {row['kid']} {row['state']} published {row['published_at']} "
                   f"signs from {row['signs_from']}{until}{' sealed' if row['encrypted'] else ''}")


# --- idp webhooks: delivering signing events to clients' webhooks -----------------------------


@main.group()
def webhooks() -> None:
    """Deliver signing requests' outcomes to clients' webhooks (docs/signing.md, "Webhooks")."""


@webhooks.command("run")
@_config_option
@_instance_option
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between rounds.")
def webhooks_run(config: Path | None, instance: Path | None, once: bool, interval: float) -> None:
    """Post due events, retrying failures with back-off; several may run against one database."""
    import logging.config  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415
    from datetime import timedelta  # noqa: PLC0415

    from idp.ops.logging import logging_config  # noqa: PLC0415
    from idp.webhooks import Dispatcher, HttpSender, WebhookOutbox  # noqa: PLC0415

    settings = _settings(config, instance)
    with _initialised_database(settings) as sessions:
        logging.config.dictConfig(logging_config(json_logs=settings.ops.json_logs))
        outbox = WebhookOutbox.of(sessions, settings)
        dispatcher = Dispatcher(sessions, outbox=outbox, sender=HttpSender(), clock=SystemClock())
        if once:
            tally = dispatcher.run_once()
            click.echo(f"delivered {tally.delivered}, retrying {tally.retrying}, failed {tally.failed}")
            return
        stop = threading.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda _signum, _frame: stop.set())
        dispatcher.run(interval=timedelta(seconds=interval), stop=stop)


@webhooks.command("list")
@_config_option
@_instance_option
@click.option("--json", "as_json", is_flag=True, help="Print the deliveries as a JSON array.")
def webhooks_list(config: Path | None, instance: Path | None, as_json: bool) -> None:
    """The deliveries not yet delivered (pending, sending, failed), oldest due first."""
    from idp.webhooks import WebhookOutbox  # noqa: PLC0415

    settings = _settings(config, instance)
    with _initialised_database(settings) as sessions:
        rows = WebhookOutbox.of(sessions, settings).undelivered()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("nothing pending or failed")
    for row in rows:
        click.echo("\t".join([row["delivery_id"], row["client_id"], row["type"], row["status"],
                              f"attempts {row['attempts']}", f"due {row['due_at']}", row["last_error"] or "-"]))


@webhooks.command("retry")
@_config_option
@_instance_option
@click.argument("delivery_id")
def webhooks_retry(config: Path | None, instance: Path | None, delivery_id: str) -> None:
    """Put a failed delivery back, due now, with a fresh retry schedule."""
    from idp.webhooks import WebhookOutbox  # noqa: PLC0415

    settings = _settings(config, instance)
    with _initialised_database(settings) as sessions:
        requeued = WebhookOutbox.of(sessions, settings).requeue(
            delivery_id, now=SystemClock().now(),
        )
    if not requeued:
        raise click.ClickException(f"no failed delivery {delivery_id!r}")
    click.echo(f"{delivery_id} is due again")
