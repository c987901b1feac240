"""The simulated J-LIS's certificate registry: one JSON file per issuing CA.

Implements ``idp.pki.registry.CertificateRegistry``. Every call reads the file afresh, so a
``jlis serve`` process sees a revocation the CLI just wrote; every change is a read-modify-write
under an advisory lock, written atomically (temporary file + ``os.replace``), so a crash leaves
the previous registry or the new one, never half a file.
"""

from __future__ import annotations

import binascii
import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from idp.pki.registry import (
    AlreadyRevoked,
    CertificateRef,
    CertificateState,
    CertificateStatus,
    RegistryError,
    UnknownCertificate,
)
from smartphone.files import CorruptState, locked, write_atomically

__all__ = ["JsonFileRegistry"]

_FORMAT = 1


class JsonFileRegistry:
    """A CertificateRegistry kept in one JSON file, created empty on first write."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"JsonFileRegistry({str(self.path)!r})"

    def record(
        self,
        certificate: x509.Certificate,
        *,
        profile: str,
        issued_from: Sequence[CertificateRef] = (),
    ) -> None:
        """Remember a newly issued certificate as good. Raises RegistryError for a reused serial."""
        with self._changing() as data:
            key = str(certificate.serial_number)
            if key in data["certificates"]:
                raise RegistryError(f"serial {certificate.serial_number:x} was already issued")
            data["certificates"][key] = _to_json(CertificateStatus(
                serial_number=certificate.serial_number,
                profile=profile,
                not_after=certificate.not_valid_after_utc,
                issued_from=tuple(issued_from),
            ))

    def status(self, serial_number: int) -> CertificateStatus | None:
        """The certificate's record, or None when this authority never issued it."""
        entry = self._read()["certificates"].get(str(serial_number))
        return None if entry is None else _from_json(serial_number, entry)

    def revoke(self, serial_number: int, *, reason: x509.ReasonFlags, at: datetime) -> CertificateStatus:
        """Mark revoked, or on hold for certificateHold.

        Raises UnknownCertificate, or AlreadyRevoked when the certificate is revoked for good, or
        already on hold and asked to be held again (a held one may be revoked for good).
        """
        with self._changing() as data:
            current = self._existing(data, serial_number)
            if current.state is CertificateState.REVOKED:
                raise AlreadyRevoked(f"certificate {serial_number:x} is already revoked")
            hold = reason is x509.ReasonFlags.certificate_hold
            if hold and current.state is CertificateState.ON_HOLD:
                raise AlreadyRevoked(f"certificate {serial_number:x} is already on hold")
            updated = dataclasses.replace(
                current,
                state=CertificateState.ON_HOLD if hold else CertificateState.REVOKED,
                reason=reason,
                revoked_at=at,
            )
            data["certificates"][str(serial_number)] = _to_json(updated)
        return updated

    def resume(self, serial_number: int) -> CertificateStatus:
        """Take a held certificate off hold. Raises UnknownCertificate, or AlreadyRevoked."""
        with self._changing() as data:
            current = self._existing(data, serial_number)
            if current.state is not CertificateState.ON_HOLD:
                raise AlreadyRevoked(f"certificate {serial_number:x} is not on hold")
            updated = dataclasses.replace(current, state=CertificateState.GOOD, reason=None, revoked_at=None)
            data["certificates"][str(serial_number)] = _to_json(updated)
        return updated

    def listed(self) -> list[CertificateStatus]:
        """Every revoked or held certificate, in serial order: the CRL's entries.

        The protocol passes no time, so expired certificates stay listed (RFC 5280 §3.3 allows
        keeping them; a simulated J-LIS has no reason to drop them).
        """
        entries = self._read()["certificates"]
        statuses = [_from_json(int(key), entry) for key, entry in entries.items()]
        return sorted(
            (status for status in statuses if status.state is not CertificateState.GOOD),
            key=lambda status: status.serial_number,
        )

    def next_crl_number(self) -> int:
        """One more than the last CRL number handed out (RFC 5280 §5.2.3), starting at 1."""
        with self._changing() as data:
            data["crl_number"] += 1
            number: int = data["crl_number"]
        return number

    def _existing(self, data: dict[str, Any], serial_number: int) -> CertificateStatus:
        entry = data["certificates"].get(str(serial_number))
        if entry is None:
            raise UnknownCertificate(f"certificate {serial_number:x} was not issued by this authority")
        return _from_json(serial_number, entry)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return {"format": _FORMAT, "crl_number": 0, "certificates": {}}
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CorruptState(f"{self.path} is not a registry") from exc
        if not isinstance(data, dict) or not _has_registry_shape(data):
            raise CorruptState(f"{self.path} is not a registry")
        return data

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        """Lock, read, let the block change the data, and write it only if the block succeeded."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path):
            data = self._read()
            yield data
            # Serialised before the temporary file is opened: a failure here writes nothing.
            payload = json.dumps(data, indent=2, sort_keys=True).encode("utf-8")
            write_atomically(self.path, payload)


def _has_registry_shape(data: dict[str, Any]) -> bool:
    return (
        data.get("format") == _FORMAT
        and isinstance(data.get("crl_number"), int)
        and isinstance(data.get("certificates"), dict)
    )


def _to_json(status: CertificateStatus) -> dict[str, Any]:
    return {
        "profile": status.profile,
        "not_after": status.not_after.isoformat(),
        "state": status.state.value,
        "reason": None if status.reason is None else status.reason.value,
        "revoked_at": None if status.revoked_at is None else status.revoked_at.isoformat(),
        "issued_from": [
            {"issuer_key_id": ref.issuer_key_id.hex(), "serial_number": ref.serial_number}
            for ref in status.issued_from
        ],
    }


def _from_json(serial_number: int, entry: Any) -> CertificateStatus:
    try:
        return CertificateStatus(
            serial_number=serial_number,
            profile=entry["profile"],
            not_after=datetime.fromisoformat(entry["not_after"]),
            state=CertificateState(entry["state"]),
            reason=None if entry["reason"] is None else x509.ReasonFlags(entry["reason"]),
            revoked_at=None if entry["revoked_at"] is None else datetime.fromisoformat(entry["revoked_at"]),
            issued_from=tuple(
                CertificateRef(issuer_key_id=bytes.fromhex(ref["issuer_key_id"]), serial_number=ref["serial_number"])
                for ref in entry["issued_from"]
            ),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise CorruptState(f"the registry entry for serial {serial_number:x} is malformed") from exc
