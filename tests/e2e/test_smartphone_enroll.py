"""``smartphone enroll`` against a running portal and J-LIS (werkzeug servers in threads), then OpenSSL
judges the certificates the phone received; ``idp pki sync-revocations`` fills the portal's CRL cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from werkzeug.serving import make_server

from idp.app import create_app, services
from idp.ceremonies.records import DeviceRecord
from idp.cli import main as idp_main
from idp.settings import load_settings
from smartphone.cli import main as smartphone_main
from smartphone.jlis_server import create_jlis_app

PASSPHRASE = "e2e enrollment passphrase"
SIM_ENV = {"SMARTPHONE_PASSPHRASE": PASSPHRASE}
OPENSSL = shutil.which("openssl")


class _Late:
    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@contextmanager
def _serving(app: _Late) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def sim(*args: str) -> Result:
    return CliRunner().invoke(smartphone_main, list(args), env=SIM_ENV)


def idp(config: Path, *args: str) -> Result:
    return CliRunner().invoke(idp_main, [*args[:2], "--config", str(config), *args[2:]])


@pytest.fixture
def setup(tmp_path) -> Iterator[dict[str, Any]]:
    state = tmp_path / "sim"
    jlis_app, portal_app = _Late(), _Late()
    with _serving(jlis_app) as jlis_url, _serving(portal_app) as portal_url:
        assert sim("jlis", "create", "--state", str(state), "--url", jlis_url).exit_code == 0
        jlis_app.app = create_jlis_app(state, passphrase=PASSPHRASE.encode())
        issued = sim("card", "issue", "--state", str(state), "--card", "taro", "--name", "山田　太郎",
                     "--address", "東京都千代田区永田町1-7-1", "--birthdate", "1990-04-01", "--sex", "male",
                     "--prefecture", "東京都", "--city", "千代田区", "--auth-pin", "1234", "--sign-pin", "TARO2024")
        assert issued.exit_code == 0, issued.output
        assert sim("phone", "create", "--state", str(state), "--phone", "pixel").exit_code == 0
        jlis = state / "jlis"
        config = tmp_path / "idp.toml"
        config.write_text(
            f'issuer = "{portal_url}"\ninstance = "{tmp_path / "instance"}"\n[pki]\n'
            f'jlis_roots = ["{jlis / "jlis-root.crt"}"]\n'
            f'jlis_intermediates = ["{jlis / "jlis-auth-ca.crt"}", "{jlis / "jlis-sign-ca.crt"}"]\n'
            f'jlis_crl_urls = ["{jlis_url}/crl/jlis-auth-ca.crl", "{jlis_url}/crl/jlis-sign-ca.crl"]\n'
            f'attestation_roots = ["{state / "vendors" / "MynaDevices" / "root.crt"}"]\n',
            encoding="utf-8",
        )
        assert idp(config, "init").exit_code == 0
        synced = idp(config, "pki", "sync-revocations")
        assert synced.exit_code == 0, synced.output
        portal_app.app = create_app(load_settings(config))
        yield {"state": state, "portal": portal_url, "jlis": jlis_url, "config": config, "app": portal_app.app,
               "instance": tmp_path / "instance"}


def enroll(setup, *, auth_pin: str = "1234") -> Result:
    return sim("enroll", "--state", str(setup["state"]), "--phone", "pixel", "--card", "taro",
               "--portal", setup["portal"], "--auth-pin", auth_pin, "--sign-pin", "TARO2024")


def devices(setup) -> int:
    with services(setup["app"]).sessions.begin() as session:
        return session.scalar(select(func.count()).select_from(DeviceRecord))


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_enrolled_phone_holds_certificates_openssl_verifies(setup, tmp_path):
    result = enroll(setup)
    assert result.exit_code == 0, result.output
    assert "enrolled at" in result.output
    record = json.loads((setup["state"] / "phones" / "pixel" / "enrollment.json").read_text(encoding="utf-8"))
    enrollment = record["enrollment"]
    assert enrollment["portal"] == setup["portal"]
    pki = setup["instance"] / "pki"
    chain = tmp_path / "chain.pem"
    chain.write_text("".join(enrollment["chain"]), encoding="ascii")
    for name in ("auth_certificate", "sign_certificate"):
        leaf = tmp_path / f"{name}.pem"
        leaf.write_text(enrollment[name], encoding="ascii")
        verified = subprocess.run(
            [OPENSSL, "verify", "-x509_strict", "-CAfile", str(pki / "portal-root.crt.pem"),
             "-untrusted", str(chain), str(leaf)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout == f"{leaf}: OK\n"
    assert devices(setup) == 1


def test_wrong_card_pin_is_reported_and_nothing_is_enrolled(setup):
    result = enroll(setup, auth_pin="9999")
    assert result.exit_code == 1
    assert "wrong user-authentication PIN: 2 tries left" in result.output
    assert not (setup["state"] / "phones" / "pixel" / "enrollment.json").exists()
    assert devices(setup) == 0
    shown = sim("card", "show", "--state", str(setup["state"]), "--card", "taro")
    assert "PIN tries left: 2" in shown.output


def test_revoked_card_cannot_enroll(setup):
    assert sim("card", "revoke", "--state", str(setup["state"]), "--card", "taro",
               "--reason", "keyCompromise").exit_code == 0
    result = enroll(setup)
    assert result.exit_code == 1
    assert "https://id.myna.example/problems/card-certificate-rejected" in result.output
    assert devices(setup) == 0


def test_unreachable_portal_is_reported(setup):
    result = sim("enroll", "--state", str(setup["state"]), "--phone", "pixel", "--card", "taro",
                 "--portal", "http://127.0.0.1:1", "--auth-pin", "1234", "--sign-pin", "TARO2024")
    assert result.exit_code == 1
    assert "cannot be reached" in result.output
