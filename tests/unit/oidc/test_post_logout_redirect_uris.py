"""A client's post-logout redirect URIs (RP-Initiated Logout 1.0 §3.1): registered, checked, listed.

The registry holds them to the redirect URIs' rules (absolute, https or loopback http, no
fragment or user information); ``idp clients add --post-logout-redirect-uri`` registers them and
names the option when one is refused. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from idp.cli import main
from idp.oidc import ClientRegistry, InvalidClientMetadata
from idp.store.database import make_engine, make_session_factory, upgrade

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from click.testing import Result

    from idp.clock import FixedClock

SHOP = {
    "name": "Example Shop", "redirect_uris": ["https://shop.example/callback"], "auth_method": "client_secret_basic",
    "scopes": ["openid"],
}


@pytest.fixture
def registry(database_url: str) -> Iterator[ClientRegistry]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield ClientRegistry(make_session_factory(engine))
    engine.dispose()


def test_registered_uris_are_kept_in_order_without_repeats(registry: ClientRegistry, fixed_clock: FixedClock) -> None:
    uris = ["https://shop.example/bye", "http://127.0.0.1:8080/logged-out", "https://shop.example/bye"]
    registered = registry.register(**SHOP, post_logout_redirect_uris=uris, now=fixed_clock.now())
    stored = registry.get(registered.client.client_id)
    assert stored is not None
    assert stored.post_logout_redirect_uris == ("https://shop.example/bye", "http://127.0.0.1:8080/logged-out")


def test_a_client_registered_without_any_has_none(registry: ClientRegistry, fixed_clock: FixedClock) -> None:
    registered = registry.register(**SHOP, now=fixed_clock.now())
    assert registry.list()[0].post_logout_redirect_uris == ()
    assert registered.client.post_logout_redirect_uris == ()


@pytest.mark.parametrize("uri", [
    "http://shop.example/bye",          # plain http off loopback
    "/bye",                             # relative
    "https://shop.example/bye#top",     # fragment
    "https://user@shop.example/bye",    # user information
    "https://shop.example/b ye",        # a space
], ids=["http", "relative", "fragment", "userinfo", "space"])
def test_unacceptable_uri_is_refused_naming_the_field(
    registry: ClientRegistry, fixed_clock: FixedClock, uri: str,
) -> None:
    with pytest.raises(InvalidClientMetadata) as refused:
        registry.register(**SHOP, post_logout_redirect_uris=[uri], now=fixed_clock.now())
    assert refused.value.field == "post_logout_redirect_uris"
    assert refused.value.error == "invalid_client_metadata"
    assert registry.list() == []  # nothing written


def test_one_string_instead_of_a_list_is_refused(registry: ClientRegistry, fixed_clock: FixedClock) -> None:
    with pytest.raises(InvalidClientMetadata) as refused:
        registry.register(**SHOP, post_logout_redirect_uris="https://shop.example/bye", now=fixed_clock.now())
    assert refused.value.field == "post_logout_redirect_uris"


# --- idp clients add --post-logout-redirect-uri ------------------------------------------------


def _run(*args: object) -> Result:
    cleared = {"IDP_CONFIG": None, "DATABASE_URL": None, "REDIS_URL": None}
    return CliRunner(env=cleared).invoke(main, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    path = tmp_path / "instance"
    result = _run("init", "--instance", path)
    assert result.exit_code == 0, result.output
    return path


def test_cli_registers_post_logout_redirect_uris(instance: Path) -> None:
    result = _run(
        "clients", "add", "--instance", instance, "--name", "Shop", "--redirect-uri", "https://shop.example/cb",
        "--post-logout-redirect-uri", "https://shop.example/bye",
        "--post-logout-redirect-uri", "https://shop.example/bye-again", "--json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["post_logout_redirect_uris"] == ["https://shop.example/bye", "https://shop.example/bye-again"]
    listed = json.loads(_run("clients", "list", "--instance", instance, "--json").stdout)
    assert listed[0]["post_logout_redirect_uris"] == document["post_logout_redirect_uris"]


def test_cli_names_the_option_of_a_refused_uri(instance: Path) -> None:
    result = CliRunner(env={"IDP_CONFIG": None, "DATABASE_URL": None, "REDIS_URL": None}).invoke(main, [
        "clients", "add", "--instance", str(instance), "--name", "Shop", "--redirect-uri", "https://shop.example/cb",
        "--post-logout-redirect-uri", "http://shop.example/bye",
    ])
    assert result.exit_code == 2
    assert "--post-logout-redirect-uri" in result.output
    assert json.loads(_run("clients", "list", "--instance", instance, "--json").stdout) == []
