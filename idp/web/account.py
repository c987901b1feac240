"""The account page: the person's phones and the sites they consented to; suspending or revoking
the phone, withdrawing a consent.

``GET /account`` needs the browser's portal session (``idp.web.session``); without one it starts
nothing (no login happens here, and no password exists) and says how to get one: log in at a
site with My Number, then come back. With one, it lists the person's phones, each with its two
smartphone certificates (purpose, dates, status and reason; never a serial), and each client
holding a standing consent with the attributes it covers.

A session lasts only while the phone that made it could still log in (``session_phone_stands``):
once that phone is suspended or revoked, from here or elsewhere, the next use of the page ends
the session and says so.

``POST /account/consents/withdraw`` (``client_id``, ``csrf_token``) withdraws the person's consent
for that client (``ConsentService.revoke``): from the client's next userinfo call no attribute is
released.

``GET /account/phone/suspend`` and ``GET /account/phone/revoke`` ask for confirmation; the form
there posts back to the same address (``csrf_token``; ``reason`` for revoke: cessationOfOperation
or keyCompromise). Suspending is ``idp phones suspend`` (``PhoneLife``), revoking the phone's own
self-revocation (``DeviceManagement``), both for the session's phone only. Either ends the portal
session, since the phone that made it no longer stands, and leads to a page saying what happened
and what to do next. Resuming is not offered: a suspended phone cannot log in to reach this page.

Every form carries the session's own CSRF token, compared in constant time; SameSite=Lax on the
session cookie is the second line. ja/en as the login page; strict CSP, no script.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from idp.ceremonies.phone_life import PhoneNotActive, UnknownPhone
from idp.ops.unavailable import register_unavailable_handler
from idp.pki.registry import AlreadyRevoked
from idp.web.account_phone import REVOCATION_REASONS, phones_of, revoke_phone, session_phone_stands, suspend_phone
from idp.web.login import MESSAGES as LOGIN_MESSAGES
from idp.web.login import choose_locale, content_security_policy, unavailable_page
from idp.web.session import SESSION_EXTENSION, clear_session_cookie, current_session, provider_of_sessions

if TYPE_CHECKING:
    from idp.app import Services
    from idp.web.session import PortalSession

__all__ = ["MESSAGES", "create_account_blueprint", "logged_out_page"]

logger = logging.getLogger("idp.account")

MESSAGES: dict[str, dict[str, str]] = {
    "ja": {
        "title": "アカウント",
        "consents": "情報の提供に同意しているサイト",
        "none": "情報の提供に同意しているサイトはありません。",
        "withdraw": "同意を取り消す",
        "withdrawn": "同意を取り消しました。",
        "phones": "スマートフォン",
        "phones_none": "登録されているスマートフォンはありません。",
        "this_phone": "このログインに使ったスマートフォン",
        "enrolled_at": "登録日時",
        "state_active": "利用中",
        "state_suspended": "一時停止中",
        "state_revoked": "失効済み",
        "state_expired": "期限切れ（登録し直してください）",
        "purpose_auth": "利用者証明用電子証明書",
        "purpose_sign": "署名用電子証明書",
        "issued": "発行日",
        "expires": "有効期限",
        "status_good": "有効",
        "status_on_hold": "一時停止中",
        "status_revoked": "失効",
        "status_expired": "期限切れ",
        "reason_unspecified": "理由の指定なし",
        "reason_keyCompromise": "鍵の危殆化・紛失・盗難",
        "reason_cACompromise": "認証局の危殆化",
        "reason_affiliationChanged": "記載事項の変更",
        "reason_superseded": "新しい証明書への切り替え",
        "reason_cessationOfOperation": "利用の終了",
        "reason_certificateHold": "一時停止",
        "reason_privilegeWithdrawn": "資格の取り消し",
        "reason_aACompromise": "属性認証局の危殆化",
        "reason_removeFromCRL": "一時停止の解除",
        "suspend": "このスマートフォンを一時停止する",
        "revoke": "このスマートフォンを失効させる",
        "suspend_confirm_title": "スマートフォンを一時停止しますか？",
        "suspend_confirm": "2つの電子証明書が一時停止され、このスマートフォンではログインも署名もできなくなります。"
                           "このスマートフォンでログインしたサイトでのログインは取り消され、このページからもログアウトします。"
                           "見つかったときは、マイナンバーカードをかざして再開できます。",
        "revoke_confirm_title": "スマートフォンを失効させますか？",
        "revoke_confirm": "2つの電子証明書が失効し、このスマートフォンは二度と使えなくなります（元に戻せません）。"
                          "このスマートフォンでログインしたサイトでのログインは取り消され、このページからもログアウトします。"
                          "見つかるかもしれないときは、一時停止を選んでください。",
        "revoke_reason": "理由",
        "revoke_reason_cessationOfOperation": "このスマートフォンを使わなくなった",
        "revoke_reason_keyCompromise": "なくした・盗まれた",
        "confirm_suspend": "一時停止する",
        "confirm_revoke": "失効させる",
        "back": "アカウントのページに戻る",
        "suspended_title": "スマートフォンを一時停止しました",
        "suspended": "2つの電子証明書は一時停止中です。このスマートフォンではログインも署名もできません。"
                     "ポータルからログアウトしました。",
        "suspended_next": "見つかったら、ほかの端末か見つかったスマートフォンでマイナンバーのアプリを開き、再開を選んで"
                          "マイナンバーカードをかざしてください。利用者証明用電子証明書が有効に戻ります。"
                          "署名用電子証明書は失効するので、署名や情報の提供の前に、新しい署名用の鍵を登録します。"
                          "見つからないときは、新しいスマートフォンを登録すると、このスマートフォンは失効します。",
        "revoked_title": "スマートフォンを失効させました",
        "revoked": "2つの電子証明書は失効しました。このスマートフォンは二度と使えません。"
                   "ポータルからログアウトしました。",
        "revoked_next": "マイナンバーでもう一度ログインするには、スマートフォンのアプリでマイナンバーカードをかざして、"
                        "スマートフォンを登録してください。サイトへの同意はそのまま引き継がれます。",
        "session_ended_title": "ログインは終了しました",
        "session_ended": "このページへのログインに使ったスマートフォンが一時停止または失効しているため、"
                         "ログインは終了しました。再開したか新しいスマートフォンを登録したときは、"
                         "マイナンバーでログインできるサイトでログインしてから、このページをもう一度開いてください。",
        "revoke_reason_missing": "失効させる理由を選んでください。"
                                 "アカウントのページを開き直して、もう一度お試しください。",
        "no_session_title": "ログインしていません",
        "no_session": "マイナンバーでログインできるサイトで、スマートフォンを使ってログインしてから、"
                      "このページをもう一度開いてください。",
        "logged_out_title": "ログアウトしました",
        "logged_out": "ポータルからログアウトしました。このウィンドウを閉じてもかまいません。",
        "refused_title": "リクエストを処理できません",
        "refused": "このフォームは使えません。アカウントのページを開き直して、もう一度お試しください。",
    },
    "en": {
        "title": "Your account",
        "consents": "Sites you have agreed to give information to",
        "none": "You have not agreed to give information to any site.",
        "withdraw": "Withdraw consent",
        "withdrawn": "Consent withdrawn.",
        "phones": "Your phone",
        "phones_none": "No phone is enrolled.",
        "this_phone": "the phone you logged in with",
        "enrolled_at": "Enrolled",
        "state_active": "Active",
        "state_suspended": "Suspended",
        "state_revoked": "Revoked",
        "state_expired": "Expired (enroll it again)",
        "purpose_auth": "User-authentication certificate",
        "purpose_sign": "Signature certificate",
        "issued": "Issued",
        "expires": "Expires",
        "status_good": "Good",
        "status_on_hold": "On hold",
        "status_revoked": "Revoked",
        "status_expired": "Expired",
        "reason_unspecified": "no reason given",
        "reason_keyCompromise": "key compromised, lost or stolen",
        "reason_cACompromise": "certification authority compromised",
        "reason_affiliationChanged": "details changed",
        "reason_superseded": "replaced by a new certificate",
        "reason_cessationOfOperation": "no longer used",
        "reason_certificateHold": "suspended",
        "reason_privilegeWithdrawn": "privilege withdrawn",
        "reason_aACompromise": "attribute authority compromised",
        "reason_removeFromCRL": "hold lifted",
        "suspend": "Suspend this phone",
        "revoke": "Revoke this phone",
        "suspend_confirm_title": "Suspend this phone?",
        "suspend_confirm": "Both of its certificates go on hold: the phone can no longer log in or sign. The logins "
                           "it made at websites are withdrawn, and you are logged out of this page. If you find "
                           "the phone, you can resume it by tapping your My Number Card.",
        "revoke_confirm_title": "Revoke this phone?",
        "revoke_confirm": "Both of its certificates are revoked and the phone can never be used again (this cannot "
                          "be undone). The logins it made at websites are withdrawn, and you are logged out of "
                          "this page. If you may still find it, suspend it instead.",
        "revoke_reason": "Why",
        "revoke_reason_cessationOfOperation": "I no longer use this phone",
        "revoke_reason_keyCompromise": "It was lost or stolen",
        "confirm_suspend": "Suspend",
        "confirm_revoke": "Revoke",
        "back": "Back to your account",
        "suspended_title": "Your phone is suspended",
        "suspended": "Both of its certificates are on hold: the phone cannot log in or sign. You have been logged "
                     "out of the portal.",
        "suspended_next": "Found it? Open the My Number app on another device or on the found phone, choose resume "
                          "and tap your My Number Card: the user-authentication certificate is good again. The "
                          "signature certificate is revoked, so the phone enrolls a new signature key before it "
                          "signs or gives your information again. If it stays lost, enrolling a new phone revokes "
                          "this one.",
        "revoked_title": "Your phone is revoked",
        "revoked": "Both of its certificates are revoked: the phone can never log in or sign again. You have "
                   "been logged out of the portal.",
        "revoked_next": "To log in with My Number again, enroll a phone: in its app, tap your My Number Card. "
                        "What you agreed with each site carries over.",
        "session_ended_title": "Your login has ended",
        "session_ended": "The phone you logged in with is suspended or revoked, so your login here has ended. Once "
                         "it is resumed or a new phone is enrolled, log in with My Number at a website, then open "
                         "this page again.",
        "revoke_reason_missing": "Choose why you revoke the phone. Open your account page again and retry.",
        "no_session_title": "You are not logged in",
        "no_session": "Log in with My Number at a website, using your phone, then open this page again.",
        "logged_out_title": "You are logged out",
        "logged_out": "You have logged out of the portal. You may close this window.",
        "refused_title": "This request cannot be processed",
        "refused": "This form can no longer be used. Open your account page again and retry.",
    },
}
"""The account pages' words, per locale; attribute names come from the login page's."""


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy()
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _words() -> tuple[str, dict[str, str]]:
    locale = choose_locale()
    return locale, MESSAGES[locale] | {name: LOGIN_MESSAGES[locale][name] for name in _ATTRIBUTES}


_ATTRIBUTES = ("name", "address", "birthdate", "gender")


def _style_url() -> str:
    return url_for("login.static", filename="login.css")


def message_page(title: str, text: str, *, status: int = 200, more: str | None = None) -> Response:
    """A page with one message (no session, logged out, refused form), in the browser's language;
    ``more`` names a second paragraph (what to do next)."""
    locale, words = _words()
    html = render_template(
        "account_message.html", locale=locale, title=words[title], text=words[text],
        more=None if more is None else words[more], style_url=_style_url(),
    )
    return _headers(Response(html, status=status, mimetype="text/html"))


def logged_out_page() -> Response:
    """What RP-initiated logout shows when the RP named no post_logout_redirect_uri."""
    return message_page("logged_out_title", "logged_out")


def _services() -> Services:
    from idp.app import services  # noqa: PLC0415 - idp.app imports this module (through idp.oidc.http)

    return services(current_app)


def _end_session(session_id: str, session: PortalSession, reason: str, response: Response) -> Response:
    """Forget the portal session and clear its cookie on ``response``."""
    current_app.extensions[SESSION_EXTENSION].store.end(session_id)
    logger.info("session.ended reason=%s device=%s", reason, session.device_id)
    return clear_session_cookie(response, provider_of_sessions().issuer)


def _standing_session(*, refused_status: int) -> tuple[str, PortalSession] | Response:
    """The live session whose phone still stands; else the page to show (``refused_status``).

    A session whose phone no longer stands is ended here (it could not be made now).
    """
    found = current_session()
    if found is None:
        return message_page("no_session_title", "no_session", status=refused_status)
    session_id, session = found
    if not session_phone_stands(_services(), session):
        page = message_page("session_ended_title", "session_ended", status=refused_status)
        return _end_session(session_id, session, "phone_not_standing", page)
    return found


def _form_session() -> tuple[str, PortalSession] | Response:
    """For a form post: a live session and its own CSRF token, checked before anything else
    (a forged post ends nothing); then the session's phone must stand. 403 otherwise."""
    found = current_session()
    if found is None:
        return message_page("no_session_title", "no_session", status=403)
    _session_id, session = found
    token = request.form.get("csrf_token", "")
    if not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
        logger.warning("account.rejected reason=csrf_token")
        return message_page("refused_title", "refused", status=403)
    return _standing_session(refused_status=403)


def account() -> Response:
    """The person's phones and consents, with their forms; or how to log in."""
    found = _standing_session(refused_status=200)
    if isinstance(found, Response):
        return found
    _session_id, session = found
    services = _services()
    provider = services.oidc
    consents = []
    for client_id, attributes in provider.consents.standing(person_id=session.person_id).items():
        client = provider.clients.get(client_id)
        if client is not None:
            consents.append((client, [name for name in _ATTRIBUTES if name in attributes]))
    consents.sort(key=lambda entry: entry[0].name)
    phones = phones_of(services.sessions, session.person_id, now=services.clock.now())
    locale, words = _words()
    html = render_template(
        "account.html", locale=locale, t=words, consents=consents, csrf_token=session.csrf_token,
        withdrawn=request.args.get("withdrawn") == "1", withdraw_url=url_for("account.withdraw"),
        phones=phones, current_device=session.device_id,
        suspend_url=url_for("account.confirm_suspend"), revoke_url=url_for("account.confirm_revoke"),
        style_url=_style_url(),
    )
    return _headers(Response(html, mimetype="text/html"))


def withdraw() -> Response:
    """Withdraw the person's consent for ``client_id``; 403 without the session's CSRF token."""
    found = _form_session()
    if isinstance(found, Response):
        return found
    _session_id, session = found
    client_id = request.form.get("client_id", "")
    provider = provider_of_sessions()
    withdrawn = provider.consents.revoke(person_id=session.person_id, client_id=client_id, now=provider.clock.now())
    logger.info("account.consent_withdrawn client=%s consents=%d", client_id[:64], withdrawn)
    response = redirect(url_for("account.account", withdrawn="1"), code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def _confirm_page(action: str) -> Response:
    """Ask before suspending or revoking the session's phone: the form that does it."""
    found = _standing_session(refused_status=200)
    if isinstance(found, Response):
        return found
    _session_id, session = found
    locale, words = _words()
    html = render_template(
        "account_confirm.html", locale=locale, t=words, action=action, csrf_token=session.csrf_token,
        title=words[f"{action}_confirm_title"], text=words[f"{action}_confirm"], submit=words[f"confirm_{action}"],
        form_url=url_for(f"account.{action}"), back_url=url_for("account.account"),
        reasons=tuple(REVOCATION_REASONS) if action == "revoke" else (), style_url=_style_url(),
    )
    return _headers(Response(html, mimetype="text/html"))


def confirm_suspend() -> Response:
    """``GET /account/phone/suspend``: what suspending does, and the button that does it."""
    return _confirm_page("suspend")


def confirm_revoke() -> Response:
    """``GET /account/phone/revoke``: what revoking does, why, and the button that does it."""
    return _confirm_page("revoke")


def _done(session_id: str, session: PortalSession, reason: str, endpoint: str) -> Response:
    """The session ends with its phone; the browser goes to the page saying what to do next."""
    response = redirect(url_for(endpoint), code=303)
    response.headers["Cache-Control"] = "no-store"
    return _end_session(session_id, session, reason, response)


def suspend() -> Response:
    """Suspend the session's phone (both certificates on hold), then end the session."""
    found = _form_session()
    if isinstance(found, Response):
        return found
    session_id, session = found
    try:
        suspend_phone(session)
    except (UnknownPhone, PhoneNotActive, AlreadyRevoked):  # it stopped standing since the check (a race)
        page = message_page("session_ended_title", "session_ended", status=409)
        return _end_session(session_id, session, "phone_not_standing", page)
    logger.info("account.phone_suspended device=%s", session.device_id)
    return _done(session_id, session, "phone_suspended", "account.suspended")


def revoke() -> Response:
    """Revoke the session's phone for the ``reason`` given (its self-revocation), then end the session."""
    found = _form_session()
    if isinstance(found, Response):
        return found
    session_id, session = found
    reason = REVOCATION_REASONS.get(request.form.get("reason", ""))
    if reason is None:
        logger.warning("account.rejected reason=revocation_reason")
        return message_page("refused_title", "revoke_reason_missing", status=400)
    revoke_phone(session, reason)
    logger.info("account.phone_revoked device=%s reason=%s", session.device_id, reason.value)
    return _done(session_id, session, "phone_revoked", "account.revoked")


def suspended() -> Response:
    """After suspending: what happened, and how to resume the phone when it is found."""
    return message_page("suspended_title", "suspended", more="suspended_next")


def revoked() -> Response:
    """After revoking: what happened, and how to enroll a phone again."""
    return message_page("revoked_title", "revoked", more="revoked_next")


def create_account_blueprint() -> Blueprint:
    """``/account``, its withdraw form, and suspending or revoking the phone."""
    blueprint = Blueprint("account", __name__)
    blueprint.add_url_rule("", "account", account, methods=["GET"], strict_slashes=False)
    blueprint.add_url_rule("/consents/withdraw", "withdraw", withdraw, methods=["POST"])
    blueprint.add_url_rule("/phone/suspend", "confirm_suspend", confirm_suspend, methods=["GET"])
    blueprint.add_url_rule("/phone/suspend", "suspend", suspend, methods=["POST"])
    blueprint.add_url_rule("/phone/suspended", "suspended", suspended, methods=["GET"])
    blueprint.add_url_rule("/phone/revoke", "confirm_revoke", confirm_revoke, methods=["GET"])
    blueprint.add_url_rule("/phone/revoke", "revoke", revoke, methods=["POST"])
    blueprint.add_url_rule("/phone/revoked", "revoked", revoked, methods=["GET"])
    register_unavailable_handler(blueprint, lambda _dependency: unavailable_page())
    return blueprint
