"""The ``smartphone`` command end to end: every command, every bad input, OpenSSL as the judge.

Commands run in-process through click's CliRunner, except one run of the installed console
script (``jlis serve``). A refused command must exit non-zero with a one-line error and leave
the state directory byte for byte as it was.
"""

import base64
import hashlib
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from webauthn import verify_registration_response
from webauthn.helpers.structs import AttestationFormat
from werkzeug.serving import make_server

from smartphone.cli import main
from smartphone.jlis_server import create_jlis_app
from smartphone.state import State

PASSPHRASE = "correct horse battery staple"
ENV = {
    "SMARTPHONE_PASSPHRASE": PASSPHRASE, "SMARTPHONE_AUTH_PIN": None, "SMARTPHONE_SIGN_PIN": None,
    "SMARTPHONE_PIN": None,
}
NO_PASSPHRASE = {**ENV, "SMARTPHONE_PASSPHRASE": None}
WRONG_PASSPHRASE = {**ENV, "SMARTPHONE_PASSPHRASE": "wrong"}
PERSON = [
    "--name", "山田　太郎", "--address", "東京都千代田区千代田1-1", "--birthdate", "1990-04-01", "--sex", "male",
    "--prefecture", "東京都", "--city", "千代田区",
]
PINS = ["--auth-pin", "1234", "--sign-pin", "ABC123"]
DIGEST = hashlib.sha256(b"document").hexdigest()
SIGN_PIN_RULE = "the signature PIN must be 6 to 16 upper-case letters and digits, with at least one of each"
NAME_RULE = "a card name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
DATE_FORMAT = "does not match the format '%Y-%m-%d'."


def run(*args: str, env: dict | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV if env is None else env, input=stdin)


def last_line(result: Result) -> str:
    return result.stderr.strip().splitlines()[-1]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: equal trees mean nothing was written."""
    if not root.exists():
        return {}
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A state directory made by the CLI: a J-LIS and the card 'taro'."""
    root = tmp_path_factory.mktemp("template") / "world"
    assert run("jlis", "create", "--state", str(root), "--url", "http://127.0.0.1:8100").exit_code == 0
    assert run("card", "issue", "--state", str(root), "--card", "taro", *PERSON, *PINS).exit_code == 0
    return root


@pytest.fixture
def world(template, tmp_path) -> Path:
    root = tmp_path / "world"
    shutil.copytree(template, root)
    return root


@pytest.fixture
def before(world) -> dict[str, bytes]:
    return tree(world)


# -- smartphone jlis create ---------------------------------------------------------------------


def test_jlis_create_makes_the_root_and_two_issuing_cas(tmp_path):
    root = tmp_path / "world"
    result = run("jlis", "create", "--state", str(root), "--url", "http://127.0.0.1:8100/")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == f"J-LIS created in {root / 'jlis'}"
    assert sorted(path.name for path in (root / "jlis").glob("*.crt")) == [
        "jlis-auth-ca.crt", "jlis-root.crt", "jlis-sign-ca.crt",
    ]
    assert "CRLs at http://127.0.0.1:8100/crl/<ca>.crl, OCSP at http://127.0.0.1:8100/ocsp" in result.stdout


def test_jlis_create_twice_refuses_to_overwrite(world, before):
    result = run("jlis", "create", "--state", str(world), "--url", "http://127.0.0.1:9999")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {world} already holds a J-LIS; it is never overwritten\n"
    assert tree(world) == before


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://jlis.test", "the J-LIS URL must be an http:// or https:// URL with a host"),
    ("jlis.test", "the J-LIS URL must be an http:// or https:// URL with a host"),
    ("http://jlis.test/?x=1", "the J-LIS URL must not carry a query, a fragment or credentials"),
])
def test_jlis_create_with_a_bad_url_writes_nothing(tmp_path, url, message):
    result = run("jlis", "create", "--state", str(tmp_path / "world"), "--url", url)
    assert result.exit_code == 2
    assert last_line(result) == f"Error: Invalid value for '--url': {message}"
    assert not (tmp_path / "world").exists()


def test_jlis_create_without_a_url_is_refused(tmp_path):
    result = run("jlis", "create", "--state", str(tmp_path / "world"))
    assert result.exit_code == 2
    assert last_line(result) == "Error: Missing option '--url'."


def test_jlis_create_without_a_passphrase_writes_nothing(tmp_path):
    result = run("jlis", "create", "--state", str(tmp_path / "world"), "--url", "http://x.test", env=NO_PASSPHRASE)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: a passphrase is required to encrypt private keys: $SMARTPHONE_PASSPHRASE is empty or unset "
        "(use --passphrase-file or set SMARTPHONE_PASSPHRASE)\n"
    )
    assert not (tmp_path / "world").exists()


def test_jlis_create_with_an_empty_passphrase_file_writes_nothing(tmp_path):
    empty = tmp_path / "passphrase"
    empty.write_text("\n")
    result = run("jlis", "create", "--state", str(tmp_path / "world"), "--url", "http://x.test",
                 "--passphrase-file", str(empty), env=NO_PASSPHRASE)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: a passphrase is required to encrypt private keys: the passphrase file {empty} is empty or unset "
        "(use --passphrase-file or set SMARTPHONE_PASSPHRASE)\n"
    )
    assert not (tmp_path / "world").exists()


def test_passphrase_file_encrypts_the_state(tmp_path):
    secret = tmp_path / "passphrase"
    secret.write_text("from a file\n")
    root = tmp_path / "world"
    created = run("jlis", "create", "--state", str(root), "--url", "http://x.test", "--passphrase-file", str(secret),
                  env=NO_PASSPHRASE)
    assert created.exit_code == 0
    refused = run("card", "issue", "--state", str(root), "--card", "taro", *PERSON, *PINS)
    assert refused.exit_code == 1
    assert refused.stderr == f"Error: the passphrase does not decrypt the keys in {root}\n"


# -- smartphone jlis serve ----------------------------------------------------------------------


def test_jlis_serve_without_a_jlis_is_refused(tmp_path):
    result = run("jlis", "serve", "--state", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path} holds no J-LIS: run `smartphone jlis create` first\n"


def test_jlis_serve_with_the_wrong_passphrase_is_refused(world):
    result = run("jlis", "serve", "--state", str(world), env=WRONG_PASSPHRASE)
    assert result.exit_code == 1
    assert result.stderr == f"Error: the passphrase does not decrypt the keys in {world}\n"


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_jlis_serve_on_an_impossible_port_is_refused(world, port):
    result = run("jlis", "serve", "--state", str(world), "--port", port)
    assert result.exit_code == 2
    assert last_line(result).startswith("Error: Invalid value for '--port'")


def test_jlis_serve_on_a_busy_port_is_refused(world):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = run("jlis", "serve", "--state", str(world), "--port", str(port))
    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_installed_console_script_serves_the_jlis(world):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    script = Path(sys.executable).with_name("smartphone")
    env = {"SMARTPHONE_PASSPHRASE": PASSPHRASE, "PATH": str(script.parent)}
    server = subprocess.Popen(
        [str(script), "jlis", "serve", "--state", str(world), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        served = _fetch_when_up(f"http://127.0.0.1:{port}/ca/jlis-root.crt", server)
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()
        server.stderr.close()
    assert x509.load_der_x509_certificate(served) == x509.load_pem_x509_certificate(
        (world / "jlis" / "jlis-root.crt").read_bytes(),
    )


def _fetch_when_up(url: str, server: subprocess.Popen) -> bytes:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a loopback URL we built
                return response.read()
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- smartphone card issue ----------------------------------------------------------------------


def test_card_issue_writes_the_card(world):
    result = run("card", "issue", "--state", str(world), "--card", "hanako", *PERSON, *PINS)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == f"card 'hanako' issued in {world / 'cards' / 'hanako'}"
    assert sorted(path.name for path in (world / "cards" / "hanako").iterdir()) == [
        "auth.crt", "auth.key", "card.json", "sign.crt", "sign.key",
    ]


def test_card_issue_under_an_existing_name_is_refused(world, before):
    result = run("card", "issue", "--state", str(world), "--card", "taro", *PERSON, *PINS)
    assert result.exit_code == 1
    assert result.stderr == f"Error: a card called 'taro' already exists in {world}\n"
    assert tree(world) == before


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--auth-pin", "12345", "Invalid value for '--auth-pin': the user-authentication PIN must be 4 digits"),
    ("--auth-pin", "abcd", "Invalid value for '--auth-pin': the user-authentication PIN must be 4 digits"),
    ("--sign-pin", "abc123", f"Invalid value for '--sign-pin': {SIGN_PIN_RULE}"),
    ("--sign-pin", "ABCDEFG", f"Invalid value for '--sign-pin': {SIGN_PIN_RULE}"),
    ("--birthdate", "1990-02-30", f"Invalid value for '--birthdate': '1990-02-30' {DATE_FORMAT}"),
    ("--birthdate", "01/04/1990", f"Invalid value for '--birthdate': '01/04/1990' {DATE_FORMAT}"),
    ("--sex", "other", "Invalid value for '--sex': 'other' is not one of 'male', 'female', 'unknown'."),
    ("--card", "../x", f"Invalid value for '--card': {NAME_RULE}"),
    ("--card-expiry", "2030", f"Invalid value for '--card-expiry': '2030' {DATE_FORMAT}"),
])
def test_card_issue_with_bad_input_writes_nothing(world, before, option, value, message):
    args = {"--card": "hanako", **dict(zip(PERSON[::2], PERSON[1::2], strict=True)),
            **dict(zip(PINS[::2], PINS[1::2], strict=True)), option: value}
    result = run("card", "issue", "--state", str(world), *[item for pair in args.items() for item in pair])
    assert result.exit_code == 2
    assert last_line(result) == f"Error: {message}"
    assert tree(world) == before


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--birthdate", "2999-01-01", "the date of birth must not be in the future"),
    ("--name", " ", "name must not be empty"),
    ("--address", "東" * 201, "address must have 1 to 200 characters"),
    ("--prefecture", "", "the prefecture and the city must not be empty"),
    ("--card-expiry", "2001-01-01", "the card must expire after the day it is issued"),
])
def test_card_issue_with_impossible_data_writes_nothing(world, before, option, value, message):
    args = {"--card": "hanako", **dict(zip(PERSON[::2], PERSON[1::2], strict=True)),
            **dict(zip(PINS[::2], PINS[1::2], strict=True)), option: value}
    result = run("card", "issue", "--state", str(world), *[item for pair in args.items() for item in pair])
    assert result.exit_code == 2
    assert last_line(result) == f"Error: {message}"
    assert tree(world) == before


def test_card_issue_without_a_jlis_is_refused(tmp_path):
    result = run("card", "issue", "--state", str(tmp_path / "world"), "--card", "taro", *PERSON, *PINS)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path / 'world'} holds no J-LIS: run `smartphone jlis create` first\n"
    assert not (tmp_path / "world").exists()


def test_card_issue_with_the_wrong_passphrase_writes_nothing(world, before):
    result = run("card", "issue", "--state", str(world), "--card", "hanako", *PERSON, *PINS, env=WRONG_PASSPHRASE)
    assert result.exit_code == 1
    assert result.stderr == f"Error: the passphrase does not decrypt the keys in {world}\n"
    assert tree(world) == before


def test_card_issue_takes_the_pins_from_the_environment(world):
    env = {**ENV, "SMARTPHONE_AUTH_PIN": "4321", "SMARTPHONE_SIGN_PIN": "XYZ789"}
    assert run("card", "issue", "--state", str(world), "--card", "hanako", *PERSON, env=env).exit_code == 0
    signed = run("card", "sign", "--state", str(world), "--card", "hanako", "--key", "sign", "--digest", DIGEST,
                 "--pin", "XYZ789")
    assert signed.exit_code == 0


def test_card_issue_prompts_for_the_pins(world):
    result = run("card", "issue", "--state", str(world), "--card", "hanako", *PERSON,
                 stdin="1234\n1234\nABC123\nABC123\n")
    assert result.exit_code == 0
    prompts = result.output.split("card 'hanako' issued")[0]
    assert "1234" not in prompts  # hidden input is never echoed
    assert "ABC123" not in prompts


def test_card_issue_with_a_mistyped_pin_confirmation_writes_nothing(world, before):
    result = run("card", "issue", "--state", str(world), "--card", "hanako", *PERSON, stdin="1234\n4321\n")
    assert result.exit_code == 1
    assert last_line(result) == "Aborted!"
    assert tree(world) == before


# -- smartphone card revoke ---------------------------------------------------------------------


def test_card_revoke_revokes_both_certificates(world):
    result = run("card", "revoke", "--state", str(world), "--card", "taro", "--reason", "keyCompromise")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["card-auth", "card-sign"]
    assert all(line.endswith("(keyCompromise)") for line in lines)


def test_card_revoke_twice_is_refused(world):
    assert run("card", "revoke", "--state", str(world), "--card", "taro").exit_code == 0
    snapshot = tree(world)
    result = run("card", "revoke", "--state", str(world), "--card", "taro")
    assert result.exit_code == 1
    assert result.stderr == "Error: the card's certificates are already revoked\n"
    assert tree(world) == snapshot


def test_card_revoke_of_an_unknown_card_is_refused(world, before):
    result = run("card", "revoke", "--state", str(world), "--card", "nobody")
    assert result.exit_code == 1
    assert result.stderr == f"Error: no card called 'nobody' in {world}\n"
    assert tree(world) == before


@pytest.mark.parametrize("reason", ["removeFromCRL", "privilegeWithdrawn", "lost"])
def test_card_revoke_for_a_reason_jlis_does_not_use_is_refused(world, before, reason):
    result = run("card", "revoke", "--state", str(world), "--card", "taro", "--reason", reason)
    assert result.exit_code == 2
    assert last_line(result).startswith(f"Error: Invalid value for '--reason': '{reason}' is not one of ")
    assert tree(world) == before


def test_card_revoke_with_the_wrong_passphrase_changes_nothing(world, before):
    result = run("card", "revoke", "--state", str(world), "--card", "taro", env=WRONG_PASSPHRASE)
    assert result.exit_code == 1
    assert tree(world) == before


def test_card_revoke_with_a_corrupt_registry_is_refused_clearly(world):
    registry = world / "jlis" / "registry" / "jlis-auth-ca.json"
    registry.write_text("{")
    result = run("card", "revoke", "--state", str(world), "--card", "taro")
    assert result.exit_code == 1
    assert result.stderr == f"Error: the state directory is corrupt: {registry} is not a registry\n"
    assert registry.read_text() == "{"


def test_card_issue_with_a_corrupt_registry_is_refused_clearly(world):
    registry = world / "jlis" / "registry" / "jlis-auth-ca.json"
    registry.write_text("[]")
    result = run("card", "issue", "--state", str(world), "--card", "hanako", *PERSON, *PINS)
    assert result.exit_code == 1
    assert result.stderr == f"Error: the state directory is corrupt: {registry} is not a registry\n"
    assert not (world / "cards" / "hanako").exists()


# -- smartphone card show -----------------------------------------------------------------------


def test_card_show_prints_the_certificates_without_a_passphrase(world):
    result = run("card", "show", "--state", str(world), "--card", "taro", env=NO_PASSPHRASE)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[-5:] == [
        "basic attributes (signature certificate)",
        "  name: 山田　太郎",
        "  address: 東京都千代田区千代田1-1",
        "  date of birth: 1990-04-01",
        "  sex: male",
    ]
    assert [line for line in lines if line.startswith("  status:")] == ["  status: good", "  status: good"]
    assert [line for line in lines if "PIN tries" in line] == ["  PIN tries left: 3", "  PIN tries left: 5"]


def test_card_show_after_revocation_says_revoked(world):
    run("card", "revoke", "--state", str(world), "--card", "taro", "--reason", "affiliationChanged")
    result = run("card", "show", "--state", str(world), "--card", "taro")
    statuses = [line for line in result.stdout.splitlines() if line.startswith("  status:")]
    assert all(line.startswith("  status: revoked (affiliationChanged, ") for line in statuses)


def test_card_show_of_a_card_another_jlis_issued_says_so(world, tmp_path):
    other = tmp_path / "other"
    run("jlis", "create", "--state", str(other), "--url", "http://127.0.0.1:8200")
    shutil.copytree(world / "cards" / "taro", other / "cards" / "taro")
    result = run("card", "show", "--state", str(other), "--card", "taro")
    statuses = [line for line in result.stdout.splitlines() if line.startswith("  status:")]
    assert statuses == ["  status: not issued by this J-LIS", "  status: not issued by this J-LIS"]


def test_card_show_reveals_no_pin_and_no_key(world):
    result = run("card", "show", "--state", str(world), "--card", "taro")
    assert "ABC123" not in result.output
    assert "PRIVATE" not in result.output


def test_card_show_of_an_unknown_card_is_refused(world):
    result = run("card", "show", "--state", str(world), "--card", "nobody")
    assert result.exit_code == 1
    assert result.stderr == f"Error: no card called 'nobody' in {world}\n"


def test_card_show_with_a_bad_name_is_refused(world):
    result = run("card", "show", "--state", str(world), "--card", "a/b")
    assert result.exit_code == 2
    assert last_line(result) == f"Error: Invalid value for '--card': {NAME_RULE}"


# -- smartphone card sign -----------------------------------------------------------------------


def _sign(world: Path, pin: str, key: str = "auth", digest: str = DIGEST) -> Result:
    return run("card", "sign", "--state", str(world), "--card", "taro", "--key", key, "--digest", digest, "--pin", pin)


@pytest.mark.parametrize(("key", "pin"), [("auth", "1234"), ("sign", "ABC123")])
def test_card_sign_signature_verifies_with_the_card_certificate(world, key, pin):
    result = _sign(world, pin, key)
    assert result.exit_code == 0
    certificate = x509.load_pem_x509_certificate((world / "cards" / "taro" / f"{key}.crt").read_bytes())
    certificate.public_key().verify(
        base64.b64decode(result.stdout), bytes.fromhex(DIGEST), padding.PKCS1v15(), Prehashed(hashes.SHA256()),
    )


def test_card_sign_with_a_wrong_pin_costs_a_try(world):
    result = _sign(world, "9999")
    assert result.exit_code == 1
    assert result.stderr == "Error: wrong user-authentication PIN: 2 tries left\n"


def test_three_wrong_pins_in_three_commands_lock_the_card(world):
    assert [last_line(_sign(world, "9999")) for _ in range(3)] == [
        "Error: wrong user-authentication PIN: 2 tries left",
        "Error: wrong user-authentication PIN: 1 try left",
        "Error: wrong user-authentication PIN: the key is now locked",
    ]
    locked = _sign(world, "1234")
    assert locked.exit_code == 1
    assert locked.stderr == "Error: the user-authentication PIN is locked after too many wrong PINs\n"


def test_right_pin_in_a_later_command_restores_the_tries(world):
    _sign(world, "9999")
    assert _sign(world, "1234").exit_code == 0
    shown = run("card", "show", "--state", str(world), "--card", "taro").stdout
    assert "  PIN tries left: 3" in shown.splitlines()


def test_card_sign_with_a_malformed_pin_costs_no_try(world, before):
    result = _sign(world, "12")
    assert result.exit_code == 2
    assert last_line(result) == "Error: Invalid value for '--pin': the user-authentication PIN must be 4 digits"
    assert tree(world)["cards/taro/card.json"] == before["cards/taro/card.json"]


@pytest.mark.parametrize(("digest", "message"), [
    ("zz" * 32, "the digest must be hexadecimal"),
    ("ab" * 31, "the digest must be a SHA-256 digest: 64 hexadecimal characters"),
])
def test_card_sign_with_a_bad_digest_is_refused(world, before, digest, message):
    result = _sign(world, "1234", digest=digest)
    assert result.exit_code == 2
    assert last_line(result) == f"Error: Invalid value for '--digest': {message}"
    assert tree(world) == before


def test_card_sign_with_an_unknown_card_is_refused(world):
    result = run("card", "sign", "--state", str(world), "--card", "nobody", "--key", "auth", "--digest", DIGEST,
                 "--pin", "1234")
    assert result.exit_code == 1
    assert result.stderr == f"Error: no card called 'nobody' in {world}\n"


def test_card_sign_takes_the_pin_from_the_environment(world):
    result = run("card", "sign", "--state", str(world), "--card", "taro", "--key", "auth", "--digest", DIGEST,
                 env={**ENV, "SMARTPHONE_PIN": "1234"})
    assert result.exit_code == 0


# -- smartphone phone create --------------------------------------------------------------------


def test_phone_create_provisions_an_attested_se(world):
    result = run("phone", "create", "--state", str(world), "--phone", "pixel", "--vendor", "MynaDevices",
                 "--model", "SE-1")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == f"phone 'pixel' created in {world / 'phones' / 'pixel'}"
    root_pem = (world / "vendors" / "MynaDevices" / "root.crt").read_bytes()
    element = State(world, PASSPHRASE.encode()).load_phone("pixel")
    challenge = secrets.token_bytes(32)
    response = element.make_credential(rp_id="id.test", challenge=challenge, origin="https://id.test", purpose="auth")
    verified = verify_registration_response(
        credential=response, expected_challenge=challenge, expected_rp_id="id.test",
        expected_origin="https://id.test", require_user_verification=True,
        pem_root_certs_bytes_by_fmt={AttestationFormat.PACKED: [root_pem]},
    )
    assert verified.aaguid == str(element.aaguid)
    assert f"AAGUID {element.aaguid}" in result.stdout


def test_phone_create_under_an_existing_name_is_refused(world):
    assert run("phone", "create", "--state", str(world), "--phone", "pixel").exit_code == 0
    snapshot = tree(world)
    result = run("phone", "create", "--state", str(world), "--phone", "pixel")
    assert result.exit_code == 1
    assert result.stderr == f"Error: a phone called 'pixel' already exists in {world}\n"
    assert tree(world) == snapshot


@pytest.mark.parametrize(("option", "value"), [("--phone", "../pixel"), ("--vendor", "My Vendor"),
                                               ("--model", " ")])
def test_phone_create_with_bad_input_writes_nothing(world, before, option, value):
    args = {"--phone": "pixel", option: value}
    result = run("phone", "create", "--state", str(world), *[item for pair in args.items() for item in pair])
    assert result.exit_code == 2
    assert last_line(result).startswith(f"Error: Invalid value for '{option}'")
    assert tree(world) == before


def test_phone_create_for_another_model_of_an_existing_vendor_is_refused(world):
    run("phone", "create", "--state", str(world), "--phone", "one", "--model", "SE-1")
    snapshot = tree(world)
    result = run("phone", "create", "--state", str(world), "--phone", "two", "--model", "SE-2")
    assert result.exit_code == 1
    assert result.stderr == "Error: vendor 'MynaDevices' already exists and makes model 'SE-1'\n"
    assert tree(world) == snapshot


def test_phone_create_without_a_passphrase_writes_nothing(world, before):
    result = run("phone", "create", "--state", str(world), "--phone", "pixel", env=NO_PASSPHRASE)
    assert result.exit_code == 1
    assert tree(world) == before


def test_phone_create_with_the_wrong_passphrase_for_the_vendor_writes_nothing(world):
    run("phone", "create", "--state", str(world), "--phone", "one")
    snapshot = tree(world)
    result = run("phone", "create", "--state", str(world), "--phone", "two", env=WRONG_PASSPHRASE)
    assert result.exit_code == 1
    assert result.stderr == f"Error: the passphrase does not decrypt the keys in {world}\n"
    assert tree(world) == snapshot


# -- OpenSSL as the judge -----------------------------------------------------------------------


def _openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False, timeout=30)


@pytest.mark.parametrize(("key", "ca"), [("auth", "jlis-auth-ca"), ("sign", "jlis-sign-ca")])
def test_openssl_verifies_a_minted_card_certificate_against_the_jlis_chain(world, key, ca):
    jlis, card = world / "jlis", world / "cards" / "taro"
    result = _openssl("verify", "-x509_strict", "-CAfile", str(jlis / "jlis-root.crt"),
                      "-untrusted", str(jlis / f"{ca}.crt"), str(card / f"{key}.crt"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{card / f'{key}.crt'}: OK\n"


def test_openssl_refuses_a_card_certificate_against_another_jlis(world, tmp_path):
    other = tmp_path / "other"
    run("jlis", "create", "--state", str(other), "--url", "http://127.0.0.1:8200")
    result = _openssl("verify", "-CAfile", str(other / "jlis" / "jlis-root.crt"), "-untrusted",
                      str(world / "jlis" / "jlis-auth-ca.crt"), str(world / "cards" / "taro" / "auth.crt"))
    assert result.returncode == 2
    assert "error 20 at 1 depth lookup: unable to get local issuer certificate" in result.stderr


@pytest.fixture
def served_jlis(world):
    """The J-LIS of ``world`` on a loopback port, in a thread, as ``jlis serve`` runs it."""
    server = make_server("127.0.0.1", 0, create_jlis_app(world, passphrase=PASSPHRASE.encode()), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


def _openssl_ocsp(world: Path, url: str, key: str, ca: str) -> subprocess.CompletedProcess:
    jlis, card = world / "jlis", world / "cards" / "taro"
    return _openssl("ocsp", "-issuer", str(jlis / f"{ca}.crt"), "-cert", str(card / f"{key}.crt"),
                    "-url", f"{url}/ocsp", "-CAfile", str(jlis / "jlis-root.crt"))


@pytest.mark.parametrize(("key", "ca"), [("auth", "jlis-auth-ca"), ("sign", "jlis-sign-ca")])
def test_openssl_ocsp_says_good_then_revoked_after_card_revoke(world, served_jlis, key, ca):
    good = _openssl_ocsp(world, served_jlis, key, ca)
    assert good.returncode == 0, good.stderr
    assert "Response verify OK" in good.stderr
    assert f"{world / 'cards' / 'taro' / f'{key}.crt'}: good" in good.stdout

    assert run("card", "revoke", "--state", str(world), "--card", "taro", "--reason", "keyCompromise").exit_code == 0

    revoked = _openssl_ocsp(world, served_jlis, key, ca)
    assert revoked.returncode == 0, revoked.stderr
    assert "Response verify OK" in revoked.stderr
    assert f"{world / 'cards' / 'taro' / f'{key}.crt'}: revoked" in revoked.stdout
    assert "Reason: keyCompromise" in revoked.stdout


def test_openssl_reads_the_crl_listing_a_revoked_card(world, served_jlis):
    run("card", "revoke", "--state", str(world), "--card", "taro")
    with urllib.request.urlopen(f"{served_jlis}/crl/jlis-auth-ca.crl", timeout=10) as response:  # noqa: S310
        crl_path = world / "auth.crl"
        crl_path.write_bytes(response.read())
    serial = x509.load_pem_x509_certificate((world / "cards" / "taro" / "auth.crt").read_bytes()).serial_number
    result = _openssl("crl", "-inform", "DER", "-in", str(crl_path), "-noout", "-text")
    assert result.returncode == 0, result.stderr
    assert f"Serial Number: {serial:040X}" in result.stdout
