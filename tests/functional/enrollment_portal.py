"""A portal and a J-LIS on loopback ports (werkzeug ``make_server`` in threads) for the enrollment tests.

The simulated world (J-LIS, a card, an SE vendor and a phone) lives in a ``smartphone`` state
directory; the portal trusts that J-LIS and that vendor through its settings, as an operator
would configure it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from idp.app import create_app
from idp.ceremonies.card_revocations import revoke_phones_of_revoked_cards
from idp.ceremonies.devices import SqlDeviceDirectory
from idp.ceremonies.enrollment_service import load_certificates
from idp.ceremonies.revocation_cache import HttpRevocationFetcher, JlisRevocationCache
from idp.clock import FixedClock, SystemClock
from idp.oidc.keys import init_signing_keys
from idp.oidc.provider import OidcProvider
from idp.pki.attributes import BasicAttributes, Sex
from idp.pki.service import PortalPki, init_pki
from idp.settings import DeviceSettings, LimitsSettings, PkiSettings, Settings
from idp.store.database import make_engine, make_session_factory, upgrade
from idp.store.ephemeral import open_ephemeral_store
from smartphone.jlis_server import create_jlis_app
from smartphone.state import State

PASSPHRASE = b"enrollment test passphrase"
AUTH_PIN = "1234"
SIGN_PIN = "TARO2024"
TARO = BasicAttributes(
    name="山田　太郎", address="東京都千代田区永田町1-7-1", date_of_birth=date(1990, 4, 1), sex=Sex.MALE,
)


class LateApp:
    """A WSGI app set after the server is bound, so that its URL can go into its own settings."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@contextmanager
def serving(app: LateApp) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@dataclass
class World:
    """The simulated J-LIS (served), a card ``taro`` and a phone ``pixel`` in ``state``."""

    state: State
    jlis_url: str
    vendor_root: Path
    cards: list[str] = field(default_factory=list)

    @property
    def jlis_certificates(self) -> tuple[Path, Path, Path]:
        directory = self.state.jlis_dir
        return directory / "jlis-root.crt", directory / "jlis-auth-ca.crt", directory / "jlis-sign-ca.crt"

    def pki_settings(self) -> PkiSettings:
        root, auth_ca, sign_ca = self.jlis_certificates
        return PkiSettings(
            jlis_roots=(root,),
            jlis_intermediates=(auth_ca, sign_ca),
            jlis_crl_urls=(f"{self.jlis_url}/crl/jlis-auth-ca.crl", f"{self.jlis_url}/crl/jlis-sign-ca.crl"),
            attestation_roots=(self.vendor_root,),
            jlis_fetch_timeout=timedelta(seconds=2),
        )

    def issue_card(self, name: str, attributes: BasicAttributes = TARO) -> None:
        card = self.state.load_jlis().issue_card(
            attributes=attributes, prefecture="東京都", city="千代田区", auth_pin=AUTH_PIN, sign_pin=SIGN_PIN,
            now=datetime.now(UTC) - timedelta(hours=1),
        )
        self.state.add_card(name, card)

    def add_phone(self, name: str) -> None:
        vendor = self.state.vendor("MynaDevices", model=None, now=datetime.now(UTC) - timedelta(days=1))
        self.state.add_phone(name, vendor=vendor)


@contextmanager
def simulated_world(directory: Path) -> Iterator[World]:
    """J-LIS served on a loopback port, with card ``taro`` and phone ``pixel``."""
    late = LateApp()
    with serving(late) as jlis_url:
        state = State(directory, PASSPHRASE)
        state.create_jlis(base_url=jlis_url, now=datetime.now(UTC) - timedelta(days=2))
        late.app = create_jlis_app(directory, passphrase=PASSPHRASE)
        world = World(state=state, jlis_url=jlis_url, vendor_root=directory / "vendors" / "MynaDevices" / "root.crt")
        world.issue_card("taro")
        world.add_phone("pixel")
        yield world


@dataclass
class Portal:
    url: str
    settings: Settings
    app: Flask


def sync_revocations(settings: Settings) -> None:
    """What ``idp pki sync-revocations`` does (fetch the J-LIS CRLs, cascade to phones and their grants),
    for a test's portal."""
    engine = make_engine(settings.effective_database_url)
    try:
        cache = JlisRevocationCache(
            make_session_factory(engine),
            authorities=load_certificates((*settings.pki.jlis_roots, *settings.pki.jlis_intermediates)),
            extra_crl_urls=settings.pki.jlis_crl_urls,
            fetcher=HttpRevocationFetcher(timeout=timedelta(seconds=5)),
        )
        outcomes = cache.sync(now=datetime.now(UTC))
        sessions = make_session_factory(engine)
        pki = PortalPki(settings=settings, sessions=sessions, clock=SystemClock())
        cascaded = revoke_phones_of_revoked_cards(crls=cache.crls(), pki=pki)
        oidc = OidcProvider(settings=settings, clock=SystemClock(), sessions=sessions,
                            ephemeral=open_ephemeral_store(settings.redis_url, prefix=settings.redis_prefix))
        for device_id in SqlDeviceDirectory(sessions).holding({status.serial_number for status in cascaded}):
            oidc.revoke_device_grants(device_id)
    finally:
        engine.dispose()
    assert all(outcome.refused is None for outcome in outcomes), outcomes


@contextmanager
def running_portal(
    world: World, instance: Path, *, database_url: str = "", redis_url: str = "", redis_prefix: str = "myna:",
    enrollment_ttl: timedelta = timedelta(minutes=5), clock: Any = None, limits: LimitsSettings | None = None,
) -> Iterator[Portal]:
    """The portal on a loopback port, trusting ``world``, with its J-LIS CRLs synced."""
    late = LateApp()
    with serving(late) as url:
        settings = Settings(
            issuer=url, instance=instance, database_url=database_url, redis_url=redis_url, redis_prefix=redis_prefix,
            pki=world.pki_settings(), device=DeviceSettings(enrollment_ttl=enrollment_ttl),
            limits=limits or LimitsSettings(),
        )
        instance.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.effective_database_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        init_pki(instance, issuer_url=url, now=datetime.now(UTC) - timedelta(minutes=5))
        init_signing_keys(instance)
        sync_revocations(settings)
        if isinstance(clock, FixedClock) and clock.now() < (synced := datetime.now(UTC)):
            # A test's clock made before the sync would date the J-LIS CRLs in its future ("too recent").
            clock.advance(synced - clock.now())
        app = create_app(settings, clock=clock)
        late.app = app
        yield Portal(url=url, settings=settings, app=app)
