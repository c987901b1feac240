"""The login page (issue 3 §3): QR code, verification code, same-device link, status, cancel.

The authorization endpoint answers with this page itself (performance.md: one request fewer).
The page is bound to the browser that opened it by a random secret in an HttpOnly cookie; the
transaction keeps only its SHA-256 (``browser_binding``), and only that browser may read the
status, cancel, or continue to the client with the code.

- ``GET /login/<id>/status``: JSON ``{status, qr_payload, same_device}``, polled every second by
  ``static/login.js``, which draws the QR code; one ephemeral-store read, no database, no image.
- ``GET /login/<id>/qr.svg``: the code drawn by the portal, for browsers without JavaScript.
- ``POST /login/<id>/cancel``: a plain form, so cancelling works without JavaScript.
- ``GET /login/<id>/continue``: claims the approved outcome once and redirects to the client
  with the code; declined, cancelled or expired logins return ``access_denied``.

Same-device link: ``myna-gateway://transaction?id=<transaction id>&token=<same-device token>``
opens the portal's phone app on this device, which fetches the transaction with the token
instead of a scanned QR code (the device API, ``docs/device-api.md``).
"""

from __future__ import annotations

import hmac
import io
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import segno
from flask import Blueprint, Flask, current_app, render_template, request, url_for
from werkzeug.wrappers import Response

from idp.ceremonies.approval import ApprovalService
from idp.ceremonies.device_transactions import APPROVAL_EXTENSION
from idp.ceremonies.qr import qr_payload, read_qr_payload
from idp.ceremonies.transactions import (
    AuthorizationRequest,
    LoginTransaction,
    TransactionState,
    TransactionStatus,
    UnknownTransaction,
    browser_binding,
)
from idp.oidc.clients import ClientInfo
from idp.oidc.provider import OidcProvider
from idp.oidc.responses import redirect_to_client
from idp.ops import metrics
from idp.ops.unavailable import (
    UNAVAILABLE_ERRORS,
    Dependency,
    internal_error,
    register_unavailable_handler,
    retry_headers,
    unavailable_json,
)
from idp.signing.flow import documents_shown
from idp.web.session import start_session

__all__ = [
    "BROWSER_COOKIE",
    "SAME_DEVICE_SCHEME",
    "create_login_blueprint",
    "error_page",
    "start_login",
    "unavailable_page",
]

BROWSER_COOKIE = "myna_browser"
SAME_DEVICE_SCHEME = "myna-gateway"
_STATIC = Path(__file__).resolve().parent / "static"
_TEMPLATES = Path(__file__).resolve().parent / "templates"
_EXTENSION = "myna.oidc"
QR_SCRIPT = "vendor/qrcode-generator-2.0.4.js"
"""Draws the QR code in the browser (``static/vendor/README.md``)."""
NO_SCRIPT_REFRESH_SECONDS = 2
"""Without JavaScript the page reloads itself (through /continue) this often: a fresh QR code,
and the way back to the client once the phone has decided."""

MESSAGES: dict[str, dict[str, str]] = {
    "ja": {
        "title": "マイナンバーでログイン",
        "requested_by": "ログインを求めているサイト",
        "verification_code": "確認コード",
        "verification_hint": "スマートフォンに表示されるコードと同じことを確かめてください。",
        "scan": "スマートフォンのアプリでこのQRコードを読み取ってください。",
        "same_device": "このスマートフォンでアプリを開く",
        "attributes": "提供を求められている情報",
        "documents": "署名を求められている文書",
        "cancel": "キャンセル",
        "pending": "読み取りを待っています",
        "scanned": "スマートフォンで確認してください",
        "approved": "承認されました。移動しています…",
        "declined": "スマートフォンで拒否されました",
        "expired": "有効期限が切れました",
        "cancelled": "キャンセルされました",
        "completed": "完了しました",
        "error_title": "リクエストを処理できません",
        "unavailable": "ただいまサービスを利用できません。しばらくしてから、もう一度お試しください。",
        "name": "氏名", "address": "住所", "birthdate": "生年月日", "gender": "性別",
    },
    "en": {
        "title": "Log in with My Number",
        "requested_by": "Site asking you to log in",
        "verification_code": "Verification code",
        "verification_hint": "Check that your phone shows the same code.",
        "scan": "Scan this QR code with the app on your smartphone.",
        "same_device": "Open the app on this smartphone",
        "attributes": "Information the site asks for",
        "documents": "Documents the site asks you to sign",
        "cancel": "Cancel",
        "pending": "Waiting for your phone",
        "scanned": "Confirm on your phone",
        "approved": "Approved. Taking you back…",
        "declined": "Declined on your phone",
        "expired": "This login has expired",
        "cancelled": "Cancelled",
        "completed": "Done",
        "error_title": "This request cannot be processed",
        "unavailable": "The service is temporarily unavailable. Please try again in a moment.",
        "name": "Name", "address": "Address", "birthdate": "Date of birth", "gender": "Gender",
    },
}
"""The page's words, per locale; the page shows RP-supplied text only as escaped data."""
LOCALES = tuple(MESSAGES)


def choose_locale(ui_locales: tuple[str, ...] = ()) -> str:
    """ui_locales (OIDC Core §3.1.2.1) first, then Accept-Language, then Japanese."""
    for tag in ui_locales:
        if tag in MESSAGES:
            return tag
    return request.accept_languages.best_match(LOCALES) or "ja"


def content_security_policy(form_target: str | None = None) -> str:
    """No inline script or style; the cancel form may post here and be redirected to the client."""
    form_action = "'self'" if form_target is None else f"'self' {form_target}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _page_headers(response: Response, form_target: str | None = None) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy(form_target)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def error_page(error: str, description: str | None, *, status: int = 400, ui_locales: tuple[str, ...] = ()) -> Response:
    """An error shown to the user, never redirected (before the redirect URI is verified)."""
    locale = choose_locale(ui_locales)
    html = render_template(
        "error.html", t=MESSAGES[locale], locale=locale, error=error, description=description,
    )
    return _page_headers(Response(html, status=status, mimetype="text/html"))


def unavailable_page() -> Response:
    """503 for the browser while PostgreSQL or Redis cannot be reached: try again in a moment (ja/en).

    The locale follows the request's ``ui_locales`` (at /authorize), then Accept-Language.
    """
    locale = choose_locale(tuple(request.args.get("ui_locales", "").split()))
    response = error_page("temporarily_unavailable", MESSAGES[locale]["unavailable"], status=503, ui_locales=(locale,))
    response.headers.update(retry_headers())
    return response


def _unavailable(_dependency: Dependency) -> Response:
    """The page's JSON endpoints answer JSON (``login.js`` polls on), the navigations the page."""
    if request.endpoint in {"login.status", "login.qr_image"}:
        return unavailable_json()
    return unavailable_page()


def current_qr_payload(provider: OidcProvider, transaction: LoginTransaction) -> str:
    """The text of the current step's QR code.

    The page draws the code from it in the browser (``static/login.js``); the payload says no
    more than the image does, and lets the simulated phone "scan" by pasting it.
    """
    return qr_payload(
        transaction_id=transaction.id, secret=transaction.qr_secret, now=provider.clock.now(),
        period=provider.settings.login.qr_rotation,
    )


def qr_svg(payload: str) -> bytes:
    """The code drawn by the portal (segno), for browsers without JavaScript only."""
    buffer = io.BytesIO()
    segno.make_qr(payload, error="m", boost_error=False).save(buffer, kind="svg", scale=5, border=4)
    return buffer.getvalue()


def same_device_link(qr_text: str) -> str:
    """``myna-gateway://transaction?id=…&token=<step>.<tag>``: opens the phone app on this device.

    The token is the current QR code's time step and HMAC tag, so the link goes stale as the
    QR code does (after ``login.link_max_age``); the page renews it with every status poll.
    """
    scanned = read_qr_payload(qr_text)
    query = urlencode({"id": scanned.transaction_id, "token": f"{scanned.step}.{scanned.tag}"})
    return f"{SAME_DEVICE_SCHEME}://transaction?{query}"


def _provider() -> OidcProvider:
    found: OidcProvider = current_app.extensions[_EXTENSION]
    return found


def _render_login(provider: OidcProvider, transaction: LoginTransaction, status: TransactionStatus) -> Response:
    locale = choose_locale(transaction.request.ui_locales)
    payload = current_qr_payload(provider, transaction)
    html = render_template(
        "login.html", t=MESSAGES[locale], locale=locale, transaction=transaction, status=status.value,
        qr_payload=payload, same_device=same_device_link(payload), refresh_seconds=NO_SCRIPT_REFRESH_SECONDS,
        documents=documents_shown(transaction.request.signing),
        status_url=url_for("login.status", transaction_id=transaction.id),
        continue_url=url_for("login.continue_login", transaction_id=transaction.id),
        cancel_url=url_for("login.cancel", transaction_id=transaction.id),
        qr_image_url=url_for("login.qr_image", transaction_id=transaction.id),
        qr_script_url=url_for("login.static", filename=QR_SCRIPT),
        script_url=url_for("login.static", filename="login.js"),
        style_url=url_for("login.static", filename="login.css"),
    )
    return _page_headers(Response(html, mimetype="text/html"), _origin(transaction.request.redirect_uri))


def start_login(provider: OidcProvider, client: ClientInfo, authorization: AuthorizationRequest) -> Response:
    """Open the login transaction for a checked request and answer with the login page itself."""
    secret = request.cookies.get(BROWSER_COOKIE) or ""
    new_secret = len(secret) < 32 or len(secret) > 64  # noqa: PLR2004 - token_urlsafe(32) is 43 characters
    if new_secret:
        secret = secrets.token_urlsafe(32)
    transaction = provider.transactions.open(
        request=authorization, rp_name=client.name, browser_secret=secret, now=provider.clock.now(),
    )
    metrics.ceremony_started("login")
    response = _render_login(provider, transaction, TransactionStatus.PENDING)
    if new_secret:
        response.set_cookie(
            BROWSER_COOKIE, secret, httponly=True, secure=provider.issuer.startswith("https://"), samesite="Lax",
            path="/",
        )
    return response


def _bound(transaction_binding: str) -> bool:
    secret = request.cookies.get(BROWSER_COOKIE)
    if not secret:
        return False
    return hmac.compare_digest(browser_binding(secret), transaction_binding)


def _transaction(provider: OidcProvider, transaction_id: str) -> LoginTransaction | None:
    try:
        return provider.transactions.get(transaction_id)
    except UnknownTransaction:
        return None


def _state(provider: OidcProvider, transaction_id: str) -> TransactionState | None:
    try:
        return provider.transactions.load(transaction_id, now=provider.clock.now())
    except UnknownTransaction:
        return None


def status(transaction_id: str) -> Response:
    """The transaction's status for the waiting page; the QR code while it waits for a scan."""
    provider = _provider()
    state = _state(provider, transaction_id)
    body: dict[str, Any]
    if state is None:
        body = {"status": TransactionStatus.EXPIRED.value}
    elif not _bound(state.transaction.browser_binding):
        return _json({"error": "not_this_browser"}, 403)
    else:
        transaction, current = state.transaction, state.status
        body = {"status": current.value}
        if current is TransactionStatus.PENDING:
            body["qr_payload"] = current_qr_payload(provider, transaction)
            body["same_device"] = same_device_link(body["qr_payload"])
    return _json(body, 200)


def qr_image(transaction_id: str) -> Response:
    """The current QR code as SVG, for the page's ``<noscript>`` image (bound browser, pending only)."""
    provider = _provider()
    state = _state(provider, transaction_id)
    if state is None or not _bound(state.transaction.browser_binding):
        return _json({"error": "not_found"}, 404)
    if state.status is not TransactionStatus.PENDING:
        return _json({"error": "not_pending"}, 409)
    response = Response(qr_svg(current_qr_payload(provider, state.transaction)), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _json(body: dict[str, Any], status_code: int) -> Response:
    response = Response(json.dumps(body), status=status_code, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def cancel(transaction_id: str) -> Response:
    """Settle the transaction as cancelled (bound browser only) and return to the client."""
    provider = _provider()
    transaction = _transaction(provider, transaction_id)
    if transaction is None:
        return continue_login(transaction_id)
    if not _bound(transaction.browser_binding):
        return error_page("access_denied", "This login was started in another browser.", status=403)
    approvals: ApprovalService = current_app.extensions[APPROVAL_EXTENSION]
    if not approvals.cancel(transaction):
        return continue_login(transaction_id)  # the phone decided first: follow its decision
    return _deny(provider, transaction.request.redirect_uri, transaction.request.state, "the user cancelled the login")


def _deny(provider: OidcProvider, redirect_uri: str, state: str | None, description: str) -> Response:
    return redirect_to_client(
        redirect_uri, {"error": "access_denied", "error_description": description, "state": state},
        issuer=provider.issuer,
    )


def continue_login(transaction_id: str) -> Response:
    """Back to the client: the code for an approved login (once), access_denied otherwise."""
    provider = _provider()
    state = _state(provider, transaction_id)
    if state is None:
        return _continue_gone()
    transaction, current = state.transaction, state.status
    if not _bound(transaction.browser_binding):
        return error_page("access_denied", "This login was started in another browser.", status=403)
    authorization = transaction.request
    if current is TransactionStatus.APPROVED:
        outcome = provider.transactions.claim(transaction, state.outcome)
        if outcome is not None:
            try:
                code = provider.finish_login(transaction, outcome, sid=(sid := secrets.token_urlsafe(16)))
            except UNAVAILABLE_ERRORS:
                # No code reached the browser: let it claim again once the store is back (503 now).
                provider.transactions.release_claim(transaction)
                raise
            return start_session(redirect_to_client(
                authorization.redirect_uri, {"code": code, "state": authorization.state}, issuer=provider.issuer,
            ), outcome=outcome, sid=sid)
        current = TransactionStatus.COMPLETED
    denial = _DENIALS.get(current)
    if denial is not None:
        return _deny(provider, authorization.redirect_uri, authorization.state, denial)
    if current is TransactionStatus.COMPLETED:
        return error_page("invalid_request", "This login has already been completed.", status=400,
                          ui_locales=authorization.ui_locales)
    return _render_login(provider, transaction, current)  # still waiting: the page again


_DENIALS = {
    TransactionStatus.EXPIRED: "the login expired",
    TransactionStatus.DECLINED: "the user declined the login",
    TransactionStatus.CANCELLED: "the user cancelled the login",
}


def _continue_gone() -> Response:
    """Unknown, or expired longer ago than the store remembers (``EXPIRED_KEPT``)."""
    return error_page("invalid_request", "This login is unknown or long expired.", status=400)


def create_login_blueprint(app: Flask, provider: OidcProvider) -> Blueprint:
    """The ``/login/<id>/…`` routes and the page's static files."""
    app.extensions[_EXTENSION] = provider
    blueprint = Blueprint(
        "login", __name__, static_folder=str(_STATIC), static_url_path="/static",
        template_folder=str(_TEMPLATES),
    )
    blueprint.add_url_rule("/<transaction_id>/status", "status", status, methods=["GET"])
    blueprint.add_url_rule("/<transaction_id>/qr.svg", "qr_image", qr_image, methods=["GET"])
    blueprint.add_url_rule("/<transaction_id>/cancel", "cancel", cancel, methods=["POST"])
    blueprint.add_url_rule("/<transaction_id>/continue", "continue_login", continue_login, methods=["GET"])
    register_unavailable_handler(blueprint, _unavailable, otherwise=internal_error)
    return blueprint
