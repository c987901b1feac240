"""The simulated phone in a browser: a "phone screen" page to enroll, scan and approve with a fingerprint.

An outside client of the portal, like the ``smartphone`` commands: it speaks only the documented
device API (``smartphone.portal_client``). The person pastes what the phone's camera would read,
the login page's QR payload or its same-device link (``myna-gateway://transaction?...``), since a
browser tab has no camera. When the portal refuses an approval until the phone enrolls a new
signature key (``signature-key-renewal-required``: after a move, say), the screen asks the person
to tap the card with the signature PIN, renews the key and shows the same request again; a signing
request it looks up again with the code it scanned, since its documents were prepared for the
old signature certificate (``transaction-lookup-required``).

A local demo tool, not a product: ``smartphone phone serve`` binds it to loopback only, every
change is a POST carrying a random per-process form token (a cross-site form cannot know it), and
errors are shown as one readable line, never a traceback.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask, abort, render_template, request

from smartphone.card import CardError
from smartphone.portal_client import Enrollment, PortalClient, PortalError, approve, enroll, reenroll_signature_key
from smartphone.secure_element import SecureElement, SecureElementError, UserVerification, UserVerificationFailed
from smartphone.state import State, StateError

__all__ = [
    "ATTRIBUTE_LABELS",
    "PhoneNotEnrolled",
    "approve_transaction",
    "create_phone_app",
    "enrollment_record",
    "load_enrollment",
    "renew_signature_key",
    "renewal_message",
]

ATTRIBUTE_LABELS = {
    "name": "氏名 / Name",
    "address": "住所 / Address",
    "birthdate": "生年月日 / Date of birth",
    "gender": "性別 / Gender",
}
"""How the phone names each OIDC claim it is asked to release."""

_MAX_PENDING = 32


class PhoneNotEnrolled(StateError):
    """The phone has no enrollment: it cannot approve anything yet."""


def enrollment_record(enrollment: Enrollment) -> dict[str, Any]:
    """What the phone keeps of an enrollment (``State.save_enrollment``), as ``smartphone enroll`` writes it."""
    def pem(certificate: x509.Certificate) -> str:
        return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return {
        "portal": enrollment.portal,
        "device_id": enrollment.device_id,
        "auth_credential_id": base64.urlsafe_b64encode(enrollment.auth_credential_id).decode("ascii"),
        "sign_credential_id": base64.urlsafe_b64encode(enrollment.sign_credential_id).decode("ascii"),
        "auth_certificate": pem(enrollment.auth_certificate),
        "sign_certificate": pem(enrollment.sign_certificate),
        "chain": [pem(certificate) for certificate in enrollment.chain],
    }


def load_enrollment(state: State, phone: str) -> Enrollment:
    """The phone's saved enrollment. Raises PhoneNotEnrolled, StateNotFound or StateCorrupt."""
    record = state.load_enrollment(phone)
    if record is None:
        raise PhoneNotEnrolled(f"phone {phone!r} is not enrolled: enroll it with a card first")
    try:
        return Enrollment(
            portal=str(record["portal"]),
            device_id=str(record["device_id"]),
            auth_credential_id=base64.urlsafe_b64decode(record["auth_credential_id"]),
            sign_credential_id=base64.urlsafe_b64decode(record["sign_credential_id"]),
            auth_certificate=x509.load_pem_x509_certificate(record["auth_certificate"].encode("ascii")),
            sign_certificate=x509.load_pem_x509_certificate(record["sign_certificate"].encode("ascii")),
            chain=tuple(x509.load_pem_x509_certificate(item.encode("ascii")) for item in record["chain"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"the enrollment of phone {phone!r} in {state.root} is corrupt") from exc


def approve_transaction(
    *, client: PortalClient, element: SecureElement, enrollment: Enrollment, transaction: dict[str, Any],
    fingerprint_matches: bool,
) -> dict[str, Any]:
    """Approve with a simulated fingerprint: a failing one raises UserVerificationFailed, sending nothing.

    The SE's own switch is put back afterwards, so only this attempt is simulated.
    """
    stored = element.user_verification
    element.user_verification = UserVerification.PASS if fingerprint_matches else UserVerification.FAIL
    try:
        return approve(client=client, element=element, enrollment=enrollment, transaction=transaction)
    finally:
        element.user_verification = stored


def renew_signature_key(*, state: State, phone: str, card: str, sign_pin: str,
                        client: PortalClient | None = None) -> Enrollment:
    """Tap ``card`` (its signature PIN) to enroll a new signature key for the enrolled ``phone``, and keep it.

    The card's PIN tries, the SE (its new key, its counter) and the enrollment are saved as they
    end up. ``client``: the portal (default: the one the phone enrolled at). Raises PortalError,
    the card's errors (WrongPin, PinLocked), the SE's and StateError.
    """
    element, enrollment, holder = state.load_phone(phone), load_enrollment(state, phone), state.load_card(card)
    try:
        renewed = reenroll_signature_key(client=client or PortalClient(enrollment.portal), element=element,
                                         enrollment=enrollment, card=holder, sign_pin=sign_pin)
    finally:
        state.save_card_pins(card, holder)  # a wrong PIN costs a try either way
        state.save_phone(phone, element)  # a counter the SE spent stays spent
    state.save_enrollment(phone, enrollment_record(renewed))
    return renewed


def renewal_message(reason: str) -> str:
    """What the phone tells the person when the portal asks for a new signature key, by ``reason``."""
    if reason == "affiliationChanged":
        return ("住所が変わりました。カードをタッチして署名用の鍵を更新してください。 / "
                "Your address changed: tap your card to renew the signature key.")
    return (f"署名用電子証明書が使えなくなりました（{reason}）。カードをタッチして署名用の鍵を更新してください。 / "
            f"Your signature certificate is no longer valid ({reason}): tap your card to renew the signature key.")


class _PhoneScreen:
    """The screen's views; one per process, holding the looked-up transactions until decided."""

    def __init__(self, state_dir: Path, phone: str, portal_url: str, passphrase: bytes) -> None:
        self.state_dir = state_dir
        self.state = State(state_dir, passphrase)
        self.phone = phone
        self.portal = PortalClient(portal_url)
        self.form_token = secrets.token_urlsafe(32)
        self.lock = threading.Lock()
        self.pending: dict[str, tuple[dict[str, Any], str]] = {}
        """Each looked-up transaction by id, with the text scanned for it (a signing request is looked up again)."""

    def __repr__(self) -> str:
        return f"_PhoneScreen({self.phone!r}, {self.portal.base_url!r})"

    def page(self, view: str, status: int = 200, **values: Any) -> tuple[str, int]:
        if view in {"enroll", "renew"}:
            values.setdefault("cards", _cards(self.state_dir))
        return render_template("phone_screen.html", view=view, phone=self.phone, portal=self.portal.base_url,
                               form_token=self.form_token, labels=ATTRIBUTE_LABELS, **values), status

    def problem(self, message: str, view: str = "error", status: int = 400, **values: Any) -> tuple[str, int]:
        return self.page(view, status, error=message, **values)

    def check_form_token(self) -> None:
        sent = request.form.get("form_token", "") if request.method == "POST" else ""
        if request.method == "POST" and not hmac.compare_digest(sent.encode(), self.form_token.encode()):
            abort(403)

    def forbidden(self, _error: Exception) -> tuple[str, int]:
        return self.problem("このフォームは古くなっています。最初からやり直してください。 / "
                            "This form is stale: start again from the home screen.", status=403)

    def home(self) -> tuple[str, int]:
        try:
            enrolled = self.state.load_enrollment(self.phone) is not None
        except StateError as exc:
            return self.problem(str(exc), status=500)
        return self.page("scan" if enrolled else "enroll")

    def enroll(self) -> tuple[str, int]:
        card = request.form.get("card", "")
        if card not in _cards(self.state_dir):
            return self.problem(f"カードがありません / No such card: {card!r}", "enroll")
        with self.lock:
            try:
                element, holder = self.state.load_phone(self.phone), self.state.load_card(card)
                try:
                    enrollment = enroll(client=self.portal, element=element, card=holder,
                                        auth_pin=request.form.get("auth_pin", ""),
                                        sign_pin=request.form.get("sign_pin", ""))
                finally:
                    self.state.save_card_pins(card, holder)  # a wrong PIN costs a try either way
                self.state.save_phone(self.phone, element)
                self.state.save_enrollment(self.phone, enrollment_record(enrollment))
            except PortalError as exc:
                return self.problem(f"ポータルが登録を拒否しました / The portal refused the enrollment: {exc.title}",
                                    "enroll")
            except (CardError, SecureElementError, StateError, ValueError) as exc:
                return self.problem(f"登録できません / Cannot enroll: {exc}", "enroll")
        return self.page("enrolled", device_id=enrollment.device_id)

    def scan(self) -> tuple[str, int]:
        text = request.form.get("code", "").strip()
        if not text:
            return self.problem("QR コードの内容かリンクを貼り付けてください / Paste the QR payload or the link.",
                                "scan")
        try:
            transaction = self.look_up(text)
        except PortalError as exc:
            return self.problem(f"要求を開けません / Cannot open the request: {exc.title}", "scan")
        except StateError as exc:
            return self.problem(str(exc), "enroll")
        if len(self.pending) >= _MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        self.pending[transaction["transaction_id"]] = (transaction, text)
        return self.page("transaction", transaction=transaction)

    def look_up(self, text: str) -> dict[str, Any]:
        """The transaction a scanned code or link names. Raises PortalError or StateError."""
        enrollment = load_enrollment(self.state, self.phone)
        # A signing request is prepared for this phone's signature certificate: the lookup names
        # the authentication credential (docs/device-api.md), as ``smartphone approve`` does.
        credential = enrollment.auth_credential_id
        if text.startswith("myna-gateway:"):
            return self.portal.lookup_transaction(link=text, credential_id=credential)
        return self.portal.lookup_transaction(qr=text, credential_id=credential)

    def decide(self, transaction_id: str) -> tuple[str, int]:
        found = self.pending.get(transaction_id)
        if found is None:
            return self.problem("この要求はもう開いていません。もう一度スキャンしてください。 / "
                                "This request is no longer open here: scan again.", "scan")
        transaction, _scanned = found
        action = request.form.get("action", "")
        if action == "decline":
            return self.decline(transaction)
        if action in {"approve", "fingerprint-fails"}:
            return self.approve(transaction, fingerprint_matches=action == "approve")
        return self.problem("不明な操作 / Unknown action", "transaction", transaction=transaction)

    def decline(self, transaction: dict[str, Any]) -> tuple[str, int]:
        self.pending.pop(transaction["transaction_id"], None)
        try:
            self.portal.decline_transaction(transaction["transaction_id"])
        except PortalError as exc:
            return self.problem(f"拒否を送れません / Cannot decline: {exc.title}", "scan")
        return self.page("declined", transaction=transaction)

    def approve(self, transaction: dict[str, Any], *, fingerprint_matches: bool) -> tuple[str, int]:
        with self.lock:
            try:
                element, enrollment = self.state.load_phone(self.phone), load_enrollment(self.state, self.phone)
                try:
                    approve_transaction(client=self.portal, element=element, enrollment=enrollment,
                                        transaction=transaction, fingerprint_matches=fingerprint_matches)
                finally:
                    self.state.save_phone(self.phone, element)  # a counter the SE spent stays spent
            except UserVerificationFailed:
                return self.problem("指紋が一致しませんでした。何も送信していません。 / "
                                    "Fingerprint not recognised: nothing was sent.", "transaction",
                                    transaction=transaction)
            except PortalError as exc:
                if exc.signature_key_renewal is not None:  # the request stays open until the key is renewed
                    return self.page("renew", renewal=renewal_message(exc.signature_key_renewal),
                                     transaction=transaction)
                self.pending.pop(transaction["transaction_id"], None)
                return self.problem(f"ポータルが承認を拒否しました / The portal refused the approval: {exc.title}",
                                    "scan")
            except (SecureElementError, StateError) as exc:
                return self.problem(f"承認できません / Cannot approve: {exc}", "scan")
        self.pending.pop(transaction["transaction_id"], None)
        return self.page("approved", transaction=transaction)

    def renew(self) -> tuple[str, int]:
        """Tap the card to enroll a new signature key; then back to the request that asked for it."""
        found = self.pending.get(request.form.get("transaction_id", ""))
        transaction, scanned = found if found is not None else (None, "")
        card = request.form.get("card", "")
        again: dict[str, Any] = {"renewal": request.form.get("renewal", ""), "transaction": transaction}
        if card not in _cards(self.state_dir):
            return self.problem(f"カードがありません / No such card: {card!r}", "renew", **again)
        with self.lock:
            try:
                renew_signature_key(state=self.state, phone=self.phone, card=card,
                                    sign_pin=request.form.get("sign_pin", ""), client=self.portal)
            except PortalError as exc:
                return self.problem(f"ポータルが鍵の更新を拒否しました / The portal refused the new key: {exc.title}",
                                    "renew", **again)
            except (CardError, SecureElementError, StateError, ValueError) as exc:
                return self.problem(f"鍵を更新できません / Cannot renew the key: {exc}", "renew", **again)
        notice = "署名用の鍵を更新しました / Signature key renewed."
        if transaction is None:
            return self.page("scan", notice=notice)
        if transaction.get("kind") == "signing":  # its documents were prepared for the old certificate
            transaction_id = transaction["transaction_id"]
            try:
                transaction = self.look_up(scanned)
            except (PortalError, StateError) as exc:
                self.pending.pop(transaction_id, None)
                title = exc.title if isinstance(exc, PortalError) else str(exc)
                return self.problem(f"署名用の鍵を更新しました。要求を開き直せません。もう一度スキャンしてください。 / "
                                    f"Signature key renewed, but the request cannot be opened again: {title}. "
                                    "Scan again.", "scan")
            self.pending[transaction_id] = (transaction, scanned)
        return self.page("transaction", transaction=transaction,
                         notice=notice + " もう一度承認してください / Approve the request again.")


def create_phone_app(state_dir: Path, phone: str, portal_url: str, passphrase: bytes) -> Flask:
    """The phone screen for ``phone`` in ``state_dir``, talking to the portal at ``portal_url``."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    screen = _PhoneScreen(state_dir, phone, portal_url, passphrase)
    app.before_request(screen.check_form_token)
    app.register_error_handler(403, screen.forbidden)
    app.add_url_rule("/", "home", screen.home, methods=["GET"])
    app.add_url_rule("/enroll", "enroll_phone", screen.enroll, methods=["POST"])
    app.add_url_rule("/scan", "scan", screen.scan, methods=["POST"])
    app.add_url_rule("/transactions/<transaction_id>", "decide", screen.decide, methods=["POST"])
    app.add_url_rule("/signature-key", "renew_signature_key", screen.renew, methods=["POST"])
    return app


def _cards(state_dir: Path) -> list[str]:
    cards = state_dir / "cards"
    return sorted(path.name for path in cards.iterdir() if (path / "card.json").is_file()) if cards.is_dir() else []
