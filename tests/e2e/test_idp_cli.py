"""The portal's command line as an operator uses it: init, serve, settings."""

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from sqlalchemy import inspect

from idp.cli import main
from idp.settings import example_toml
from idp.store.database import current_revision, head_revision, make_engine

IDP = Path(sys.executable).with_name("idp")


def _run(*args, env=None):
    cleared = {"IDP_CONFIG": None, "DATABASE_URL": None, "REDIS_URL": None}
    return CliRunner(env={**cleared, **(env or {})}).invoke(main, list(args), catch_exceptions=False)


def _snapshot(directory: Path) -> dict[str, tuple[str, float]]:
    return {
        str(path.relative_to(directory)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith("idp.sqlite3-")
    }


def test_init_creates_database_and_cas(tmp_path):
    instance = tmp_path / "instance"
    result = _run("init", "--instance", str(instance))
    assert result.exit_code == 0, result.output
    assert "created the portal CAs" in result.output
    engine = make_engine(f"sqlite:///{instance / 'idp.sqlite3'}")
    assert current_revision(engine) == head_revision()
    for name in ("portal-root", "smartphone-ca"):
        key = instance / "pki" / f"{name}.key.pem"
        assert key.stat().st_mode & 0o777 == 0o600
        x509.load_pem_x509_certificate((instance / "pki" / f"{name}.crt.pem").read_bytes())


def test_init_twice_changes_nothing(tmp_path):
    instance = tmp_path / "instance"
    assert _run("init", "--instance", str(instance)).exit_code == 0
    before = _snapshot(instance)
    second = _run("init", "--instance", str(instance))
    assert second.exit_code == 0, second.output
    assert "CAs already present" in second.output
    assert _snapshot(instance) == before


@pytest.mark.postgres
def test_init_uses_postgresql_when_database_url_is_set(tmp_path, postgres_database):
    instance = tmp_path / "instance"
    result = _run("init", "--instance", str(instance), env={"DATABASE_URL": postgres_database})
    assert result.exit_code == 0, result.output
    assert not (instance / "idp.sqlite3").exists()
    engine = make_engine(postgres_database)
    try:
        assert current_revision(engine) == head_revision()
        assert "pki_certificates" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_init_refuses_an_instance_path_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a directory")
    result = _run("init", "--instance", str(target))
    assert result.exit_code == 2
    assert f"Invalid value for '--instance': Directory '{target}' is a file." in result.output


def test_init_refuses_an_unknown_setting_and_creates_nothing(tmp_path):
    instance = tmp_path / "instance"
    result = _run("init", "--instance", str(instance), env={"IDP_PKI__CRL_LIFETME": "60"})
    assert result.exit_code == 1
    assert "unknown setting pki.crl_lifetme" in result.output
    assert not instance.exists()


def test_init_refuses_an_unreadable_config_file(tmp_path):
    config = tmp_path / "idp.toml"
    config.write_text("issuer = [\n")
    result = _run("init", "--config", str(config), "--instance", str(tmp_path / "instance"))
    assert result.exit_code == 1
    assert "cannot read settings file" in result.output
    assert not (tmp_path / "instance").exists()


def test_serve_refuses_a_directory_that_is_not_an_instance(tmp_path):
    result = _run("serve", "--instance", str(tmp_path))
    assert result.exit_code == 1
    assert "run `idp init` first" in result.output


def test_serve_refuses_several_workers_on_the_in_process_store(tmp_path):
    instance = tmp_path / "instance"
    _run("init", "--instance", str(instance))
    result = _run("serve", "--instance", str(instance), "--workers", "2")
    assert result.exit_code == 1
    assert "serves one worker only: set REDIS_URL" in result.output


def test_settings_example_prints_the_documented_file():
    result = _run("settings", "example")
    assert result.exit_code == 0
    assert result.output == example_toml()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_console_script_inits_and_serves_the_pki_under_gunicorn(tmp_path):
    instance = tmp_path / "instance"
    env = {key: value for key, value in os.environ.items() if not key.startswith("IDP_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    subprocess.run(
        [IDP, "init", "--instance", instance], check=True, env=env, capture_output=True, timeout=60,
    )
    port = _free_port()
    server = subprocess.Popen(
        [IDP, "serve", "--instance", instance, "--bind", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/pki/ca/portal-root.crt", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/pkix-cert"
        served = x509.load_der_x509_certificate(response.content)
        on_disk = x509.load_pem_x509_certificate((instance / "pki" / "portal-root.crt.pem").read_bytes())
        assert served == on_disk
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_init_refuses_a_configured_instance_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a directory")
    result = _run("init", env={"IDP_INSTANCE": str(target)})
    assert result.exit_code == 1
    assert f"{target} exists and is not a directory" in result.output
