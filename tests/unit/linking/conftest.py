"""A J-LIS with a linking-data signer and a card, per test, for the linking tests."""

import pytest
from linking_world import NOW, PASSPHRASE, issue_taro

from smartphone.jlis import JLis


@pytest.fixture
def now():
    return NOW


@pytest.fixture
def jlis(tmp_path) -> JLis:
    return JLis.create(base_url="http://jlis.test/", now=NOW, registry_dir=tmp_path / "jlis", passphrase=PASSPHRASE)


@pytest.fixture
def other_jlis(tmp_path) -> JLis:
    """Another J-LIS: its keys chain to a root the portal does not trust."""
    return JLis.create(base_url="http://other.test/", now=NOW, registry_dir=tmp_path / "other", passphrase=PASSPHRASE)


@pytest.fixture
def card(jlis):
    return issue_taro(jlis)
