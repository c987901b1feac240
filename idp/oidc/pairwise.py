"""Pairwise subject identifiers (OpenID Connect Core 1.0 §8.1).

``sub`` = base64url(HMAC-SHA256(pairwise secret, sector || 0x00 || person_id)): one person is
the same ``sub`` to every client of one sector and unrelated ``sub`` values across sectors, so
two RPs cannot join their users by ``sub``. The NUL byte keeps the concatenation unambiguous
(a host name never contains one). The secret is the instance's (``idp.oidc.keys``) and never
leaves the portal; the person id is internal and never released.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["pairwise_subject"]


def pairwise_subject(*, secret: bytes, sector: str, person_id: str) -> str:
    """The ``sub`` of ``person_id`` for clients of ``sector`` (OIDC Core §8.1)."""
    message = sector.encode() + b"\x00" + person_id.encode()
    mac = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
