"""The OAuth client registry on SQLite and PostgreSQL: registration, look-up, secrets, removal, every rejection."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, OKPKey, RSAKey
from sqlalchemy import select, text

from idp.oidc import (
    AuthMethod,
    ClientInfo,
    ClientRegistry,
    IdTokenAlgorithm,
    InvalidClientMetadata,
    InvalidRedirectUri,
)
from idp.oidc.records import Client
from idp.store.database import make_engine, make_session_factory, upgrade

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.orm import Session, sessionmaker

    from idp.clock import FixedClock

EC_KEY = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
RSA_KEY = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
EC_PUBLIC = EC_KEY.as_dict(private=False)
RSA_PUBLIC = RSA_KEY.as_dict(private=False)


def rsa_public_jwk(bits: int) -> dict[str, str]:
    """An RSA public JWK of any size, built by hand: joserfc warns about keys under 2048 bits."""
    modulus = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key().public_numbers().n
    encoded = base64.urlsafe_b64encode(modulus.to_bytes((modulus.bit_length() + 7) // 8)).rstrip(b"=")
    return {"kty": "RSA", "n": encoded.decode(), "e": "AQAB"}


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def registry(sessions: sessionmaker[Session]) -> ClientRegistry:
    return ClientRegistry(sessions)


@pytest.fixture
def valid(fixed_clock: FixedClock) -> dict[str, Any]:
    """Registration arguments that succeed; a negative test changes one of them."""
    return {
        "name": "Example Shop",
        "redirect_uris": ["https://shop.example/callback"],
        "auth_method": "client_secret_basic",
        "scopes": ["openid"],
        "now": fixed_clock.now(),
    }


@pytest.fixture
def key_client(valid: dict[str, Any]) -> dict[str, Any]:
    """A valid private_key_jwt registration with an inline JWK Set."""
    return {**valid, "auth_method": "private_key_jwt", "jwks": {"keys": [EC_PUBLIC]}}


# --- registration ----------------------------------------------------------------------------


def test_client_id_is_safe_to_type_on_a_command_line(registry: ClientRegistry, valid: dict[str, Any]):
    client_id = registry.register(**valid).client.client_id
    assert re.fullmatch(r"[a-z2-7]{29}", client_id), client_id


def test_registered_client_reads_back_as_stored(registry: ClientRegistry, valid: dict[str, Any]):
    registered = registry.register(**valid)

    assert registry.get(registered.client.client_id) == registered.client
    assert registered.client == ClientInfo(
        client_id=registered.client.client_id,
        name="Example Shop",
        redirect_uris=("https://shop.example/callback",),
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
        scopes=("openid",),
        jwks=None,
        jwks_uri=None,
        require_par=False,
        id_token_alg=IdTokenAlgorithm.ES256,
        sector="shop.example",
        created_at=valid["now"],
    )


def test_every_option_is_stored(registry: ClientRegistry, key_client: dict[str, Any]):
    registered = registry.register(
        **{**key_client, "jwks": {"keys": [EC_PUBLIC, RSA_PUBLIC]}},
        require_par=True,
        id_token_alg="RS256",
        sector="shop.example",
    )

    client = registry.get(registered.client.client_id)
    assert client is not None
    assert client.jwks == {"keys": [EC_PUBLIC, RSA_PUBLIC]}
    assert client.require_par is True
    assert client.id_token_alg is IdTokenAlgorithm.RS256


def test_client_ids_are_random(registry: ClientRegistry, valid: dict[str, Any]):
    first = registry.register(**valid).client.client_id
    second = registry.register(**valid).client.client_id

    assert first != second
    assert len(first) >= 24


def test_name_is_stored_without_surrounding_spaces(registry: ClientRegistry, valid: dict[str, Any]):
    registered = registry.register(**{**valid, "name": "  Example Shop\t"})

    assert registered.client.name == "Example Shop"


def test_japanese_name_is_accepted(registry: ClientRegistry, valid: dict[str, Any]):
    registered = registry.register(**{**valid, "name": "サンプル銀行　オンライン"})

    assert registered.client.name == "サンプル銀行　オンライン"


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1:8080/callback", "http://localhost:3000/cb", "http://[::1]/cb"],
    ids=["ipv4", "localhost", "ipv6"],
)
def test_http_redirect_uri_on_loopback_is_accepted(registry: ClientRegistry, valid: dict[str, Any], uri: str):
    registered = registry.register(**{**valid, "redirect_uris": [uri]})

    assert registered.client.redirect_uris == (uri,)


def test_redirect_uri_with_a_query_is_accepted(registry: ClientRegistry, valid: dict[str, Any]):
    # RFC 6749 §3.1.2: the endpoint URI "MAY include a query component".
    uri = "https://shop.example/callback?tenant=7"

    assert registry.register(**{**valid, "redirect_uris": [uri]}).client.redirect_uris == (uri,)


def test_duplicate_redirect_uris_are_kept_once_in_order(registry: ClientRegistry, valid: dict[str, Any]):
    uris = ["https://shop.example/b", "https://shop.example/a", "https://shop.example/b"]

    registered = registry.register(**{**valid, "redirect_uris": uris})

    assert registered.client.redirect_uris == ("https://shop.example/b", "https://shop.example/a")


def test_scopes_are_stored_once_in_canonical_order(registry: ClientRegistry, valid: dict[str, Any]):
    registered = registry.register(**{**valid, "scopes": ["sign", "name", "openid", "name"]})

    assert registered.client.scopes == ("openid", "name", "sign")


def test_sector_defaults_to_the_redirect_uris_host(registry: ClientRegistry, valid: dict[str, Any]):
    uris = ["https://Shop.Example/a", "https://shop.example:8443/b"]

    assert registry.register(**{**valid, "redirect_uris": uris}).client.sector == "shop.example"


def test_redirect_uris_on_several_hosts_take_the_given_sector(registry: ClientRegistry, valid: dict[str, Any]):
    uris = ["https://shop.example/cb", "https://m.shop.example/cb"]

    registered = registry.register(**{**valid, "redirect_uris": uris, "sector": "shop.example"})

    assert registered.client.sector == "shop.example"


def test_private_key_jwt_client_may_give_a_jwks_uri(registry: ClientRegistry, valid: dict[str, Any]):
    registered = registry.register(
        **{**valid, "auth_method": "private_key_jwt", "jwks_uri": "https://shop.example/jwks.json"},
    )

    assert registered.client.jwks_uri == "https://shop.example/jwks.json"
    assert registered.client.jwks is None


# --- the secret ------------------------------------------------------------------------------


def test_secret_is_returned_at_registration_and_never_after(registry: ClientRegistry, valid: dict[str, Any]):
    registered = registry.register(**valid)

    assert registered.client_secret is not None
    assert len(registered.client_secret) >= 43  # 256 bits, base64url
    assert registered.client_secret not in repr(registered)
    assert {f.name for f in dataclasses.fields(ClientInfo)}.isdisjoint({"client_secret", "client_secret_sha256"})


def test_secret_is_stored_only_as_its_sha256(
    registry: ClientRegistry, sessions: sessionmaker[Session], valid: dict[str, Any],
):
    registered = registry.register(**valid)
    assert registered.client_secret is not None

    with sessions() as session:
        row = session.get(Client, registered.client.client_id)
        everything = session.execute(text("SELECT * FROM oidc_clients")).one()
    assert row is not None
    assert row.client_secret_sha256 == hashlib.sha256(registered.client_secret.encode()).digest()
    assert registered.client_secret not in repr(tuple(everything))


def test_private_key_jwt_client_has_no_secret(
    registry: ClientRegistry, sessions: sessionmaker[Session], key_client: dict[str, Any],
):
    registered = registry.register(**key_client)

    assert registered.client_secret is None
    with sessions() as session:
        stored = session.scalar(select(Client.client_secret_sha256))
    assert stored is None


def test_verify_secret_accepts_the_clients_secret(registry: ClientRegistry, valid: dict[str, Any]):
    registered = registry.register(**valid)
    assert registered.client_secret is not None

    assert registry.verify_secret(registered.client.client_id, registered.client_secret) is True


def test_verify_secret_refuses_a_wrong_secret(registry: ClientRegistry, valid: dict[str, Any]):
    registered = registry.register(**valid)
    assert registered.client_secret is not None

    assert registry.verify_secret(registered.client.client_id, registered.client_secret[:-1] + "x") is False


def test_verify_secret_refuses_another_clients_secret(registry: ClientRegistry, valid: dict[str, Any]):
    first = registry.register(**valid)
    second = registry.register(**valid)
    assert second.client_secret is not None

    assert registry.verify_secret(first.client.client_id, second.client_secret) is False


def test_verify_secret_refuses_an_unknown_client(registry: ClientRegistry):
    assert registry.verify_secret("no-such-client", "") is False


def test_verify_secret_refuses_a_client_without_a_secret(registry: ClientRegistry, key_client: dict[str, Any]):
    # The empty secret's digest is what an absent secret is compared with: it must still fail.
    registered = registry.register(**key_client)

    assert registry.verify_secret(registered.client.client_id, "") is False


# --- look-up, listing, removal ---------------------------------------------------------------


def test_unknown_client_is_none(registry: ClientRegistry):
    assert registry.get("no-such-client") is None


def test_list_returns_every_client_oldest_first(
    registry: ClientRegistry, valid: dict[str, Any], fixed_clock: FixedClock,
):
    older = registry.register(**{**valid, "name": "Older", "now": fixed_clock.now()})
    newer = registry.register(**{**valid, "name": "Newer", "now": fixed_clock.now().replace(year=2026)})

    assert registry.list() == [older.client, newer.client]


def test_list_of_an_empty_registry_is_empty(registry: ClientRegistry):
    assert registry.list() == []


def test_removed_client_is_gone(registry: ClientRegistry, valid: dict[str, Any]):
    kept = registry.register(**valid)
    removed = registry.register(**valid)
    assert removed.client_secret is not None

    assert registry.remove(removed.client.client_id) is True

    assert registry.get(removed.client.client_id) is None
    assert registry.verify_secret(removed.client.client_id, removed.client_secret) is False
    assert registry.list() == [kept.client]


def test_cached_client_is_removed_here_at_once_elsewhere_within_the_ttl(
    sessions: sessionmaker[Session], valid: dict[str, Any], fixed_clock: FixedClock,
):
    ttl = timedelta(seconds=30)
    here = ClientRegistry(sessions, cache_ttl=ttl, clock=fixed_clock)
    elsewhere = ClientRegistry(sessions, cache_ttl=ttl, clock=fixed_clock)  # another worker's registry
    registered = here.register(**valid)
    client_id, secret = registered.client.client_id, registered.client_secret
    assert secret is not None
    assert elsewhere.get(client_id) == registered.client
    assert elsewhere.verify_secret(client_id, secret) is True

    assert here.remove(client_id) is True

    assert here.get(client_id) is None
    assert here.verify_secret(client_id, secret) is False
    assert elsewhere.get(client_id) == registered.client  # cached, for at most the TTL
    fixed_clock.advance(ttl)
    assert elsewhere.get(client_id) is None
    assert elsewhere.verify_secret(client_id, secret) is False


def test_cached_client_returns_a_copy_of_its_keys(
    sessions: sessionmaker[Session], key_client: dict[str, Any], fixed_clock: FixedClock,
):
    registry = ClientRegistry(sessions, cache_ttl=timedelta(seconds=30), clock=fixed_clock)
    client_id = registry.register(**key_client).client.client_id
    first = registry.get(client_id)
    assert first is not None
    assert first.jwks is not None
    first.jwks["keys"].clear()  # type: ignore[attr-defined] # a caller that mutates what it was given

    second = registry.get(client_id)

    assert second is not None
    assert second.jwks == {"keys": [EC_PUBLIC]}


def test_removing_an_unknown_client_returns_false(registry: ClientRegistry, valid: dict[str, Any]):
    registry.register(**valid)

    assert registry.remove("no-such-client") is False
    assert len(registry.list()) == 1


# --- rejections: each changes one value of a valid registration, and nothing is written -------


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        pytest.param(["http://shop.example/cb"], "must use https", id="http-off-loopback"),
        pytest.param(["http://127.0.0.1.nip.io/cb"], "must use https", id="http-on-a-name-that-looks-like-loopback"),
        pytest.param(["com.example.app:/cb"], "not an absolute URI with a host", id="private-use-scheme"),
        pytest.param(["https://shop.example/cb#done"], "must not include a fragment", id="fragment"),
        pytest.param(["https://shop.example/cb#"], "must not include a fragment", id="empty-fragment"),
        pytest.param(["/callback"], "not an absolute URI", id="relative"),
        pytest.param(["shop.example/callback"], "not an absolute URI", id="no-scheme"),
        pytest.param(["https:///callback"], "not an absolute URI with a host", id="no-host"),
        pytest.param(["https://user@shop.example/cb"], "must not include user information", id="userinfo"),
        pytest.param(["https://shop.example/c b"], "must not contain spaces", id="space"),
        pytest.param(["https://shop.example/cb\n"], "must not contain spaces or control characters", id="newline"),
        pytest.param(["https://shop.example:99999/cb"], "is not a valid URI", id="port-out-of-range"),
        pytest.param(["https://[::1/cb"], "is not a valid URI", id="unclosed-ipv6-literal"),
        pytest.param([""], "non-empty string", id="empty-uri"),
        pytest.param([], "at least one redirect URI", id="none-given"),
        pytest.param("https://shop.example/cb", "a list of URIs", id="one-string-not-a-list"),
        pytest.param(["https://shop.example/ok", "http://shop.example/cb"], "must use https", id="second-uri-bad"),
    ],
)
def test_bad_redirect_uri_is_rejected(registry: ClientRegistry, valid: dict[str, Any], uris: Any, message: str):
    with pytest.raises(InvalidRedirectUri) as rejected:
        registry.register(**{**valid, "redirect_uris": uris})

    assert rejected.value.error == "invalid_redirect_uri"
    assert rejected.value.field == "redirect_uris"
    assert message in rejected.value.message
    assert registry.list() == []


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        pytest.param({"name": "   "}, "client_name", "must not be empty", id="empty-name"),
        pytest.param({"name": "x" * 101}, "client_name", "at most 100 characters", id="long-name"),
        pytest.param({"name": "Shop\u202eknaB"}, "client_name", "formatting", id="bidi-override-in-name"),
        pytest.param({"name": "Shop\nBank"}, "client_name", "control", id="line-break-in-name"),
        pytest.param({"auth_method": "client_secret_post"}, "token_endpoint_auth_method",
                     "must be client_secret_basic or private_key_jwt", id="unknown-auth-method"),
        pytest.param({"auth_method": "none"}, "token_endpoint_auth_method",
                     "must be client_secret_basic or private_key_jwt", id="public-client"),
        pytest.param({"auth_method": "private_key_jwt"}, "jwks", "needs the client's public keys",
                     id="private-key-jwt-without-keys"),
        pytest.param({"auth_method": "private_key_jwt", "jwks": {"keys": [EC_PUBLIC]},
                      "jwks_uri": "https://shop.example/jwks"}, "jwks", "not both", id="jwks-and-jwks-uri"),
        pytest.param({"jwks": {"keys": [EC_PUBLIC]}}, "jwks", "keys are for private_key_jwt",
                     id="jwks-with-client-secret-basic"),
        pytest.param({"jwks_uri": "https://shop.example/jwks"}, "jwks_uri", "keys are for private_key_jwt",
                     id="jwks-uri-with-client-secret-basic"),
        pytest.param({"auth_method": "private_key_jwt", "jwks_uri": "http://shop.example/jwks"}, "jwks_uri",
                     "must be an https URL", id="jwks-uri-over-http"),
        pytest.param({"auth_method": "private_key_jwt", "jwks_uri": "https://shop.example/jwks#k"}, "jwks_uri",
                     "without fragment", id="jwks-uri-with-fragment"),
        pytest.param({"auth_method": "private_key_jwt", "jwks_uri": "https://shop.example/j wks"}, "jwks_uri",
                     "must not contain spaces", id="jwks-uri-with-space"),
        pytest.param({"scopes": ["name"]}, "scope", "must include openid", id="scope-without-openid"),
        pytest.param({"scopes": []}, "scope", "must include openid", id="no-scope"),
        pytest.param({"scopes": ["openid", "email"]}, "scope", "unknown scope 'email'", id="unknown-scope"),
        pytest.param({"scopes": ["openid", "Name"]}, "scope", "unknown scope 'Name'", id="scope-in-wrong-case"),
        pytest.param({"scopes": "openid"}, "scope", "a list of scopes", id="scope-as-one-string"),
        pytest.param({"id_token_alg": "HS256"}, "id_token_signed_response_alg", "must be ES256 or RS256",
                     id="symmetric-id-token-alg"),
        pytest.param({"id_token_alg": "none"}, "id_token_signed_response_alg", "must be ES256 or RS256",
                     id="unsigned-id-token"),
        pytest.param({"id_token_alg": "PS256"}, "id_token_signed_response_alg", "must be ES256 or RS256",
                     id="other-id-token-alg"),
        pytest.param({"redirect_uris": ["https://shop.example/cb", "https://evil.example/cb"]}, "sector_identifier",
                     "several hosts (evil.example, shop.example)", id="mixed-hosts-without-sector"),
        pytest.param({"redirect_uris": ["http://localhost/cb", "http://127.0.0.1/cb"]}, "sector_identifier",
                     "several hosts", id="two-loopback-names-without-sector"),
        pytest.param({"sector": "https://shop.example"}, "sector_identifier", "must be a lower-case host name",
                     id="sector-is-a-url"),
        pytest.param({"sector": "Shop.Example"}, "sector_identifier", "must be a lower-case host name",
                     id="sector-in-upper-case"),
        pytest.param({"sector": "shop.example:443"}, "sector_identifier", "must be a lower-case host name",
                     id="sector-with-port"),
    ],
)
def test_bad_metadata_is_rejected(
    registry: ClientRegistry, valid: dict[str, Any], change: dict[str, Any], field: str, message: str,
):
    with pytest.raises(InvalidClientMetadata) as rejected:
        registry.register(**{**valid, **change})

    assert type(rejected.value) is InvalidClientMetadata
    assert rejected.value.error == "invalid_client_metadata"
    assert rejected.value.field == field
    assert message in rejected.value.message
    assert registry.list() == []


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        pytest.param({"keys": [EC_KEY.as_dict(private=True)]}, "private key members (d)", id="private-ec-key"),
        pytest.param({"keys": [RSA_KEY.as_dict(private=True)]}, "private key members (d, dp, dq, p, q, qi)",
                     id="private-rsa-key"),
        pytest.param({"keys": [EC_PUBLIC, {**RSA_PUBLIC, "d": "AQAB"}]}, "key 2 has private key members (d)",
                     id="private-member-in-second-key"),
        pytest.param({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "kty must be EC, RSA or OKP", id="symmetric-key"),
        pytest.param({"keys": [{"kty": "AKP", "alg": "ML-DSA-44", "pub": "AA"}]}, "kty must be EC, RSA or OKP",
                     id="unknown-key-type"),
        pytest.param({"keys": [{k: v for k, v in EC_PUBLIC.items() if k != "kty"}]}, "kty must be",
                     id="no-key-type"),
        pytest.param({"keys": [OKPKey.generate_key("X25519").as_dict(private=False)]},
                     "crv must be one of Ed25519, Ed448", id="key-agreement-curve"),
        pytest.param({"keys": [{**EC_PUBLIC, "crv": "secp256k1"}]}, "crv must be one of P-256, P-384, P-521",
                     id="unsupported-ec-curve"),
        pytest.param({"keys": [{**EC_PUBLIC, "use": "enc"}]}, "must be for signatures", id="encryption-key"),
        pytest.param({"keys": [{**EC_PUBLIC, "key_ops": ["encrypt"]}]}, "must be for signatures",
                     id="key-ops-without-verify"),
        pytest.param({"keys": [rsa_public_jwk(1024)]}, "at least 2048 bits",
                     id="short-rsa-key"),
        pytest.param({"keys": [{**EC_PUBLIC, "y": EC_PUBLIC["x"]}]}, "key 1 is not a valid public key",
                     id="ec-point-not-on-curve"),
        pytest.param({"keys": [{**EC_PUBLIC, "x": "!!!"}]}, "key 1 is not a valid public key", id="x-not-base64url"),
        pytest.param({"keys": [{**RSA_PUBLIC, "n": "***"}]}, "key 1 is not a valid public key", id="n-not-base64url"),
        pytest.param({"keys": [{"kty": "RSA", "e": "AQAB"}]}, "'n' is required", id="rsa-without-modulus"),
        pytest.param({"keys": [{**EC_PUBLIC, "kid": 7}]}, "'kid' must be a str", id="kid-not-a-string"),
        pytest.param({"keys": [EC_PUBLIC, {**RSA_PUBLIC, "kid": "ec-1"}]}, "two keys share a kid", id="duplicate-kid"),
        pytest.param({"keys": []}, 'non-empty "keys" array', id="empty-key-set"),
        pytest.param(EC_PUBLIC, "must be a JWK Set", id="a-key-not-a-set"),
        pytest.param([EC_PUBLIC], "must be a JWK Set", id="an-array-not-a-set"),
        pytest.param({"keys": ["not-a-key"]}, "key 1 is not a JSON object", id="key-not-an-object"),
    ],
)
def test_bad_jwks_is_rejected(registry: ClientRegistry, key_client: dict[str, Any], jwks: Any, message: str):
    with pytest.raises(InvalidClientMetadata) as rejected:
        registry.register(**{**key_client, "jwks": jwks})

    assert rejected.value.error == "invalid_client_metadata"
    assert rejected.value.field == "jwks"
    assert message in rejected.value.message
    assert registry.list() == []
