"""Problem details for HTTP APIs (RFC 9457): the one renderer of the portal's machine-facing errors.

A view raises a ``Problem`` subclass; ``register_problem_handler`` turns it into
``application/problem+json`` with a stable ``type`` URI under ``PROBLEM_BASE``. ``serve_problems``
makes routing errors (unknown URL, wrong method, body too large) under an API's prefix answer the
same way, so a client never sees an HTML error page, and anything unexpected becomes a 500
problem with no detail, logged.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from idp.ops.unavailable import Dependency, register_unavailable_handler, retry_headers

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_JSON",
    "BadRequest",
    "MethodNotAllowed",
    "NotFound",
    "Problem",
    "RequestTooLarge",
    "ServerError",
    "TemporarilyUnavailable",
    "UnsupportedMediaType",
    "problem_response",
    "register_problem_handler",
    "serve_problems",
]

PROBLEM_BASE = "https://id.myna.example/problems/"
PROBLEM_JSON = "application/problem+json"
_PREFIXES = "myna.problem_prefixes"

logger = logging.getLogger(__name__)


class Problem(Exception):
    """An error an API answers with RFC 9457 problem details.

    Subclasses fix ``type`` (a stable URI, §3.1.1), ``title`` (a short summary that does not
    change from occurrence to occurrence, §3.1.3) and ``status``. ``detail`` (§3.1.4) explains
    this occurrence to the client developer; it must help fix the request, never reveal why a
    verification failed.
    """

    type: str = "about:blank"
    title: str = "Error"
    status: int = 500

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        """The problem details object (§3.1)."""
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        return body


class BadRequest(Problem):
    """The request cannot be read."""

    type = PROBLEM_BASE + "bad-request"
    title = "The request cannot be read"
    status = 400


class NotFound(Problem):
    """No resource at this URL."""

    type = PROBLEM_BASE + "not-found"
    title = "Nothing is here"
    status = 404


class MethodNotAllowed(Problem):
    """The URL exists but not for this method."""

    type = PROBLEM_BASE + "method-not-allowed"
    title = "This method is not allowed here"
    status = 405


class RequestTooLarge(Problem):
    """The body is larger than this endpoint accepts."""

    type = PROBLEM_BASE + "request-too-large"
    title = "The request body is too large"
    status = 413


class UnsupportedMediaType(Problem):
    """The body's Content-Type is not the one this endpoint reads."""

    type = PROBLEM_BASE + "unsupported-media-type"
    title = "The request body has the wrong content type"
    status = 415


class ServerError(Problem):
    """Something unexpected; logged, never described to the client."""

    type = PROBLEM_BASE + "server-error"
    title = "The server could not answer this request"
    status = 500


class TemporarilyUnavailable(Problem):
    """PostgreSQL or Redis cannot be reached now; the same request may succeed after ``Retry-After``.

    The same ``type`` as the device API's ``ServiceUnavailable``: one problem, whichever API answers it.
    """

    type = PROBLEM_BASE + "service-unavailable"
    title = "The service is unavailable; try again later"
    status = 503

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers=retry_headers())


_BY_STATUS: dict[int, type[Problem]] = {
    problem.status: problem
    for problem in (BadRequest, NotFound, MethodNotAllowed, RequestTooLarge, UnsupportedMediaType, ServerError)
}


def problem_response(problem: Problem) -> Response:
    """``problem`` as an ``application/problem+json`` response with its status."""
    response = Response(json.dumps(problem.to_dict()), status=problem.status, mimetype=PROBLEM_JSON)
    response.headers.update(problem.headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def _from_http_exception(error: HTTPException) -> Problem:
    """The problem for a werkzeug HTTP error, keeping headers such as 405's ``Allow``."""
    code = error.code or 500
    kept = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
    kind = _BY_STATUS.get(code)
    if kind is not None:
        return kind(headers=kept)
    # RFC 9457 §4.2.1: "about:blank" says the problem is no more than its HTTP status.
    problem = Problem(headers=kept)
    problem.title, problem.status = error.name, code
    return problem


def _render_problem(error: Problem) -> Response:
    return problem_response(error)


def _render_http_exception(error: HTTPException) -> Response:
    return problem_response(_from_http_exception(error))


def _render_unexpected(error: Exception) -> Response:
    logger.error("unexpected error answering %s %s", request.method, request.path, exc_info=error)
    return problem_response(ServerError())


def _render_unavailable(_dependency: Dependency) -> Response:
    return problem_response(TemporarilyUnavailable())


def register_problem_handler(target: Flask | Blueprint) -> None:
    """Answer ``Problem``, HTTP errors and unexpected exceptions raised in ``target``'s views
    with problem details (a 500 without detail for the unexpected; a 503 with Retry-After when
    the database or the ephemeral store cannot be reached, ``idp.ops.unavailable``)."""
    target.register_error_handler(Problem, _render_problem)
    target.register_error_handler(HTTPException, _render_http_exception)
    register_unavailable_handler(target, _render_unavailable, otherwise=_render_unexpected)
    target.register_error_handler(Exception, _render_unexpected)


def serve_problems(app: Flask, prefix: str) -> None:
    """Answer routing errors (404, 405, …) for URLs under ``prefix`` with problem details.

    Flask routes those before any blueprint is chosen, so a blueprint's own handlers never see
    them; this app-wide handler answers problem JSON under the listed prefixes and leaves every
    other URL to Flask's default.
    """
    prefixes: list[str] = app.extensions.setdefault(_PREFIXES, [])
    if prefixes:
        prefixes.append(prefix.rstrip("/"))
        return
    prefixes.append(prefix.rstrip("/"))

    def render(error: HTTPException) -> Response | HTTPException:
        path = request.path
        if any(path == known or path.startswith(known + "/") for known in prefixes):
            return _render_http_exception(error)
        return error

    app.register_error_handler(HTTPException, render)
