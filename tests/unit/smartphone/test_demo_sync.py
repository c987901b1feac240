"""``myna-demo sync`` refuses, with one line saying what to do, when there is no demo to sync; the
shop's saved registration is kept only while it has every scope the demo uses."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

from smartphone import demo
from smartphone.demo import main


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def test_sync_without_a_demo_says_to_start_one(tmp_path):
    result = CliRunner().invoke(main, ["sync", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == (f"Error: no demo is set up in {tmp_path}: "
                             f"start it with `myna-demo --dir {tmp_path}` first\n")


def test_sync_takes_the_dir_given_before_it(tmp_path):
    result = CliRunner().invoke(main, ["--dir", str(tmp_path / "elsewhere"), "sync"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: no demo is set up in {tmp_path / 'elsewhere'}:")


def test_sync_while_the_demo_is_stopped_says_to_start_it(tmp_path):
    jlis_url = f"http://127.0.0.1:{closed_port()}"
    (tmp_path / "sim" / "jlis").mkdir(parents=True)
    (tmp_path / "sim" / "jlis" / "jlis.json").write_text(json.dumps({"base_url": jlis_url}), encoding="utf-8")
    (tmp_path / "portal-url").write_text("http://127.0.0.1:8000\n", encoding="ascii")
    (tmp_path / "passphrase").write_text("not a secret of the repo\n", encoding="ascii")
    result = CliRunner().invoke(main, ["sync", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == (f"Error: the demo's J-LIS does not answer at {jlis_url}: start the demo "
                             f"(`myna-demo --dir {tmp_path}`) and run this beside it\n")


def _saved_client(directory, scope: str) -> None:
    (directory / "rp-client.json").write_text(json.dumps({
        "client_id": "old", "client_secret": "old-secret", "redirect_uris": ["http://127.0.0.1:8080/callback"],
        "scope": scope,
    }), encoding="utf-8")


def test_a_saved_shop_registration_with_every_scope_is_kept(tmp_path, monkeypatch):
    _saved_client(tmp_path, " ".join(demo.RP_SCOPES))
    monkeypatch.setattr(demo, "_idp", lambda *_args: pytest.fail("registered again"))
    assert demo._rp_client(tmp_path, {}, "http://127.0.0.1:8080/callback") == {
        "client_id": "old", "client_secret": "old-secret",
    }


def test_a_saved_shop_registration_without_the_sign_scope_is_made_again(tmp_path, monkeypatch):
    """A .demo set up before signing: the shop could not push a signing request with it."""
    _saved_client(tmp_path, "openid name address birthdate gender")
    calls = []

    def register(_environment, *args):
        calls.append(args)
        return json.dumps({"client_id": "new", "client_secret": "new-secret", "scope": " ".join(demo.RP_SCOPES),
                           "redirect_uris": ["http://127.0.0.1:8080/callback"]})

    monkeypatch.setattr(demo, "_idp", register)
    assert demo._rp_client(tmp_path, {}, "http://127.0.0.1:8080/callback") == {
        "client_id": "new", "client_secret": "new-secret",
    }
    assert [args[args.index("--scope") + 1] for args in calls] == ["openid"]
    assert "sign" in calls[0]
    assert json.loads((tmp_path / "rp-client.json").read_text(encoding="utf-8"))["client_id"] == "new"
