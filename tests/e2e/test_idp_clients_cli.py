"""``idp clients`` as an operator uses it: add, list and remove relying parties on an instance made by ``idp init``."""

import hashlib
import json

import pytest
from alembic import command
from click.testing import CliRunner
from joserfc.jwk import ECKey

from idp.cli import main
from idp.oidc import ClientRegistry
from idp.store.database import alembic_config, head_revision, make_engine, make_session_factory, migration_connection

SHOP = ("--name", "Example Shop", "--redirect-uri", "https://shop.example/callback")
EC_KEY = ECKey.generate_key("P-256", parameters={"kid": "shop-1"})
RFC_7591_FIELDS = {
    "client_id", "client_name", "redirect_uris", "token_endpoint_auth_method", "scope", "jwks", "jwks_uri",
    "require_pushed_authorization_requests", "id_token_signed_response_alg", "sector_identifier",
    "client_id_issued_at",
}


def _run(*args, env=None):
    cleared = {"IDP_CONFIG": None, "DATABASE_URL": None, "REDIS_URL": None}
    return CliRunner(env={**cleared, **(env or {})}).invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def _registry(url):
    engine = make_engine(url)
    return engine, ClientRegistry(make_session_factory(engine))


def _stored_clients(instance):
    engine, registry = _registry(f"sqlite:///{instance / 'idp.sqlite3'}")
    try:
        return registry.list()
    finally:
        engine.dispose()


def _fields(output):
    """The ``key: value`` lines that ``idp clients add`` prints."""
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


@pytest.fixture
def instance(tmp_path):
    path = tmp_path / "instance"
    result = _run("init", "--instance", path)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def jwks_file(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [EC_KEY.as_dict(private=False)]}))
    return path


# --- the round trip --------------------------------------------------------------------------


def test_add_prints_the_client_id_and_the_secret(instance):
    result = _run("clients", "add", "--instance", instance, *SHOP)

    assert result.exit_code == 0, result.output
    printed = _fields(result.stdout)
    (stored,) = _stored_clients(instance)
    assert printed["client_id"] == stored.client_id
    assert len(printed["client_secret"]) >= 43
    assert "not shown again" in result.stderr


def test_printed_secret_is_the_one_the_portal_accepts(instance):
    printed = _fields(_run("clients", "add", "--instance", instance, *SHOP).stdout)

    engine, registry = _registry(f"sqlite:///{instance / 'idp.sqlite3'}")
    try:
        assert registry.verify_secret(printed["client_id"], printed["client_secret"]) is True
    finally:
        engine.dispose()


def test_add_json_prints_the_registration_and_its_secret(instance):
    result = _run("clients", "add", "--instance", instance, *SHOP, "--scope", "openid", "--scope", "name", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == RFC_7591_FIELDS | {"client_secret", "client_secret_expires_at"}
    assert document["client_name"] == "Example Shop"
    assert document["redirect_uris"] == ["https://shop.example/callback"]
    assert document["token_endpoint_auth_method"] == "client_secret_basic"
    assert document["scope"] == "openid name"
    assert document["sector_identifier"] == "shop.example"
    assert document["id_token_signed_response_alg"] == "ES256"
    assert document["client_secret_expires_at"] == 0


def test_add_takes_every_option(instance, jwks_file):
    result = _run(
        "clients", "add", "--instance", instance, "--name", "Example Bank",
        "--redirect-uri", "https://bank.example/cb", "--redirect-uri", "https://m.bank.example/cb",
        "--auth-method", "private_key_jwt", "--jwks", jwks_file, "--scope", "openid", "--scope", "sign",
        "--require-par", "--id-token-alg", "RS256", "--sector", "bank.example", "--json",
    )

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == RFC_7591_FIELDS
    assert document["jwks"] == {"keys": [EC_KEY.as_dict(private=False)]}
    assert document["require_pushed_authorization_requests"] is True
    assert document["id_token_signed_response_alg"] == "RS256"
    assert document["sector_identifier"] == "bank.example"


def test_add_private_key_jwt_client_prints_no_secret(instance):
    result = _run(
        "clients", "add", "--instance", instance, *SHOP,
        "--auth-method", "private_key_jwt", "--jwks-uri", "https://shop.example/jwks.json",
    )

    assert result.exit_code == 0, result.output
    assert set(_fields(result.stdout)) == {"client_id"}
    assert _stored_clients(instance)[0].jwks_uri == "https://shop.example/jwks.json"


def test_list_shows_each_client_on_one_line(instance):
    first = _fields(_run("clients", "add", "--instance", instance, *SHOP).stdout)["client_id"]
    second = _fields(_run("clients", "add", "--instance", instance, *SHOP).stdout)["client_id"]

    result = _run("clients", "list", "--instance", instance)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{client_id}\tclient_secret_basic\topenid\tExample Shop\thttps://shop.example/callback"
        for client_id in (first, second)
    ]


def test_list_json_prints_every_client(instance):
    added = json.loads(_run("clients", "add", "--instance", instance, *SHOP, "--json").stdout)

    result = _run("clients", "list", "--instance", instance, "--json")

    assert result.exit_code == 0, result.output
    added.pop("client_secret")
    added.pop("client_secret_expires_at")
    assert json.loads(result.stdout) == [added]


def test_list_never_prints_a_secret_or_its_hash(instance):
    secret = _fields(_run("clients", "add", "--instance", instance, *SHOP).stdout)["client_secret"]
    digest = hashlib.sha256(secret.encode()).digest()

    outputs = [_run("clients", "list", "--instance", instance, *flags).output for flags in ((), ("--json",))]

    for output in outputs:
        assert secret not in output
        assert digest.hex() not in output
        assert "secret" not in output.replace("client_secret_basic", "")


def test_list_of_an_empty_registry_says_so(instance):
    result = _run("clients", "list", "--instance", instance)

    assert result.exit_code == 0, result.output
    assert result.stdout == "no clients registered\n"


def test_list_json_of_an_empty_registry_is_an_empty_array(instance):
    assert json.loads(_run("clients", "list", "--instance", instance, "--json").stdout) == []


def test_remove_deletes_the_client(instance):
    client_id = _fields(_run("clients", "add", "--instance", instance, *SHOP).stdout)["client_id"]

    result = _run("clients", "remove", "--instance", instance, client_id)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"removed client {client_id}\n"
    assert _stored_clients(instance) == []


def test_remove_of_an_unknown_client_fails(instance):
    _run("clients", "add", "--instance", instance, *SHOP)

    result = _run("clients", "remove", "--instance", instance, "no-such-client")

    assert result.exit_code == 1
    assert "no client 'no-such-client' is registered" in result.output
    assert len(_stored_clients(instance)) == 1


@pytest.mark.postgres
def test_round_trip_on_postgresql(tmp_path, postgres_database):
    env = {"DATABASE_URL": postgres_database}
    instance = tmp_path / "instance"
    assert _run("init", "--instance", instance, env=env).exit_code == 0

    client_id = _fields(_run("clients", "add", "--instance", instance, *SHOP, env=env).stdout)["client_id"]
    listed = json.loads(_run("clients", "list", "--instance", instance, "--json", env=env).stdout)
    removed = _run("clients", "remove", "--instance", instance, client_id, env=env)

    assert [client["client_id"] for client in listed] == [client_id]
    assert removed.exit_code == 0, removed.output
    engine, registry = _registry(postgres_database)
    try:
        assert registry.list() == []
    finally:
        engine.dispose()


# --- bad input: a usage error naming the option, and nothing written --------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("--name", "Shop", "--redirect-uri", "http://shop.example/cb"),
                     "Invalid value for --redirect-uri: 'http://shop.example/cb' must use https",
                     id="http-redirect-off-loopback"),
        pytest.param(("--name", "Shop", "--redirect-uri", "https://shop.example/cb#x"),
                     "Invalid value for --redirect-uri: 'https://shop.example/cb#x' must not include a fragment",
                     id="redirect-with-fragment"),
        pytest.param(("--name", "Shop", "--redirect-uri", "/callback"),
                     "Invalid value for --redirect-uri: '/callback' is not an absolute URI", id="relative-redirect"),
        pytest.param((*SHOP, "--auth-method", "client_secret_post"),
                     "Invalid value for --auth-method: must be client_secret_basic or private_key_jwt",
                     id="unknown-auth-method"),
        pytest.param((*SHOP, "--auth-method", "private_key_jwt"),
                     "Invalid value for --jwks: private_key_jwt needs the client's public keys",
                     id="private-key-jwt-without-keys"),
        pytest.param((*SHOP, "--auth-method", "private_key_jwt", "--jwks-uri", "http://shop.example/jwks"),
                     "Invalid value for --jwks-uri:", id="jwks-uri-over-http"),
        pytest.param((*SHOP, "--jwks-uri", "https://shop.example/jwks"),
                     "Invalid value for --jwks-uri: keys are for private_key_jwt", id="keys-with-a-secret"),
        pytest.param((*SHOP, "--scope", "name"), "Invalid value for --scope: must include openid",
                     id="scope-without-openid"),
        pytest.param((*SHOP, "--scope", "openid", "--scope", "email"),
                     "Invalid value for --scope: unknown scope 'email'", id="unknown-scope"),
        pytest.param((*SHOP, "--id-token-alg", "HS256"),
                     "Invalid value for --id-token-alg: must be ES256 or RS256", id="symmetric-id-token-alg"),
        pytest.param(("--name", "Shop", "--redirect-uri", "https://a.example/cb", "--redirect-uri",
                      "https://b.example/cb"), "Invalid value for --sector: the redirect URIs are on several hosts",
                     id="mixed-hosts-without-sector"),
        pytest.param((*SHOP, "--sector", "https://shop.example"),
                     "Invalid value for --sector: 'https://shop.example' must be a lower-case host name",
                     id="sector-is-a-url"),
        pytest.param(("--name", "", "--redirect-uri", "https://shop.example/cb"),
                     "Invalid value for --name: must not be empty", id="empty-name"),
        pytest.param(("--redirect-uri", "https://shop.example/cb"), "Missing option '--name'", id="no-name"),
        pytest.param(("--name", "Shop"), "Missing option '--redirect-uri'", id="no-redirect-uri"),
        pytest.param((*SHOP, "--auth-method", "private_key_jwt", "--jwks", "/nonexistent/jwks.json"),
                     "Invalid value for '--jwks': File '/nonexistent/jwks.json' does not exist",
                     id="jwks-file-missing"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(instance, args, message):
    result = _run("clients", "add", "--instance", instance, *args)

    assert result.exit_code == 2
    assert message in result.output
    assert _stored_clients(instance) == []


def test_jwks_file_that_is_not_json_is_refused(instance, tmp_path):
    not_json = tmp_path / "jwks.json"
    not_json.write_text("{keys: []")

    result = _run("clients", "add", "--instance", instance, *SHOP, "--auth-method", "private_key_jwt",
                  "--jwks", not_json)

    assert result.exit_code == 2
    assert f"Invalid value for --jwks: {not_json} is not a readable JSON file" in result.output
    assert _stored_clients(instance) == []


def test_jwks_file_with_a_private_key_is_refused(instance, tmp_path):
    private = tmp_path / "jwks.json"
    private.write_text(json.dumps({"keys": [EC_KEY.as_dict(private=True)]}))

    result = _run("clients", "add", "--instance", instance, *SHOP, "--auth-method", "private_key_jwt",
                  "--jwks", private)

    assert result.exit_code == 2
    assert "Invalid value for --jwks: key 1 has private key members (d): register public keys only" in result.output
    assert _stored_clients(instance) == []


def test_jwks_together_with_jwks_uri_is_refused(instance, jwks_file):
    result = _run("clients", "add", "--instance", instance, *SHOP, "--auth-method", "private_key_jwt",
                  "--jwks", jwks_file, "--jwks-uri", "https://shop.example/jwks.json")

    assert result.exit_code == 2
    assert "Invalid value for --jwks: give jwks or jwks_uri, not both" in result.output
    assert _stored_clients(instance) == []


# --- a database that `idp init` has not prepared ---------------------------------------------


@pytest.mark.parametrize(
    "args",
    [pytest.param(("add", *SHOP), id="add"), pytest.param(("list",), id="list"),
     pytest.param(("remove", "some-client"), id="remove")],
)
def test_instance_without_a_database_is_refused_and_nothing_is_created(tmp_path, args):
    instance = tmp_path / "instance"

    result = _run("clients", *args, "--instance", instance)

    assert result.exit_code == 1
    assert f"{instance} has no database: run `idp init` first" in result.output
    assert not instance.exists()


def test_database_behind_the_code_is_refused(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    engine = make_engine(f"sqlite:///{instance / 'idp.sqlite3'}")
    with migration_connection(engine) as connection:
        command.upgrade(alembic_config(connection), "0001")
    engine.dispose()

    result = _run("clients", "add", "--instance", instance, *SHOP)

    assert result.exit_code == 1
    assert f"the database is at revision 0001, not {head_revision()}: run `idp init` first" in result.output


def test_database_no_migration_has_touched_is_refused(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "idp.sqlite3").touch()

    result = _run("clients", "list", "--instance", instance)

    assert result.exit_code == 1
    assert f"the database is at revision none, not {head_revision()}: run `idp init` first" in result.output


def test_unreachable_database_is_refused(tmp_path):
    result = _run("clients", "list", "--instance", tmp_path,
                  env={"DATABASE_URL": "postgresql://idp@127.0.0.1:1/idp"})

    assert result.exit_code == 1
    assert "cannot read the database: OperationalError" in result.output


def test_unsupported_database_is_refused(tmp_path):
    result = _run("clients", "list", "--instance", tmp_path, env={"DATABASE_URL": "mysql://idp@db.example/idp"})

    assert result.exit_code == 1
    assert "the durable store runs on SQLite or PostgreSQL, not mysql" in result.output
