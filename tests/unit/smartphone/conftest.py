"""The simulated world for the smartphone unit tests: one J-LIS per test, vendors per session."""

from datetime import UTC, date, datetime

import pytest

from idp.pki.attributes import BasicAttributes, Sex
from smartphone.card import MyNumberCard
from smartphone.jlis import JLis
from smartphone.secure_element import SecureElement
from smartphone.vendor import Vendor

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
AUTH_PIN = "1234"
SIGN_PIN = "ABC123"
ATTRIBUTES = BasicAttributes(
    name="山田　太郎",
    address="東京都千代田区千代田1-1",
    date_of_birth=date(1990, 4, 1),
    sex=Sex.MALE,
)


@pytest.fixture
def now() -> datetime:
    """The fixed time of every step; vendor certificates stay valid for py_webauthn's wall clock."""
    return NOW


@pytest.fixture
def attributes() -> BasicAttributes:
    return ATTRIBUTES


@pytest.fixture
def jlis(tmp_path) -> JLis:
    return JLis.create(base_url="http://jlis.test/", now=NOW, registry_dir=tmp_path / "registry")


@pytest.fixture
def card(jlis) -> MyNumberCard:
    """A card issued with the user-authentication PIN 1234 and the signature PIN ABC123."""
    return jlis.issue_card(
        attributes=ATTRIBUTES, prefecture="東京都", city="千代田区", auth_pin=AUTH_PIN, sign_pin=SIGN_PIN, now=NOW,
    )


@pytest.fixture(scope="session")
def vendor() -> Vendor:
    return Vendor.create(name="Myna Devices", model="MynaSE-1", now=NOW)


@pytest.fixture(scope="session")
def other_vendor() -> Vendor:
    return Vendor.create(name="Other Silicon", model="OS-9", now=NOW)


@pytest.fixture
def element(vendor) -> SecureElement:
    return vendor.provision()
