"""``idp pki sync-revocations`` against a J-LIS served over HTTP: stores verified CRLs, refuses the rest."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from idp.cli import main as idp_main
from smartphone.cli import main as smartphone_main
from smartphone.jlis_server import create_jlis_app

PASSPHRASE = "e2e sync passphrase"


class _Late:
    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@contextmanager
def _serving(app: Callable[..., Any]) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@contextmanager
def served_jlis(state: Path) -> Iterator[str]:
    late = _Late()
    with _serving(late) as url:
        created = CliRunner().invoke(smartphone_main, ["jlis", "create", "--state", str(state), "--url", url],
                                     env={"SMARTPHONE_PASSPHRASE": PASSPHRASE})
        assert created.exit_code == 0, created.output
        late.app = create_jlis_app(state, passphrase=PASSPHRASE.encode())
        yield url


def _static(body: bytes) -> Callable[..., Any]:
    return Response(body, mimetype="application/pkix-crl")


def configure(tmp_path: Path, state: Path, crl_urls: list[str]) -> Path:
    jlis = state / "jlis"
    config = tmp_path / "idp.toml"
    urls = ", ".join(f'"{url}"' for url in crl_urls)
    config.write_text(
        f'instance = "{tmp_path / "instance"}"\n[pki]\njlis_fetch_timeout = 2\n'
        f'jlis_roots = ["{jlis / "jlis-root.crt"}"]\n'
        f'jlis_intermediates = ["{jlis / "jlis-auth-ca.crt"}", "{jlis / "jlis-sign-ca.crt"}"]\n'
        f"jlis_crl_urls = [{urls}]\n",
        encoding="utf-8",
    )
    assert idp(config, "init").exit_code == 0
    return config


def idp(config: Path, *args: str) -> Result:
    return CliRunner().invoke(idp_main, [*args, "--config", str(config)])


def sync(config: Path) -> Result:
    return idp(config, "pki", "sync-revocations")


@pytest.fixture
def jlis(tmp_path) -> Iterator[tuple[Path, str]]:
    state = tmp_path / "sim"
    with served_jlis(state) as url:
        yield state, url


def test_sync_stores_every_crl_then_reports_them_unchanged(tmp_path, jlis):
    state, url = jlis
    config = configure(tmp_path, state, [f"{url}/crl/jlis-auth-ca.crl", f"{url}/crl/jlis-sign-ca.crl"])
    first = sync(config)
    assert first.exit_code == 0, first.output
    assert first.output.count("stored ") == 3  # the root's CRL from the CAs' distribution points, and both CAs'
    assert f"stored {url}/crl/jlis-root.crl: CRL number" in first.output
    second = sync(config)
    assert second.exit_code == 0
    assert second.output.count("stored ") == 3  # J-LIS signs a new CRL, with a higher number, on every fetch


def test_crl_signed_by_another_key_is_refused_and_not_stored(tmp_path, jlis):
    state, _url = jlis
    with served_jlis(tmp_path / "impostor") as impostor:
        config = configure(tmp_path, state, [f"{impostor}/crl/jlis-auth-ca.crl"])
        result = sync(config)
    assert result.exit_code == 1
    crl = f"{impostor}/crl/jlis-auth-ca.crl"
    assert f"refused {crl}: the CRL at {crl} does not verify with its issuer's key (bad_signature)" in result.output
    assert "1 of 2 CRLs could not be stored" in result.output


def test_older_crl_is_refused(tmp_path, jlis):
    state, url = jlis
    older = requests.get(f"{url}/crl/jlis-auth-ca.crl", timeout=10).content
    config = configure(tmp_path, state, [f"{url}/crl/jlis-auth-ca.crl"])
    assert sync(config).exit_code == 0
    with _serving(_static(older)) as stale:
        config = configure(tmp_path, state, [f"{stale}/jlis-auth-ca.crl"])
        result = sync(config)
    assert result.exit_code == 1
    assert "older than the stored number" in result.output
    assert "(older)" in result.output


def test_unreachable_jlis_is_an_error(tmp_path, jlis):
    state, _url = jlis
    config = configure(tmp_path, state, ["http://127.0.0.1:1/crl/jlis-auth-ca.crl"])
    result = sync(config)
    assert result.exit_code == 1
    crl = "http://127.0.0.1:1/crl/jlis-auth-ca.crl"
    assert f"refused {crl}: {crl} cannot be reached: ConnectionError (fetch_failed)" in result.output


def test_sync_without_configured_jlis_is_an_error(tmp_path):
    config = tmp_path / "idp.toml"
    config.write_text(f'instance = "{tmp_path / "instance"}"\n', encoding="utf-8")
    result = sync(config)
    assert result.exit_code == 1
    assert "no J-LIS certificate is configured" in result.output
