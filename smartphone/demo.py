"""``myna-demo``: the whole demo on one machine, set up idempotently and started with one command.

Under ``--dir`` (default ``.demo``) it keeps the simulated world (J-LIS, the card ``taro`` and
the phone ``pixel``, their keys encrypted under a generated ``passphrase`` file), the portal's
instance and the demo RP's client registration, and it starts four servers as child processes:
the J-LIS, the portal (``idp serve``), the demo RP (``demo-rp``) and the phone screen
(``smartphone phone serve``). Like the phone and the RP, it is an outside client of the portal:
it drives ``idp`` as a command and over HTTP, never by import. Ctrl-C or SIGTERM stops every child.

``myna-demo sync`` is the operator's step after a J-LIS life event (``smartphone card move``):
``idp pki sync`` against the demo's instance, with the demo portal's settings, while it runs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType

import click
import requests

from idp.pki.attributes import BasicAttributes, Sex
from smartphone.state import State, StateError

__all__ = ["main"]

HOST = "127.0.0.1"
CARD, PHONE, VENDOR = "taro", "pixel", "MynaDevices"
AUTH_PIN, SIGN_PIN = "1234", "TARO2024"
TARO = BasicAttributes(name="山田　太郎", address="東京都千代田区永田町1-7-1", date_of_birth=date(1990, 4, 1),
                       sex=Sex.MALE)
NEW_ADDRESS, NEW_PREFECTURE, NEW_CITY = "大阪府大阪市北区中之島1-3-20", "大阪府", "大阪市"
"""Where the README's life event moves 山田　太郎."""
RP_NAME = "Demo Shop"
RP_SCOPES = ("openid", "name", "address", "birthdate", "gender", "sign")
_STARTUP = 30.0


class DemoError(click.ClickException):
    """The demo cannot be set up or started; the message says why."""


@dataclass(frozen=True, slots=True)
class Ports:
    jlis: int
    portal: int
    rp: int
    phone: int

    def url(self, name: str) -> str:
        return f"http://{HOST}:{getattr(self, name)}"


def _tool(name: str) -> str:
    """A console script of this installation: beside the running Python, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DemoError(f"cannot find the {name!r} command: install the project (pip install -e .)")
    return found


def _passphrase(directory: Path) -> Path:
    """The simulator's passphrase file, generated once with mode 0600 (simulator state, not a secret of the repo)."""
    path = directory / "passphrase"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(24) + "\n")
    return path


def _world(state: State, jlis_url: str) -> None:
    """The J-LIS, the card ``taro`` and the phone ``pixel``; each made only if missing."""
    now = datetime.now(UTC)
    if not (state.jlis_dir / "jlis.json").is_file():
        state.create_jlis(base_url=jlis_url, now=now - timedelta(days=1))
    else:
        recorded = json.loads((state.jlis_dir / "jlis.json").read_text(encoding="utf-8")).get("base_url")
        if recorded is not None and recorded != jlis_url:
            raise DemoError(f"the J-LIS in {state.root} was made for {recorded}: use that port or a new --dir")
    if not state.card_dir(CARD).exists():
        card = state.load_jlis().issue_card(attributes=TARO, prefecture="東京都", city="千代田区",
                                            auth_pin=AUTH_PIN, sign_pin=SIGN_PIN, now=now - timedelta(hours=1))
        state.add_card(CARD, card)
    if not state.phone_dir(PHONE).exists():
        state.add_phone(PHONE, vendor=state.vendor(VENDOR, model=None, now=now - timedelta(days=1)))


def _portal_environment(directory: Path, state: State, *, jlis_url: str, portal_url: str) -> dict[str, str]:
    """The portal's settings as environment variables: trust this J-LIS and this SE vendor, and follow
    its linking data, so that a renewed, moved or reissued card stays the same person."""
    jlis = state.jlis_dir
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("IDP_") and key not in {"DATABASE_URL", "REDIS_URL"}}
    return environment | {
        "IDP_ISSUER": portal_url,
        "IDP_INSTANCE": str(directory / "instance"),
        "IDP_PKI__JLIS_ROOTS": str(jlis / "jlis-root.crt"),
        "IDP_PKI__JLIS_INTERMEDIATES": f"{jlis / 'jlis-auth-ca.crt'},{jlis / 'jlis-sign-ca.crt'}",
        "IDP_PKI__JLIS_CRL_URLS": f"{jlis_url}/crl/jlis-auth-ca.crl,{jlis_url}/crl/jlis-sign-ca.crl",
        "IDP_PKI__JLIS_LINKING_URL": f"{jlis_url}/linking",
        "IDP_PKI__ATTESTATION_ROOTS": str(state.vendor_dir(VENDOR) / "root.crt"),
    }


def _check_portal_url(directory: Path, url: str) -> None:
    """The instance's CAs and the phone's enrollment name the portal's URL: it cannot move between runs."""
    path = directory / "portal-url"
    if not path.exists():
        path.write_text(url + "\n", encoding="ascii")
    elif (recorded := path.read_text(encoding="ascii").strip()) != url:
        raise DemoError(f"the portal in {directory} was set up at {recorded}: use that port or a new --dir")


def _idp(environment: dict[str, str], *args: str) -> str:
    result = subprocess.run(  # noqa: S603 - our own console script, no shell
        [_tool("idp"), *args], env=environment, capture_output=True, text=True, check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise DemoError(f"`idp {' '.join(args)}` failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _rp_client(directory: Path, environment: dict[str, str], redirect_uri: str) -> dict[str, str]:
    """The demo RP's registration, made once and kept in ``rp-client.json`` (0600); made again when
    the saved one lacks the redirect URI or a scope the demo now uses (a ``.demo`` from before)."""
    path = directory / "rp-client.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if redirect_uri in saved.get("redirect_uris", []) and set(RP_SCOPES) <= set(saved.get("scope", "").split()):
            return {"client_id": saved["client_id"], "client_secret": saved["client_secret"]}
    scopes = [argument for scope in RP_SCOPES for argument in ("--scope", scope)]
    document = _idp(environment, "clients", "add", "--name", RP_NAME, "--redirect-uri", redirect_uri, *scopes,
                    "--json")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(document)
    registered = json.loads(document)
    return {"client_id": registered["client_id"], "client_secret": registered["client_secret"]}


class _Children:
    """The servers this launcher started; stopped together, by their own process ids."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str], environment: dict[str, str] | None = None) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.running[name] = subprocess.Popen(  # noqa: S603 - our own console scripts, no shell
                command, env=environment, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops each child in order
            )
        click.echo(f"  started {name} (pid {self.running[name].pid}), log {self.logs / (name + '.log')}")

    def wait_until_answering(self, name: str, url: str) -> None:
        deadline = time.monotonic() + _STARTUP
        while time.monotonic() < deadline:
            if self.running[name].poll() is not None:
                raise DemoError(f"{name} exited with {self.running[name].returncode}: see {self.logs / name}.log")
            try:
                requests.get(url, timeout=1)
            except requests.RequestException:
                time.sleep(0.2)
            else:
                return
        raise DemoError(f"{name} did not answer at {url} within {_STARTUP:.0f} s: see {self.logs / name}.log")

    def exited(self) -> str | None:
        for name, process in self.running.items():
            if process.poll() is not None:
                return name
        return None

    def stop(self) -> None:
        for process in reversed(self.running.values()):
            if process.poll() is None:
                process.terminate()
        for name, process in self.running.items():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            click.echo(f"  stopped {name} (pid {process.pid})")


def _stop_on_sigterm(_signal: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.group(invoke_without_command=True)
@click.option("--dir", "directory", default=".demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where the demo keeps its state.")
@click.option("--base-port", type=click.IntRange(1024, 65000), default=None,
              help="Use BASE, BASE+1, BASE+2, BASE+3 for J-LIS, portal, RP and phone screen.")
@click.option("--jlis-port", type=click.IntRange(1, 65535), default=8100, show_default=True)
@click.option("--portal-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--rp-port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--phone-port", type=click.IntRange(1, 65535), default=8200, show_default=True)
@click.pass_context
def main(context: click.Context, *, directory: Path, base_port: int | None, jlis_port: int, portal_port: int,
         rp_port: int, phone_port: int) -> None:
    """Set up and start the Myna Gateway demo: J-LIS, portal, demo RP and a phone screen, on loopback.

    `myna-demo sync` (in another terminal, while the demo runs) is the operator's step after a life event.
    """
    if context.invoked_subcommand is not None:
        return
    ports = (Ports(base_port, base_port + 1, base_port + 2, base_port + 3) if base_port is not None
             else Ports(jlis_port, portal_port, rp_port, phone_port))
    directory = directory.resolve()
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    passphrase_file = _passphrase(directory)
    state = State(directory / "sim", passphrase_file.read_bytes().removesuffix(b"\n"))
    try:
        _world(state, ports.url("jlis"))
    except StateError as exc:
        raise DemoError(str(exc)) from exc
    children = _Children(directory / "logs")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    smartphone, passphrase = _tool("smartphone"), ["--passphrase-file", str(passphrase_file)]
    try:
        click.echo(f"Myna Gateway demo in {directory}")
        children.start("jlis", [smartphone, "jlis", "serve", "--state", str(state.root), *passphrase,
                                "--host", HOST, "--port", str(ports.jlis)])
        children.wait_until_answering("jlis", ports.url("jlis") + "/crl/jlis-root.crl")
        _check_portal_url(directory, ports.url("portal"))
        environment = _portal_environment(directory, state, jlis_url=ports.url("jlis"), portal_url=ports.url("portal"))
        _idp(environment, "init")
        client = _rp_client(directory, environment, ports.url("rp") + "/callback")
        _idp(environment, "pki", "sync-revocations")
        children.start("portal", [_tool("idp"), "serve", "--bind", f"{HOST}:{ports.portal}"], environment)
        children.start("rp", [_tool("demo-rp")], os.environ | {
            "MYNA_RP_ISSUER": ports.url("portal"), "MYNA_RP_CLIENT_ID": client["client_id"],
            "MYNA_RP_CLIENT_SECRET": client["client_secret"], "MYNA_RP_BIND": f"{HOST}:{ports.rp}",
        })
        children.start("phone", [smartphone, "phone", "serve", "--state", str(state.root), *passphrase,
                                 "--phone", PHONE, "--portal", ports.url("portal"), "--bind", f"{HOST}:{ports.phone}"])
        children.wait_until_answering("portal", ports.url("portal") + "/.well-known/openid-configuration")
        children.wait_until_answering("rp", ports.url("rp") + "/")
        children.wait_until_answering("phone", ports.url("phone") + "/")
        _walkthrough(ports, directory)
        while (ended := children.exited()) is None:
            time.sleep(0.5)
        raise DemoError(f"{ended} exited unexpectedly: see {children.logs / ended}.log")
    except KeyboardInterrupt:
        click.echo("stopping the demo")
    finally:
        children.stop()


@main.command("sync")
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where the running demo keeps its state (default: the --dir before `sync`, else .demo).")
@click.pass_context
def sync(context: click.Context, directory: Path | None) -> None:
    """Run `idp pki sync` for the running demo: J-LIS CRLs (revoking phone certificates of revoked or
    replaced card certificates), then the J-LIS linking data. The operator's step after a life event."""
    parent = context.parent.params["directory"] if context.parent is not None else Path(".demo")
    directory = (directory or parent).resolve()
    portal_file, passphrase_file = directory / "portal-url", directory / "passphrase"
    if not portal_file.is_file() or not passphrase_file.is_file():
        raise DemoError(f"no demo is set up in {directory}: start it with `myna-demo --dir {directory}` first")
    state = State(directory / "sim", passphrase_file.read_bytes().removesuffix(b"\n"))
    try:
        jlis_url = str(json.loads((state.jlis_dir / "jlis.json").read_text(encoding="utf-8"))["base_url"])
    except (OSError, ValueError, KeyError) as exc:
        raise DemoError(f"the J-LIS of the demo in {directory} cannot be read: {exc}") from exc
    try:
        requests.get(f"{jlis_url}/crl/jlis-root.crl", timeout=5)
    except requests.RequestException as exc:
        raise DemoError(f"the demo's J-LIS does not answer at {jlis_url}: start the demo "
                        f"(`myna-demo --dir {directory}`) and run this beside it") from exc
    environment = _portal_environment(directory, state, jlis_url=jlis_url,
                                      portal_url=portal_file.read_text(encoding="ascii").strip())
    click.echo(_idp(environment, "pki", "sync").rstrip("\n"))


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it, as a person would type it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _walkthrough(ports: Ports, directory: Path) -> None:
    shown = _shown(directory)
    dir_option = "" if directory == Path(".demo").resolve() else f" --dir {shown}"
    click.echo(f"""
ready.
  demo shop (RP)   {ports.url('rp')}/
  phone screen     {ports.url('phone')}/
  portal           {ports.url('portal')}/
  J-LIS            {ports.url('jlis')}/
card {CARD!r}: {TARO.name}, authentication PIN {AUTH_PIN}, signature PIN {SIGN_PIN}

Try it:
  1. Open {ports.url('phone')}/ and enroll once with card {CARD!r} and the two PINs above.
  2. Open {ports.url('rp')}/ and click "Log in with My Number"; on the login page copy the link
     "Open the app on this smartphone" (right-click > Copy link) and paste it into the phone screen.
  3. Check the verification code matches, tap "Approve with fingerprint": the shop greets {TARO.name}.
Try a life event, moving house (in another terminal; README.md, "Try a life event"):
  smartphone card move --state {shown}/sim --passphrase-file {shown}/passphrase --card {CARD} \\
      --address {NEW_ADDRESS} --prefecture {NEW_PREFECTURE} --city {NEW_CITY}
  myna-demo sync{dir_option}
  then log in at the shop again: the phone asks you to tap the card (signature PIN) to renew its key.
Ctrl-C stops everything.""")
