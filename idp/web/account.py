"""The account page: the sites a person has consented to, and withdrawing a consent.

``GET /account`` needs the browser's portal session (``idp.web.session``); without one it starts
nothing (no login happens here, and no password exists) and says how to get one: log in at a
site with My Number, then come back. With one, it lists each client holding a standing consent
and the attributes it covers, each with a form to withdraw it.

``POST /account/consents/withdraw`` (``client_id``, ``csrf_token``) withdraws the person's consent
for that client (``ConsentService.revoke``): from the client's next userinfo call no attribute is
released. The form carries the session's own CSRF token, compared in constant time; SameSite=Lax
on the session cookie is the second line. ja/en as the login page; strict CSP, no script.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from idp.ops.unavailable import register_unavailable_handler
from idp.web.login import MESSAGES as LOGIN_MESSAGES
from idp.web.login import choose_locale, content_security_policy, unavailable_page
from idp.web.session import current_session, provider_of_sessions

__all__ = ["MESSAGES", "create_account_blueprint", "logged_out_page"]

logger = logging.getLogger("idp.account")

MESSAGES: dict[str, dict[str, str]] = {
    "ja": {
        "title": "アカウント",
        "consents": "情報の提供に同意しているサイト",
        "none": "情報の提供に同意しているサイトはありません。",
        "withdraw": "同意を取り消す",
        "withdrawn": "同意を取り消しました。",
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


def message_page(title: str, text: str, *, status: int = 200) -> Response:
    """A page with one message (no session, logged out, refused form), in the browser's language."""
    locale, words = _words()
    html = render_template(
        "account_message.html", locale=locale, title=words[title], text=words[text],
        style_url=url_for("login.static", filename="login.css"),
    )
    return _headers(Response(html, status=status, mimetype="text/html"))


def logged_out_page() -> Response:
    """What RP-initiated logout shows when the RP named no post_logout_redirect_uri."""
    return message_page("logged_out_title", "logged_out")


def account() -> Response:
    """The person's consents, each with a withdraw form; or how to log in."""
    found = current_session()
    if found is None:
        return message_page("no_session_title", "no_session")
    _session_id, session = found
    provider = provider_of_sessions()
    consents = []
    for client_id, attributes in provider.consents.standing(person_id=session.person_id).items():
        client = provider.clients.get(client_id)
        if client is not None:
            consents.append((client, [name for name in _ATTRIBUTES if name in attributes]))
    consents.sort(key=lambda entry: entry[0].name)
    locale, words = _words()
    html = render_template(
        "account.html", locale=locale, t=words, consents=consents, csrf_token=session.csrf_token,
        withdrawn=request.args.get("withdrawn") == "1",
        withdraw_url=url_for("account.withdraw"), style_url=url_for("login.static", filename="login.css"),
    )
    return _headers(Response(html, mimetype="text/html"))


def withdraw() -> Response:
    """Withdraw the person's consent for ``client_id``; 403 without the session's CSRF token."""
    found = current_session()
    if found is None:
        return message_page("no_session_title", "no_session", status=403)
    _session_id, session = found
    token = request.form.get("csrf_token", "")
    if not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
        logger.warning("account.rejected reason=csrf_token")
        return message_page("refused_title", "refused", status=403)
    client_id = request.form.get("client_id", "")
    provider = provider_of_sessions()
    withdrawn = provider.consents.revoke(person_id=session.person_id, client_id=client_id, now=provider.clock.now())
    logger.info("account.consent_withdrawn client=%s consents=%d", client_id[:64], withdrawn)
    response = redirect(url_for("account.account", withdrawn="1"), code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def create_account_blueprint() -> Blueprint:
    """``/account`` and its withdraw form."""
    blueprint = Blueprint("account", __name__)
    blueprint.add_url_rule("", "account", account, methods=["GET"], strict_slashes=False)
    blueprint.add_url_rule("/consents/withdraw", "withdraw", withdraw, methods=["POST"])
    register_unavailable_handler(blueprint, lambda _dependency: unavailable_page())
    return blueprint
