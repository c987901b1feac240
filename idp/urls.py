"""The one rule for URLs the portal sends people or messages to: a client's redirect and
post-logout URIs, and its webhook. Absolute, with a host, no fragment, no user information, and
over TLS except to a loopback listener (RFC 6749 §3.1.2, RFC 9700 §2.6, RFC 8252 §7.3)."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

__all__ = ["LOOPBACK_HOSTS", "UnacceptableUrl", "check_tls_url", "split_url"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Hosts on which plain http is accepted (RFC 8252 §7.3)."""


class UnacceptableUrl(ValueError):
    """The URL breaks the rule; the message says what to fix."""


def split_url(url: str, *, noun: str = "URI") -> SplitResult:
    """The parts of a non-empty, printable, parseable ``url``. Raises UnacceptableUrl."""
    if not isinstance(url, str) or not url:
        raise UnacceptableUrl(f"a {noun} must be a non-empty string")
    if any(character.isspace() or not character.isprintable() for character in url):
        raise UnacceptableUrl(f"{url!r} must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise UnacceptableUrl(f"{url!r} is not a valid {noun}: {exc}") from exc
    return parts


def check_tls_url(url: str, *, noun: str = "URI") -> str:
    """``url`` if it follows the rule; raises UnacceptableUrl saying which part does not."""
    parts = split_url(url, noun=noun)
    # RFC 6749 §3.1.2: "The redirection endpoint URI MUST be an absolute URI".
    if not parts.scheme or not parts.hostname:
        raise UnacceptableUrl(f"{url!r} is not an absolute {noun} with a host")
    # RFC 6749 §3.1.2: "The endpoint URI MUST NOT include a fragment component."
    if "#" in url:
        raise UnacceptableUrl(f"{url!r} must not include a fragment")
    if "@" in parts.netloc:
        raise UnacceptableUrl(f"{url!r} must not include user information")
    # RFC 9700 §2.6: TLS, except loopback listeners of native apps (RFC 8252 §7.3).
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        return url
    raise UnacceptableUrl(f"{url!r} must use https (http only on 127.0.0.1, localhost or [::1])")
