"""Settings: one typed object from defaults, TOML and the environment; unknown keys refused."""

from datetime import timedelta
from pathlib import Path

import pytest

from idp.settings import Settings, SettingsError, example_toml, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_example_file_is_generated_from_the_settings_docstrings():
    assert (REPO / "config" / "idp.example.toml").read_text(encoding="utf-8") == example_toml()


def test_example_file_loads_to_the_defaults():
    assert load_settings(REPO / "config" / "idp.example.toml", environ={}) == Settings()


def test_no_file_and_no_environment_gives_the_defaults():
    assert load_settings(environ={}) == Settings()


def test_toml_file_sets_nested_values(tmp_path):
    path = tmp_path / "idp.toml"
    path.write_text('issuer = "https://id.example.jp"\n[pki]\ncrl_lifetime = 3600\n', encoding="utf-8")
    settings = load_settings(path, environ={})
    assert settings.issuer == "https://id.example.jp"
    assert settings.pki.crl_lifetime == timedelta(hours=1)


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "idp.toml"
    path.write_text("[pki]\ncrl_lifetime = 3600\n", encoding="utf-8")
    settings = load_settings(path, environ={"IDP_PKI__CRL_LIFETIME": "60", "IDP_ISSUER": "https://a.example"})
    assert settings.pki.crl_lifetime == timedelta(seconds=60)
    assert settings.issuer == "https://a.example"


def test_conventional_connection_variables_are_read():
    settings = load_settings(environ={"DATABASE_URL": "postgresql://db/x", "REDIS_URL": "redis://r/0"})
    assert (settings.database_url, settings.redis_url) == ("postgresql://db/x", "redis://r/0")


def test_idp_config_names_the_file(tmp_path):
    path = tmp_path / "idp.toml"
    path.write_text('issuer = "https://b.example"\n', encoding="utf-8")
    assert load_settings(environ={"IDP_CONFIG": str(path)}).issuer == "https://b.example"


def test_list_settings_read_from_comma_separated_environment():
    settings = load_settings(environ={"IDP_PKI__JLIS_ROOTS": "/a.pem,/b.pem"})
    assert settings.pki.jlis_roots == (Path("/a.pem"), Path("/b.pem"))


def test_default_database_is_the_instance_sqlite_file(tmp_path):
    settings = Settings(instance=tmp_path)
    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve() / 'idp.sqlite3'}"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"IDP_ISSUR": "https://typo.example"}, "unknown setting issur"),
        ({"IDP_PKI__CRL_LIFETME": "60"}, "unknown setting pki.crl_lifetme"),
        ({"IDP_PKI__CRL_LIFETIME": "soon"}, "setting pki.crl_lifetime: cannot read 'soon'"),
        ({"IDP_PKI__CRL_LIFETIME": "0"}, "setting pki.crl_lifetime: cannot read '0': must be positive"),
        ({"IDP_PKI": "x"}, "setting pki must be a table"),
    ],
    ids=[
        "unknown-top-level", "unknown-nested", "duration-not-a-number", "duration-not-positive",
        "section-not-a-table",
    ],
)
def test_bad_environment_is_refused_naming_the_key(environ, message):
    with pytest.raises(SettingsError) as refused:
        load_settings(environ=environ)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    "issuer",
    [
        "http://id.example.jp", "ftp://127.0.0.1", "https://id.example.jp/", "https://id.example.jp?x=1",
        "not a url",
    ],
    ids=["plain-http-off-loopback", "not-http", "trailing-slash", "query", "garbage"],
)
def test_unsafe_or_malformed_issuer_is_refused(issuer):
    with pytest.raises(SettingsError, match="issuer must"):
        Settings(issuer=issuer)


def test_unreadable_toml_is_refused(tmp_path):
    path = tmp_path / "idp.toml"
    path.write_text("issuer = [unclosed\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(path, environ={})


def test_missing_toml_file_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(tmp_path / "absent.toml", environ={})
