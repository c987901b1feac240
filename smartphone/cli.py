"""The ``smartphone`` command: create the simulated J-LIS, issue and revoke cards, create phones.

Each command takes ``--state DIR``, the directory that keeps the world between commands, and,
when it touches a private key, a passphrase from ``--passphrase-file`` or
``$SMARTPHONE_PASSPHRASE``. Bad input ends with a one-line error and a non-zero exit code
(2 for a bad option, 1 for a refused operation), and leaves the directory unchanged.
"""

from __future__ import annotations

import base64
import functools
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from idp.pki import attributes as basic_attributes
from idp.pki.attributes import BasicAttributes, MalformedAttributes, Sex
from idp.pki.registry import CertificateStatus, RegistryError
from smartphone.card import CardCertificates, CardError, CardKey, InvalidPin, MyNumberCard, check_pin
from smartphone.files import CorruptState
from smartphone.jlis import CARD_REVOCATION_REASONS, LifeEventRefused, normalise_base_url
from smartphone.portal_client import PortalClient, PortalError, enroll
from smartphone.secure_element import SecureElementError
from smartphone.state import State, StateError, check_name, read_passphrase

__all__ = ["main"]

P = ParamSpec("P")
R = TypeVar("R")

_SEXES = {"male": Sex.MALE, "female": Sex.FEMALE, "unknown": Sex.UNKNOWN}
_REASONS = {reason.value: reason for reason in CARD_REVOCATION_REASONS}
_REASON_ORDER = sorted(_REASONS, key=lambda value: list(x509.ReasonFlags).index(_REASONS[value]))


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _refusals() -> Iterator[None]:
    """Turn a refused operation into a one-line error (exit code 1)."""
    try:
        yield
    except (StateError, CardError, RegistryError) as exc:
        raise click.ClickException(str(exc)) from exc
    except CorruptState as exc:
        raise click.ClickException(f"the state directory is corrupt: {exc}") from exc


def _state(state_dir: Path, passphrase_file: Path | None) -> State:
    """The state directory with the passphrase; refuses (exit 1) when there is none."""
    with _refusals():
        passphrase = read_passphrase(passphrase_file)
    return State(state_dir, passphrase)


def _state_options(command: Callable[P, R]) -> Callable[P, R]:
    command = click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File whose first line is the passphrase that encrypts private keys "
             "(default: $SMARTPHONE_PASSPHRASE).",
    )(command)
    return click.option(
        "--state", "state_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
        help="Directory that keeps the simulated J-LIS, cards and phones between commands.",
    )(command)


def _checked(check: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that turns ``check``'s ValueError into a bad-parameter error."""
    def callback(_context: click.Context, _parameter: click.Parameter, value: Any) -> Any:
        try:
            result = check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
        return value if result is None else result
    return callback


def _hex_digest(text: str) -> bytes:
    try:
        digest = bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError("the digest must be hexadecimal") from exc
    if len(digest) != hashes.SHA256.digest_size:
        raise ValueError("the digest must be a SHA-256 digest: 64 hexadecimal characters")
    return digest


@click.group()
def main() -> None:
    """Simulated J-LIS, My Number Cards and smartphone SEs for Myna Gateway."""


@main.group()
def jlis() -> None:
    """The simulated J-LIS card authority."""


@jlis.command("create")
@_state_options
@click.option("--url", required=True, callback=_checked(normalise_base_url),
              help="Base URL the J-LIS is served at; card certificates point at its /crl and /ocsp.")
def jlis_create(state_dir: Path, passphrase_file: Path | None, url: str) -> None:
    """Create the J-LIS root and its two issuing CAs in --state."""
    state = _state(state_dir, passphrase_file)
    with _refusals():
        created = state.create_jlis(base_url=url, now=_now())
    click.echo(f"J-LIS created in {state.jlis_dir}")
    for authority in created.authorities:
        click.echo(f"  {authority.name}: {state.jlis_dir / (authority.name + '.crt')}")
    click.echo(f"  CRLs at {created.base_url}/crl/<ca>.crl, OCSP at {created.base_url}/ocsp")


@jlis.command("serve")
@_state_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8100, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
def jlis_serve(state_dir: Path, passphrase_file: Path | None, host: str, port: int) -> None:
    """Serve the J-LIS CA certificates, CRLs and OCSP over HTTP (development server)."""
    from werkzeug.serving import run_simple  # noqa: PLC0415 - only this command needs the server

    from smartphone.jlis_server import create_jlis_app  # noqa: PLC0415 - imports Flask; only here

    with _refusals():
        app = create_jlis_app(state_dir, passphrase=read_passphrase(passphrase_file))
    try:
        # Probe first: werkzeug reports a busy port over several lines and exits on its own.
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from exc
    run_simple(host, port, app, threaded=True)


@main.group()
def card() -> None:
    """My Number Cards."""


def _pin_option(key: CardKey, *names: str, envvar: str, help_text: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    return click.option(
        *names, envvar=envvar, prompt=True, hide_input=True, confirmation_prompt=True,
        callback=_checked(functools.partial(check_pin, key)), help=help_text,
    )


@card.command("issue")
@_state_options
@click.option("--card", "card_name", required=True, callback=_checked(functools.partial(check_name, "card")),
              help="Name of the card in --state.")
@click.option("--name", required=True, help="Family and given name separated by a full-width space.")
@click.option("--address", required=True, help="Address from the prefecture on, no postcode.")
@click.option("--birthdate", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Date of birth, YYYY-MM-DD.")
@click.option("--sex", required=True, type=click.Choice(list(_SEXES)), help="As the resident register has it.")
@click.option("--prefecture", required=True, help="Prefecture, for the signature certificate's subject.")
@click.option("--city", required=True, help="City, for the signature certificate's subject.")
@_pin_option(CardKey.AUTH, "--auth-pin", envvar="SMARTPHONE_AUTH_PIN",
             help_text="User-authentication PIN: 4 digits (or $SMARTPHONE_AUTH_PIN, or a prompt).")
@_pin_option(CardKey.SIGN, "--sign-pin", envvar="SMARTPHONE_SIGN_PIN",
             help_text="Signature PIN: 6-16 upper-case letters and digits (or $SMARTPHONE_SIGN_PIN, or a prompt).")
@click.option("--card-expiry", type=click.DateTime(["%Y-%m-%d"]),
              help="The card's expiry, YYYY-MM-DD (default: the 10th birthday after issue, 5th under 18).")
def card_issue(*, state_dir: Path, passphrase_file: Path | None, card_name: str, name: str, address: str,
               birthdate: datetime, sex: str, prefecture: str, city: str, auth_pin: str, sign_pin: str,
               card_expiry: datetime | None) -> None:
    """Have J-LIS mint a card for a person: two keys, two certificates, two PINs."""
    state = _state(state_dir, passphrase_file)
    try:
        attributes = BasicAttributes(name=name, address=address, date_of_birth=birthdate.date(), sex=_SEXES[sex])
    except MalformedAttributes as exc:
        raise click.UsageError(str(exc)) from exc
    with _refusals():
        if state.card_dir(card_name).exists():
            raise click.ClickException(f"a card called {card_name!r} already exists in {state.root}")
        authority = state.load_jlis()
        try:
            issued = authority.issue_card(
                attributes=attributes, prefecture=prefecture, city=city, auth_pin=auth_pin, sign_pin=sign_pin,
                now=_now(), card_expiry=None if card_expiry is None else card_expiry.date(),
            )
        except CorruptState:
            raise
        except ValueError as exc:  # InvalidPin, and data no card can be issued for
            raise click.UsageError(str(exc)) from exc
        path = state.add_card(card_name, issued)
    certificates = issued.certificates
    click.echo(f"card {card_name!r} issued in {path}")
    click.echo(f"  user-authentication certificate {certificates.auth.serial_number:x}")
    click.echo(f"  signature certificate {certificates.sign.serial_number:x}")
    click.echo(f"  valid until {certificates.auth.not_valid_after_utc.isoformat()}")


@card.command("revoke")
@_state_options
@click.option("--card", "card_name", required=True, callback=_checked(functools.partial(check_name, "card")),
              help="Name of the card in --state.")
@click.option("--reason", type=click.Choice(_REASON_ORDER), default="unspecified", show_default=True,
              help="CRL reason code.")
def card_revoke(state_dir: Path, passphrase_file: Path | None, card_name: str, reason: str) -> None:
    """Have J-LIS revoke both certificates of a card."""
    state = _state(state_dir, passphrase_file)
    with _refusals():
        certificates = state.card_certificates(card_name)
        changed = state.load_jlis().revoke_card(certificates, reason=_REASONS[reason], now=_now())
    for status in changed:
        click.echo(f"revoked {status.profile} certificate {status.serial_number:x} ({reason})")


# -- life events: J-LIS replaces certificates and publishes the links (docs/linking.md) --------------


def _replace_card(state: State, passphrase: bytes, name: str, holder: MyNumberCard) -> None:
    """Write the card's new keys and certificates in place of the old directory.

    The new directory is written whole beside the state first (``State.add_card``), then swapped
    in with two renames, so the card directory is either the old one or the new one.
    """
    token = secrets.token_hex(4)
    pending = state.root / f".pending-{token}"
    try:
        State(pending, passphrase).add_card(name, holder)
        target = state.card_dir(name)
        retired = target.with_name(f".{name}.{token}.old")
        target.rename(retired)
        try:
            (pending / "cards" / name).rename(target)
        except OSError:
            retired.rename(target)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(pending, ignore_errors=True)


def _print_certificates(name: str, certificates: CardCertificates, event: str) -> None:
    click.echo(f"card {name!r} {event}")
    click.echo(f"  user-authentication certificate {certificates.auth.serial_number:x}")
    click.echo(f"  signature certificate {certificates.sign.serial_number:x}")


@card.command("renew")
@_state_options
@click.option("--card", "card_name", required=True, callback=_checked(functools.partial(check_name, "card")),
              help="Name of the card in --state.")
def card_renew(state_dir: Path, passphrase_file: Path | None, card_name: str) -> None:
    """Renew both certificates: new keys on the card, the old certificates revoked (superseded), links published."""
    state = _state(state_dir, passphrase_file)
    with _refusals():
        holder = state.load_card(card_name)
        try:
            renewed = state.load_jlis().renew_card(holder, now=_now())
        except LifeEventRefused as exc:
            raise click.ClickException(f"J-LIS refused the renewal: {exc}") from exc
        _replace_card(state, read_passphrase(passphrase_file), card_name, holder)
    _print_certificates(card_name, renewed, "renewed; the old certificates are revoked (superseded)")


@card.command("move")
@_state_options
@click.option("--card", "card_name", required=True, callback=_checked(functools.partial(check_name, "card")),
              help="Name of the card in --state.")
@click.option("--address", required=True, help="The new address from the prefecture on, no postcode.")
@click.option("--prefecture", required=True, help="The new prefecture, for the signature certificate's subject.")
@click.option("--city", required=True, help="The new city, for the signature certificate's subject.")
def card_move(*, state_dir: Path, passphrase_file: Path | None, card_name: str, address: str, prefecture: str,
              city: str) -> None:
    """Move house: a new signature certificate with the new address, the old one revoked (affiliationChanged)."""
    state = _state(state_dir, passphrase_file)
    with _refusals():
        holder = state.load_card(card_name)
        try:
            moved = state.load_jlis().move_card(holder, address=address, prefecture=prefecture, city=city,
                                                now=_now())
        except MalformedAttributes as exc:
            raise click.BadParameter(str(exc), param_hint="'--address'") from exc
        except LifeEventRefused as exc:
            raise click.ClickException(f"J-LIS refused the move: {exc}") from exc
        _replace_card(state, read_passphrase(passphrase_file), card_name, holder)
    _print_certificates(card_name, moved, "moved; the old signature certificate is revoked (affiliationChanged)")


@card.command("reissue")
@_state_options
@click.option("--card", "card_name", required=True, callback=_checked(functools.partial(check_name, "card")),
              help="Name of the lost card in --state; the new card takes its place.")
@_pin_option(CardKey.AUTH, "--auth-pin", envvar="SMARTPHONE_AUTH_PIN",
             help_text="The new card's user-authentication PIN: 4 digits (or $SMARTPHONE_AUTH_PIN, or a prompt).")
@_pin_option(CardKey.SIGN, "--sign-pin", envvar="SMARTPHONE_SIGN_PIN",
             help_text="The new card's signature PIN (or $SMARTPHONE_SIGN_PIN, or a prompt).")
def card_reissue(state_dir: Path, passphrase_file: Path | None, card_name: str, auth_pin: str,
                 sign_pin: str) -> None:
    """Reissue a lost card: new keys, PINs and certificates, the old certificates revoked (keyCompromise)."""
    state = _state(state_dir, passphrase_file)
    with _refusals():
        old = state.card_certificates(card_name)
        try:
            reissued = state.load_jlis().reissue_card(old, auth_pin=auth_pin, sign_pin=sign_pin, now=_now())
        except LifeEventRefused as exc:
            raise click.ClickException(f"J-LIS refused the reissue: {exc}") from exc
        _replace_card(state, read_passphrase(passphrase_file), card_name, reissued)
    _print_certificates(card_name, reissued.certificates, "reissued; the old certificates are revoked (keyCompromise)")


def _status_line(status: CertificateStatus | None) -> str:
    if status is None:
        return "not issued by this J-LIS"
    if status.revoked_at is None:
        return status.state.value
    reason = status.reason.value if status.reason else "unspecified"
    return f"{status.state.value} ({reason}, {status.revoked_at.isoformat()})"


@card.command("show")
@click.option("--state", "state_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory that keeps the simulated J-LIS, cards and phones between commands.")
@click.option("--card", "card_name", required=True, callback=_checked(functools.partial(check_name, "card")),
              help="Name of the card in --state.")
def card_show(state_dir: Path, card_name: str) -> None:
    """Show what a card's certificates say, their status and the PIN tries left (no passphrase needed)."""
    state = State(state_dir)
    with _refusals():
        certificates = state.card_certificates(card_name)
        statuses = state.card_status(card_name)
        tries = state.card_tries(card_name)
    try:
        attributes = basic_attributes.decode(certificates.sign)
    except MalformedAttributes as exc:
        raise click.ClickException(f"the signature certificate's attributes are malformed: {exc}") from exc
    click.echo(f"card {card_name!r}")
    for key, title in ((CardKey.AUTH, "user-authentication certificate"), (CardKey.SIGN, "signature certificate")):
        certificate = certificates[key]
        click.echo(title)
        click.echo(f"  subject: {certificate.subject.rfc4514_string()}")
        click.echo(f"  issuer: {certificate.issuer.rfc4514_string()}")
        click.echo(f"  serial: {certificate.serial_number:x}")
        click.echo(f"  valid: {certificate.not_valid_before_utc.isoformat()} to "
                   f"{certificate.not_valid_after_utc.isoformat()}")
        click.echo(f"  status: {_status_line(statuses[key])}")
        click.echo(f"  PIN tries left: {tries[key]}")
    click.echo("basic attributes (signature certificate)")
    click.echo(f"  name: {attributes.name}")
    click.echo(f"  address: {attributes.address}")
    click.echo(f"  date of birth: {attributes.date_of_birth.isoformat()}")
    click.echo(f"  sex: {attributes.sex.name.lower()}")


@card.command("sign")
@_state_options
@click.option("--card", "card_name", required=True, callback=_checked(functools.partial(check_name, "card")),
              help="Name of the card in --state.")
@click.option("--key", "key_name", required=True, type=click.Choice([key.value for key in CardKey]),
              help="Which card key signs.")
@click.option("--digest", required=True, callback=_checked(_hex_digest), help="SHA-256 digest to sign, in hex.")
@click.option("--pin", envvar="SMARTPHONE_PIN", prompt=True, hide_input=True,
              help="The key's PIN (or $SMARTPHONE_PIN, or a prompt); a wrong one costs a try.")
def card_sign(*, state_dir: Path, passphrase_file: Path | None, card_name: str, key_name: str, digest: bytes,
              pin: str) -> None:
    """Sign a SHA-256 digest with a card key after its PIN; prints the signature in base64."""
    state = _state(state_dir, passphrase_file)
    key = CardKey(key_name)
    with _refusals():
        holder = state.load_card(card_name)
        try:
            signature = holder.sign_digest(key, digest, pin=pin)
        except InvalidPin as exc:
            raise click.BadParameter(str(exc), param_hint="'--pin'") from exc
        finally:
            # The retry counter changed whether the PIN was right or wrong: it outlives this call.
            state.save_card_pins(card_name, holder)
    click.echo(base64.b64encode(signature).decode("ascii"))


@main.group()
def phone() -> None:
    """Smartphones and their secure elements."""


@phone.command("create")
@_state_options
@click.option("--phone", "phone_name", required=True, callback=_checked(functools.partial(check_name, "phone")),
              help="Name of the phone in --state.")
@click.option("--vendor", default="MynaDevices", show_default=True,
              callback=_checked(functools.partial(check_name, "vendor")),
              help="SE vendor; created with its attestation root on first use.")
@click.option("--model", help="SE model, for a new vendor (default: '<vendor> SE').")
def phone_create(state_dir: Path, passphrase_file: Path | None, phone_name: str, vendor: str,
                 model: str | None) -> None:
    """Create a phone whose SE the vendor provisions with its attestation key and chain."""
    state = _state(state_dir, passphrase_file)
    if model is not None and not model.strip():
        raise click.BadParameter("the model must not be empty", param_hint="'--model'")
    with _refusals():
        if state.phone_dir(phone_name).exists():
            raise click.ClickException(f"a phone called {phone_name!r} already exists in {state.root}")
        maker = state.vendor(vendor, model=model, now=_now())
        element = state.add_phone(phone_name, vendor=maker)
    click.echo(f"phone {phone_name!r} created in {state.phone_dir(phone_name)}")
    click.echo(f"  SE vendor {maker.name!r}, model {maker.model!r}, AAGUID {element.aaguid}")
    click.echo(f"  attestation root: {state.vendor_dir(vendor) / 'root.crt'}")


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _bind(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host not in _LOOPBACK:
        raise ValueError("the phone screen is a local demo: bind it to 127.0.0.1, localhost or [::1]")
    if not port.isdigit() or not 1 <= int(port) <= 65535:  # noqa: PLR2004 - the TCP port range
        raise ValueError("give HOST:PORT, e.g. 127.0.0.1:8200")
    return host.strip("[]"), int(port)


@phone.command("serve")
@_state_options
@click.option("--phone", "phone_name", required=True, callback=_checked(functools.partial(check_name, "phone")),
              help="Name of the phone in --state.")
@click.option("--portal", required=True, help="The portal's base URL (its issuer), e.g. http://127.0.0.1:8000.")
@click.option("--bind", default="127.0.0.1:8200", show_default=True, callback=_checked(_bind),
              help="Loopback HOST:PORT to serve the phone screen on.")
def phone_serve(state_dir: Path, passphrase_file: Path | None, phone_name: str, portal: str,
                bind: tuple[str, int]) -> None:
    """Serve the phone screen: enroll, scan and approve with a simulated fingerprint in the browser."""
    from werkzeug.serving import run_simple  # noqa: PLC0415 - only this command needs the server

    from smartphone.phone_screen import create_phone_app  # noqa: PLC0415 - imports Flask; only here

    with _refusals():
        passphrase = read_passphrase(passphrase_file)
        State(state_dir, passphrase).load_phone(phone_name)  # a missing phone or bad passphrase fails now
    host, port = bind
    try:
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from exc
    click.echo(f"phone screen for {phone_name!r} on http://{_bind_text(host, port)}/ (portal {portal})")
    run_simple(host, port, create_phone_app(state_dir, phone_name, portal, passphrase), threaded=True)


def _bind_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _pem_text(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


@main.command("enroll")
@_state_options
@click.option("--phone", "phone_name", required=True, callback=_checked(functools.partial(check_name, "phone")),
              help="Name of the phone in --state.")
@click.option("--card", "card_name", required=True, callback=_checked(functools.partial(check_name, "card")),
              help="Name of the card in --state that the user taps.")
@click.option("--portal", required=True, help="The portal's base URL (its issuer), e.g. http://127.0.0.1:8000.")
@click.option("--auth-pin", envvar="SMARTPHONE_AUTH_PIN", prompt=True, hide_input=True,
              callback=_checked(functools.partial(check_pin, CardKey.AUTH)),
              help="The card's user-authentication PIN (or $SMARTPHONE_AUTH_PIN, or a prompt).")
@click.option("--sign-pin", envvar="SMARTPHONE_SIGN_PIN", prompt=True, hide_input=True,
              callback=_checked(functools.partial(check_pin, CardKey.SIGN)),
              help="The card's signature PIN (or $SMARTPHONE_SIGN_PIN, or a prompt).")
def enroll_command(*, state_dir: Path, passphrase_file: Path | None, phone_name: str, card_name: str, portal: str,
                   auth_pin: str, sign_pin: str) -> None:
    """Enroll the phone at the portal: the SE makes two keys, the card signs for both, the portal certifies them."""
    state = _state(state_dir, passphrase_file)
    with _refusals():
        element = state.load_phone(phone_name)
        holder = state.load_card(card_name)
        try:
            enrollment = enroll(
                client=PortalClient(portal), element=element, card=holder, auth_pin=auth_pin, sign_pin=sign_pin,
            )
        except PortalError as exc:
            raise click.ClickException(f"the portal refused the enrollment: {exc}") from exc
        except SecureElementError as exc:
            raise click.ClickException(f"the secure element refused: {exc}") from exc
        finally:
            # The PIN retry counters changed whether the PINs were right or wrong.
            state.save_card_pins(card_name, holder)
        state.save_phone(phone_name, element)
        state.save_enrollment(phone_name, {
            "portal": enrollment.portal,
            "device_id": enrollment.device_id,
            "auth_credential_id": base64.urlsafe_b64encode(enrollment.auth_credential_id).decode("ascii"),
            "sign_credential_id": base64.urlsafe_b64encode(enrollment.sign_credential_id).decode("ascii"),
            "auth_certificate": _pem_text(enrollment.auth_certificate),
            "sign_certificate": _pem_text(enrollment.sign_certificate),
            "chain": [_pem_text(certificate) for certificate in enrollment.chain],
        })
    click.echo(f"phone {phone_name!r} enrolled at {enrollment.portal} as device {enrollment.device_id}")
    click.echo(f"  user-authentication certificate {enrollment.auth_certificate.serial_number:x}")
    click.echo(f"  signature certificate {enrollment.sign_certificate.serial_number:x}")


_FINGERPRINT = {"pass": True, "fail": False}


@main.command("approve")
@_state_options
@click.option("--phone", "phone_name", required=True, callback=_checked(functools.partial(check_name, "phone")),
              help="Name of the enrolled phone in --state.")
@click.option("--qr", help="The QR payload the camera read (it goes stale within seconds).")
@click.option("--link", help="The login page's same-device link, myna-gateway://transaction?id=...&token=...")
@click.option("--decline", is_flag=True, help="Decline the request instead of approving it.")
@click.option("--fingerprint", type=click.Choice(list(_FINGERPRINT)), default="pass", show_default=True,
              help="Simulate the biometric check: 'fail' sends nothing.")
def approve_command(*, state_dir: Path, passphrase_file: Path | None, phone_name: str, qr: str | None,
                    link: str | None, decline: bool, fingerprint: str) -> None:
    """Open a login request by its QR payload or same-device link, show it, and approve or decline it."""
    from smartphone.phone_screen import ATTRIBUTE_LABELS, approve_transaction, load_enrollment  # noqa: PLC0415

    if (qr is None) == (link is None):
        raise click.UsageError("give exactly one of --qr and --link")
    state = _state(state_dir, passphrase_file)
    with _refusals():
        element = state.load_phone(phone_name)
        enrollment = load_enrollment(state, phone_name)
    client = PortalClient(enrollment.portal)
    try:
        transaction = client.lookup_transaction(qr=qr, link=link, credential_id=enrollment.auth_credential_id)
    except PortalError as exc:
        raise click.ClickException(f"the portal refused the lookup: {exc.title} ({exc.type})") from exc
    click.echo(f"request from: {transaction['rp_name']}")
    click.echo(f"verification code: {transaction['verification_code']}")
    requested = transaction["requested_attributes"]
    click.echo("attributes: " + (", ".join(ATTRIBUTE_LABELS.get(name, name) for name in requested) or "none"))
    for document in transaction.get("documents", []):
        click.echo(f"document to sign: {document['label']} (SHA-256 {document['digest_prefix']}…)")
    try:
        if decline:
            client.decline_transaction(transaction["transaction_id"])
        else:
            approve_transaction(client=client, element=element, enrollment=enrollment, transaction=transaction,
                                fingerprint_matches=_FINGERPRINT[fingerprint])
    except PortalError as exc:
        state.save_phone(phone_name, element)  # a counter the SE spent stays spent
        renew = "" if exc.signature_key_renewal is None else (
            f"; renew it (signature certificate {exc.signature_key_renewal}) with `smartphone phone "
            f"reenroll-signature-key --phone {phone_name} --card CARD`, then approve again")
        raise click.ClickException(f"the portal refused: {exc.title} ({exc.type}){renew}") from exc
    except SecureElementError as exc:
        raise click.ClickException(f"the secure element refused: {exc}; nothing was sent") from exc
    if not decline:
        with _refusals():
            state.save_phone(phone_name, element)  # the signature counter went up
    click.echo("declined" if decline else "approved")


_DEVICE_REASONS = ("cessationOfOperation", "superseded", "keyCompromise")


@contextmanager
def _enrolled_phone(state_dir: Path, passphrase_file: Path | None, phone_name: str) -> Iterator[tuple[Any, Any]]:
    """The phone's SE and enrollment; saves the SE afterwards (its counter moved) and turns refusals into errors."""
    from smartphone.phone_screen import load_enrollment  # noqa: PLC0415 - imports Flask; only here

    state = _state(state_dir, passphrase_file)
    with _refusals():
        element = state.load_phone(phone_name)
        enrollment = load_enrollment(state, phone_name)
    try:
        yield element, enrollment
    except PortalError as exc:
        state.save_phone(phone_name, element)  # a counter the SE spent stays spent
        raise click.ClickException(f"the portal refused: {exc.title} ({exc.type})") from exc
    except SecureElementError as exc:
        raise click.ClickException(f"the secure element refused: {exc}; nothing was sent") from exc
    with _refusals():
        state.save_phone(phone_name, element)


@phone.command("certificates")
@_state_options
@click.option("--phone", "phone_name", required=True, callback=_checked(functools.partial(check_name, "phone")),
              help="Name of the enrolled phone in --state.")
def phone_certificates(state_dir: Path, passphrase_file: Path | None, phone_name: str) -> None:
    """List the phone's smartphone certificates at the portal (the SE signs a fresh challenge)."""
    from smartphone.portal_client import device_certificates  # noqa: PLC0415 - appended command

    with _enrolled_phone(state_dir, passphrase_file, phone_name) as (element, enrollment):
        answer = device_certificates(client=PortalClient(enrollment.portal), element=element, enrollment=enrollment)
    click.echo(f"device {answer['device_id']} at {enrollment.portal}: {answer['status']}")
    for item in answer["certificates"]:
        reason = f" ({item['reason']})" if item.get("reason") else ""
        click.echo(f"  {item['kind']:<4} {item['serial']} {item['status']}{reason} until {item['not_after']}")


@phone.command("revoke")
@_state_options
@click.option("--phone", "phone_name", required=True, callback=_checked(functools.partial(check_name, "phone")),
              help="Name of the enrolled phone in --state.")
@click.option("--reason", type=click.Choice(_DEVICE_REASONS), default="cessationOfOperation", show_default=True,
              help="RFC 5280 reason given for both certificates.")
def phone_revoke(state_dir: Path, passphrase_file: Path | None, phone_name: str, reason: str) -> None:
    """Revoke the phone at the portal: both its certificates and the device. It cannot log in again."""
    from smartphone.portal_client import revoke_device  # noqa: PLC0415 - appended command

    with _enrolled_phone(state_dir, passphrase_file, phone_name) as (element, enrollment):
        revoke_device(client=PortalClient(enrollment.portal), element=element, enrollment=enrollment, reason=reason)
    click.echo(f"phone {phone_name!r} (device {enrollment.device_id}) revoked at {enrollment.portal}: {reason}")


@phone.command("reenroll-signature-key")
@_state_options
@click.option("--phone", "phone_name", required=True, callback=_checked(functools.partial(check_name, "phone")),
              help="Name of the enrolled phone in --state.")
@click.option("--card", "card_name", required=True, callback=_checked(functools.partial(check_name, "card")),
              help="Name of the card in --state that the user taps.")
@click.option("--sign-pin", envvar="SMARTPHONE_SIGN_PIN", prompt=True, hide_input=True,
              callback=_checked(functools.partial(check_pin, CardKey.SIGN)),
              help="The card's signature PIN (or $SMARTPHONE_SIGN_PIN, or a prompt); a wrong one costs a try.")
def phone_reenroll_signature_key(*, state_dir: Path, passphrase_file: Path | None, phone_name: str, card_name: str,
                                 sign_pin: str) -> None:
    """Enroll a new signature key at the phone's portal by tapping the card (after a move, or a found phone).

    The SE makes a new key, its authentication key says which phone this is, and the card's
    signature key vouches for both; the new signature certificate carries the card's current
    attributes and replaces the old one.
    """
    from smartphone.phone_screen import renew_signature_key  # noqa: PLC0415 - imports Flask; only here

    state = _state(state_dir, passphrase_file)
    with _refusals():
        try:
            renewed = renew_signature_key(state=state, phone=phone_name, card=card_name, sign_pin=sign_pin)
        except PortalError as exc:
            raise click.ClickException(f"the portal refused the new signature key: {exc.title} ({exc.type})") from exc
        except SecureElementError as exc:
            raise click.ClickException(f"the secure element refused: {exc}; nothing was sent") from exc
    click.echo(f"phone {phone_name!r} (device {renewed.device_id}) has a new signature key at {renewed.portal}")
    click.echo(f"  signature certificate {renewed.sign_certificate.serial_number:x}")
