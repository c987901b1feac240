"""The demo relying party's "Sign a document" pages: upload, the callback's signing branch, results, downloads.

``/sign`` shows the upload form and pushes the request (``relying_party_demo.signing``);
the portal's answer comes back to the site's one registered ``/callback``, which hands it here
when its ``state`` is the pending signing request's (``SignPages.owns``). The results page and
its downloads (``/sign/results/<id>/...``) serve only the browser session that made them.

A demo, not a pattern for a real site's storage: pending requests and outcomes live in one bounded
in-memory store of this process, shared by every visitor, so many uploads push older entries out.
A real site keeps them in its own database, per account, behind its own login and CSRF protection.
"""

from __future__ import annotations

import io
from typing import Any

from authlib.integrations.base_client.errors import OAuthError
from flask import Flask, abort, redirect, render_template, request, send_file, session, url_for
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from relying_party_demo.signing import (
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENTS,
    MemoryStore,
    PendingSigning,
    SigningFailed,
    SigningOutcome,
    UploadRefused,
    collect_results,
    push_signing_request,
    read_uploads,
)

__all__ = ["MAX_UPLOAD_BYTES", "SIGN_SCOPES", "SignPages"]

SIGN_SCOPES = ("openid", "name")
"""What a signing request asks for (those the site is registered for): with the person's consent,
the assertion then carries the signer's name as ``verified_claims``."""
MAX_UPLOAD_BYTES = MAX_DOCUMENTS * MAX_DOCUMENT_BYTES + 64 * 1024
"""The largest upload form: ten files of the portal's size, and room for the multipart framing."""
_KEPT_RESULTS = 10
"""How many signing outcomes a browser session can come back to."""
_KEPT_PENDING = 5
"""How many signing requests a browser session can have open at once (one per tab)."""

Page = tuple[str, int]


class SignPages:
    """The signing views of the demo site, with the pending requests and outcomes in server memory."""

    def __init__(self, app: Flask, portal: Any, *, issuer: str, client_id: str, client_secret: str,
                 scope: str) -> None:
        """``portal``: the site's Authlib Flask client; ``scope``: the scopes the site is registered for."""
        self._portal = portal
        self._issuer = issuer
        self._client_id = client_id
        self._client_secret = client_secret
        # The signing scope, and the signer's name when the site is registered for it (the assertion carries it).
        self._scope = " ".join([*(name for name in SIGN_SCOPES if name in scope.split()), "sign"])
        self._pending: MemoryStore[PendingSigning] = MemoryStore()
        self._signed: MemoryStore[SigningOutcome] = MemoryStore()
        app.add_url_rule("/sign", "sign_page", self.page, methods=["GET"])
        app.add_url_rule("/sign", "sign", self.sign, methods=["POST"])
        app.add_url_rule("/sign/results/<result_id>", "signed_result", self.result, methods=["GET"])
        app.add_url_rule("/sign/results/<result_id>/<int:number>/<kind>", "signed_download", self.download,
                         methods=["GET"])
        app.add_url_rule("/sign/results/<result_id>/assertion.jwt", "signed_assertion", self.assertion,
                         methods=["GET"])
        app.register_error_handler(RequestEntityTooLarge, self.too_large)

    def __repr__(self) -> str:
        return f"SignPages({self._issuer!r})"

    def page(self) -> str:
        return _form()

    def sign(self) -> Response | Page:
        """Push the uploaded documents as a signing request (PAR + RFC 9396); the browser goes to /authorize."""
        try:
            documents = read_uploads(request.files.getlist("documents"))
            url, saved = push_signing_request(
                self._portal, client_id=self._client_id, client_secret=self._client_secret,
                redirect_uri=url_for("callback", _external=True), scope=self._scope, documents=documents,
            )
        except UploadRefused as refused:
            return _form(code=refused.code, message=refused.message), refused.status
        except SigningFailed as failed:
            return _error(failed.code, failed.message, 502)
        self._portal.save_authorize_data(**saved)  # Authlib checks state, sends the verifier, checks the nonce
        pending_id = self._pending.put(PendingSigning(documents=documents))
        waiting = dict(list(session.get("signing", {}).items())[1 - _KEPT_PENDING:])  # a request per tab, a few
        session["signing"] = waiting | {saved["state"]: pending_id}
        return redirect(url, code=303)

    def owns(self, state: str | None) -> bool:
        """Whether a callback with ``state`` answers one of this browser's pending signing requests."""
        return bool(state) and state in session.get("signing", {})

    def callback(self) -> Response | Page:
        """The signing request's answer (``iss`` already checked): redeem the code, fetch and judge the results."""
        waiting = dict(session.get("signing", {}))
        pending = self._pending.take(waiting.pop(request.args["state"]))
        session["signing"] = waiting
        refused = _refused(pending)
        if refused is not None:
            return refused
        assert pending is not None  # noqa: S101 - _refused answers when it is missing
        try:
            token = self._portal.authorize_access_token()
            outcome = collect_results(self._portal, issuer=self._issuer, client_id=self._client_id, token=token,
                                      pending=pending)
        except OAuthError as exc:
            return _error(exc.error, exc.description or "", 400)
        except SigningFailed as failed:
            return _error(failed.code, failed.message, 502)
        except OSError:  # requests' connection errors
            return _error("temporarily_unavailable", "the portal cannot be reached", 502)
        if outcome.subject and outcome.subject != (token.get("userinfo") or {}).get("sub"):
            return _error("invalid_response", "the assertion names someone other than the ID token does", 502)
        result_id = self._signed.put(outcome)
        session["signed"] = [*session.get("signed", [])[1 - _KEPT_RESULTS:], result_id]
        return redirect(url_for("signed_result", result_id=result_id), code=303)

    def result(self, result_id: str) -> str:
        return render_template("signed.html", outcome=self._outcome(result_id), result_id=result_id)

    def download(self, result_id: str, number: int, kind: str) -> Response:
        """A signed PDF (``pdf``) or a detached CAdES signature (``p7s``) of document ``number`` (from 1)."""
        documents = self._outcome(result_id).documents
        if not 1 <= number <= len(documents):
            abort(404)
        document = documents[number - 1]
        stem = document.label.rsplit(".", 1)[0] if document.kind == "pdf" else document.label
        if kind == "pdf" and document.signed_pdf is not None:
            return _download(document.signed_pdf, f"{stem}-signed.pdf", "application/pdf")
        if kind == "p7s" and document.signature is not None:
            return _download(document.signature, f"{stem}.p7s", "application/pkcs7-signature")
        return abort(404)

    def assertion(self, result_id: str) -> Response:
        return _download(self._outcome(result_id).assertion.encode(), "assertion.jwt", "application/jwt")

    def too_large(self, _error: RequestEntityTooLarge) -> Page:
        return _form(code="upload_too_large", message=f"アップロードが大きすぎます / The upload is too large: at "
                     f"most {MAX_DOCUMENTS} files of {MAX_DOCUMENT_BYTES // 1024} KiB."), 413

    def _outcome(self, result_id: str) -> SigningOutcome:
        """The outcome ``result_id`` if this browser's session made it; 404 otherwise."""
        outcome = self._signed.get(result_id) if result_id in session.get("signed", []) else None
        if outcome is None:
            abort(404)
        return outcome


def _refused(pending: PendingSigning | None) -> Page | None:
    """The error page for an error response (RFC 6749 §4.1.2.1) or a request no longer kept; None to go on."""
    error = request.args.get("error")
    if error == "access_denied":
        return _error(error, "スマートフォンで署名が拒否されました。何も署名されていません。 / "
                      "Signing was declined on the phone: nothing was signed.", 400)
    if error is not None:
        return _error(error, request.args.get("error_description", ""), 400)
    if pending is None:
        return _error("request_expired", "この署名要求はもう保持されていません。やり直してください。 / "
                      "This signing request is no longer kept here: start again.", 400)
    return None


def _form(*, code: str | None = None, message: str | None = None) -> str:
    return render_template("sign.html", max_documents=MAX_DOCUMENTS, max_kib=MAX_DOCUMENT_BYTES // 1024,
                           error_code=code, error=message)


def _error(code: str, message: str, status: int) -> Page:
    return render_template("error.html", error=code, description=message, signing=True), status


def _download(data: bytes, filename: str, mimetype: str) -> Response:
    response = send_file(io.BytesIO(data), mimetype=mimetype, as_attachment=True, download_name=filename)
    response.headers["Cache-Control"] = "no-store"
    return response
