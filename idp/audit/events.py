"""What an audit record may say: the events, their detail keys, and the shape of actors and subjects.

The audit log must never hold an identity attribute, a token, a code, a PIN or a key. Rather than
trusting every caller, each event has a closed set of detail keys, detail values are short ASCII
strings, integers, booleans or lists of short ASCII strings, and actors and subjects are internal
ids of a fixed form (``kind:id``, the id in URL-safe ASCII). A name in 山田　太郎's card, a
Japanese address or a free-form string cannot pass; an attribute *name* (``address``) can.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ALLOWED_DETAILS",
    "AuditEvent",
    "InvalidAuditRecord",
    "certificate_subject",
    "check_actor",
    "check_details",
    "check_subject",
]


class AuditEvent(enum.StrEnum):
    """Every event the audit log records."""

    CERTIFICATE_ISSUED = "certificate.issued"
    CERTIFICATE_REVOKED = "certificate.revoked"
    """Revoked for good, or put on hold (``reason`` ``certificateHold``)."""
    CERTIFICATE_RESUMED = "certificate.resumed"
    ENROLLMENT_COMPLETED = "enrollment.completed"
    DEVICE_REVOKED = "device.revoked"
    CONSENT_GIVEN = "consent.given"
    """A consent created, or widened to more attributes; repeating a standing consent is not recorded."""
    CONSENT_WITHDRAWN = "consent.withdrawn"
    CLIENT_REGISTERED = "client.registered"
    CLIENT_REMOVED = "client.removed"
    LOGIN = "login"
    SIGNATURE = "signature"
    KEY_ROTATED = "key.rotated"


ALLOWED_DETAILS: Mapping[AuditEvent, frozenset[str]] = {
    AuditEvent.CERTIFICATE_ISSUED: frozenset({"profile"}),
    AuditEvent.CERTIFICATE_REVOKED: frozenset({"reason"}),
    AuditEvent.CERTIFICATE_RESUMED: frozenset(),
    AuditEvent.ENROLLMENT_COMPLETED: frozenset({"new_person"}),
    AuditEvent.DEVICE_REVOKED: frozenset({"reason"}),
    AuditEvent.CONSENT_GIVEN: frozenset({"attributes"}),
    AuditEvent.CONSENT_WITHDRAWN: frozenset({"consents"}),
    AuditEvent.CLIENT_REGISTERED: frozenset({"auth_method", "scopes"}),
    AuditEvent.CLIENT_REMOVED: frozenset(),
    AuditEvent.LOGIN: frozenset({"grant", "acr"}),
    AuditEvent.SIGNATURE: frozenset({"grant", "request", "documents"}),
    AuditEvent.KEY_ROTATED: frozenset({"kid", "purpose"}),
}
"""The detail keys each event may carry; any other key is refused."""

_ID = r"[A-Za-z0-9._~-]{1,64}"
_ACTOR = re.compile(rf"(?:operator|portal|(?:phone|client|person):{_ID})")
_SUBJECT = re.compile(rf"(?:(?:person|device|client|grant|consent|key):{_ID}|certificate:{_ID}/[0-9]{{1,49}})")
_DETAIL_TEXT = re.compile(r"[A-Za-z0-9._:/@+~-]{0,128}")
_MAX_LIST = 32


class InvalidAuditRecord(ValueError):
    """An append was refused: an unknown event, a malformed actor or subject, a detail not allowed.

    The message never repeats a refused value: it may be the very personal data being kept out.
    """


def certificate_subject(authority: str, serial_number: int | str) -> str:
    """The subject id of a certificate a portal CA issued: ``certificate:<ca name>/<serial in decimal>``.

    An internal reference, as ``pki_certificates`` keys it; the serial never leaves the portal.
    """
    return f"certificate:{authority}/{serial_number}"


def check_actor(actor: str) -> str:
    """Return ``actor`` if it is ``operator``, ``portal`` or ``phone|client|person:<id>``; else raise."""
    if not isinstance(actor, str) or _ACTOR.fullmatch(actor) is None:
        raise InvalidAuditRecord("the actor is not operator, portal or phone|client|person:<id>")
    return actor


def check_subject(subject: str | Sequence[str]) -> list[str]:
    """The subject ids as a list; each must be ``<kind>:<internal id>``. Raise for anything else."""
    ids = [subject] if isinstance(subject, str) else list(subject)
    if not ids:
        raise InvalidAuditRecord("an audit record names at least one subject")
    for item in ids:
        if not isinstance(item, str) or _SUBJECT.fullmatch(item) is None:
            raise InvalidAuditRecord("a subject is not an internal id (person:, device:, client:, ...)")
    return ids


def check_details(event: AuditEvent, details: Mapping[str, Any] | None) -> dict[str, Any]:
    """The details as a plain dict, if every key is allowed for ``event`` and every value is plain.

    Values: None, a boolean, an integer, a short ASCII token, or a list of up to 32 such tokens.
    Floats are refused: their JSON spelling is not canonical.
    """
    checked = dict(details or {})
    unknown = sorted(set(checked) - ALLOWED_DETAILS[event])
    if unknown:
        raise InvalidAuditRecord(f"{event.value} records no detail {', '.join(unknown)}")
    for key, value in checked.items():
        if isinstance(value, list | tuple):
            if len(value) > _MAX_LIST or not all(_plain_text(item) for item in value):
                raise InvalidAuditRecord(f"detail {key} must be a list of up to {_MAX_LIST} short ASCII tokens")
            checked[key] = list(value)
        elif not (value is None or isinstance(value, bool | int) or _plain_text(value)):
            raise InvalidAuditRecord(f"detail {key} must be a boolean, an integer or a short ASCII token")
    return checked


def _plain_text(value: object) -> bool:
    return isinstance(value, str) and _DETAIL_TEXT.fullmatch(value) is not None
