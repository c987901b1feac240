"""The ``smartphone card renew|move|reissue`` commands: the card directory is replaced whole, J-LIS
refusals are one-line errors, and nothing is left half-written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from smartphone.cli import main
from smartphone.state import State

PASSPHRASE = "cli life events"
ENV = {"SMARTPHONE_PASSPHRASE": PASSPHRASE}


def run(*args: str):
    return CliRunner().invoke(main, list(args), env=ENV)


@pytest.fixture
def state_dir(tmp_path):
    root = tmp_path / "sim"
    assert run("jlis", "create", "--state", str(root), "--url", "http://127.0.0.1:8100").exit_code == 0
    issued = run("card", "issue", "--state", str(root), "--card", "taro", "--name", "山田　太郎",
                 "--address", "東京都千代田区永田町1-7-1", "--birthdate", "1990-04-01", "--sex", "male",
                 "--prefecture", "東京都", "--city", "千代田区", "--auth-pin", "1234", "--sign-pin", "TARO2024")
    assert issued.exit_code == 0, issued.output
    return root


def serials(root) -> tuple[int, int]:
    certificates = State(root).card_certificates("taro")
    return certificates.auth.serial_number, certificates.sign.serial_number


def test_renew_replaces_both_certificates_and_the_card_still_signs(state_dir):
    before = serials(state_dir)
    renewed = run("card", "renew", "--state", str(state_dir), "--card", "taro")
    assert renewed.exit_code == 0, renewed.output
    after = serials(state_dir)
    assert set(before).isdisjoint(after)
    assert renewed.output.splitlines()[1] == f"  user-authentication certificate {after[0]:x}"
    signed = run("card", "sign", "--state", str(state_dir), "--card", "taro", "--key", "auth",
                 "--digest", "00" * 32, "--pin", "1234")
    assert signed.exit_code == 0, signed.output
    assert not any(path.name.startswith(".") for path in state_dir.iterdir())  # no pending or retired directory
    assert not any(path.name.startswith(".") for path in (state_dir / "cards").iterdir())


def test_move_keeps_the_authentication_certificate(state_dir):
    before = serials(state_dir)
    moved = run("card", "move", "--state", str(state_dir), "--card", "taro", "--address", "大阪府大阪市北区梅田1-1",
                "--prefecture", "大阪府", "--city", "大阪市")
    assert moved.exit_code == 0, moved.output
    after = serials(state_dir)
    assert after[0] == before[0]
    assert after[1] != before[1]
    shown = run("card", "show", "--state", str(state_dir), "--card", "taro")
    assert "  address: 大阪府大阪市北区梅田1-1" in shown.output


def test_reissue_gives_a_card_with_the_new_pins(state_dir):
    reissued = run("card", "reissue", "--state", str(state_dir), "--card", "taro", "--auth-pin", "5678",
                   "--sign-pin", "NEW2025")
    assert reissued.exit_code == 0, reissued.output
    old_pin = run("card", "sign", "--state", str(state_dir), "--card", "taro", "--key", "auth",
                  "--digest", "00" * 32, "--pin", "1234")
    assert old_pin.exit_code == 1
    assert "wrong user-authentication PIN" in old_pin.output


def test_renewing_a_revoked_card_is_refused_and_changes_nothing(state_dir):
    revoked = run("card", "revoke", "--state", str(state_dir), "--card", "taro", "--reason", "keyCompromise")
    assert revoked.exit_code == 0
    before = serials(state_dir)
    renewed = run("card", "renew", "--state", str(state_dir), "--card", "taro")
    assert renewed.exit_code == 1
    assert renewed.output == "Error: J-LIS refused the renewal: the user-authentication certificate is revoked\n"
    assert serials(state_dir) == before
    assert not any(path.name.startswith(".") for path in state_dir.iterdir())


def test_a_move_to_an_overlong_address_is_a_bad_parameter(state_dir):
    moved = run("card", "move", "--state", str(state_dir), "--card", "taro", "--address", "大" * 201,
                "--prefecture", "大阪府", "--city", "大阪市")
    assert moved.exit_code == 2
    assert "Invalid value for '--address': address must have 1 to 200 characters" in moved.output
