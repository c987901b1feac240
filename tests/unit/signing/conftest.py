"""The signing world: a portal instance (its CAs, timestamping unit and keys), a J-LIS card, and a
phone whose SE holds an authentication and a signature key certified by the portal.

Minted once per session by the simulators; a test that revokes a certificate mints its own
phone (``fresh_phone``). The portal's clock stands at ``NOW``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from idp.clock import FixedClock
from idp.oidc.keys import KeyStore, init_signing_keys
from idp.pki.attributes import BasicAttributes, Sex
from idp.pki.profiles import SMARTPHONE_AUTH, SMARTPHONE_SIGN
from idp.pki.service import PortalPki, init_pki
from idp.settings import Settings
from idp.signing import SigningService
from idp.store.database import make_engine, make_session_factory, upgrade
from smartphone.card import CardKey
from smartphone.jlis import JLis
from smartphone.secure_element import KeyPurpose, SecureElement
from smartphone.vendor import Vendor
from smartphone.webauthn_data import b64url_decode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from smartphone.card import MyNumberCard

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
ISSUER = "http://127.0.0.1:8000"
RP_ID = "127.0.0.1"
TARO = BasicAttributes(
    name="山田　太郎", address="東京都千代田区永田町1-7-1", date_of_birth=date(1990, 4, 1), sex=Sex.MALE,
)


@dataclass(frozen=True, kw_only=True)
class Phone:
    """A phone's SE with its two keys and the portal's certificates for them."""

    element: SecureElement
    sign_id: bytes
    auth_id: bytes
    sign_certificate: x509.Certificate
    auth_certificate: x509.Certificate

    @property
    def auth_key(self) -> ec.EllipticCurvePublicKey:
        return self.element.public_key(self.auth_id)

    def sign(self, digest: bytes) -> bytes:
        """What the SE returns for a document digest: ECDSA P-256 (DER) by the signature key."""
        return self.element.sign_digest(credential_id=self.sign_id, digest=digest)


@dataclass(frozen=True, kw_only=True)
class World:
    settings: Settings
    clock: FixedClock
    pki: PortalPki
    service: SigningService
    card: MyNumberCard
    vendor: Vendor

    def phone(self) -> Phone:
        """A new phone: an SE with both keys, certified by the portal from the card."""
        element = self.vendor.provision()
        ids = {purpose: self._credential(element, purpose) for purpose in (KeyPurpose.SIGN, KeyPurpose.AUTH)}
        cards = [self.card.certificate(CardKey.AUTH), self.card.certificate(CardKey.SIGN)]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"phone {secrets.token_hex(4)}")])
        sign = self.pki.issue_smartphone_certificate(
            profile=SMARTPHONE_SIGN, subject=subject, public_key=element.public_key(ids[KeyPurpose.SIGN]),
            card_certificates=cards, attributes=TARO,
        )
        auth = self.pki.issue_smartphone_certificate(
            profile=SMARTPHONE_AUTH, subject=subject, public_key=element.public_key(ids[KeyPurpose.AUTH]),
            card_certificates=cards,
        )
        return Phone(
            element=element, sign_id=ids[KeyPurpose.SIGN], auth_id=ids[KeyPurpose.AUTH],
            sign_certificate=sign, auth_certificate=auth,
        )

    @staticmethod
    def _credential(element: SecureElement, purpose: KeyPurpose) -> bytes:
        response = element.make_credential(
            rp_id=RP_ID, challenge=secrets.token_bytes(32), origin=ISSUER, purpose=purpose,
        )
        return b64url_decode(response["rawId"])


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    instance: Path = tmp_path_factory.mktemp("signing-instance")
    init_pki(instance, issuer_url=ISSUER, now=NOW - timedelta(days=1))
    init_signing_keys(instance)
    settings = Settings(issuer=ISSUER, instance=instance)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    clock = FixedClock(NOW)
    keys = KeyStore(instance)
    pki = PortalPki(settings=settings, sessions=make_session_factory(engine), clock=clock)
    jlis = JLis.create(base_url="http://jlis.test/", now=NOW - timedelta(days=1),
                       registry_dir=tmp_path_factory.mktemp("jlis"))
    card = jlis.issue_card(
        attributes=TARO, prefecture="東京都", city="千代田区", auth_pin="1234", sign_pin="TARO2024",
        now=NOW - timedelta(days=1),
    )
    yield World(
        settings=settings,
        clock=clock,
        pki=pki,
        service=SigningService(settings=settings, pki=pki, keys=lambda: keys, clock=clock),
        card=card,
        vendor=Vendor.create(name="Myna Devices", model="MynaSE-1", now=NOW - timedelta(days=1)),
    )
    engine.dispose()


@pytest.fixture(scope="session")
def phone(world: World) -> Phone:
    """The session's phone; never revoked."""
    return world.phone()


@pytest.fixture
def fresh_phone(world: World) -> Callable[[], Phone]:
    """Mint a phone of its own, for a test that revokes its certificates."""
    return world.phone


@pytest.fixture
def service(world: World) -> SigningService:
    return world.service
