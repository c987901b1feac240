"""What ``idp verify`` does: read the files, pick the trust roots and keys, run one verification.

Verification is offline: with ``--root`` (and ``--jwks`` for an assertion) it needs nothing of
the portal, as a court or an RP years later would; without them it reads the instance's portal
root and public keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from idp.settings import Settings
from idp.signing.assertion import verify_assertion
from idp.signing.errors import Reason
from idp.signing.verification import Verification, invalid, verify_cades, verify_pades

__all__ = ["run_verify"]

SHA256_HEX = 64


def run_verify(
    *,
    settings: Settings,
    signature_file: Path | None,
    pdf_file: Path | None,
    assertion_file: Path | None,
    document_file: Path | None,
    digest: str | None,
    root_files: Sequence[Path],
    jwks_file: Path | None,
) -> Verification:
    """The verdict on the one thing given; click.UsageError for a command that says no one thing."""
    given = [name for name, path in (("--signature", signature_file), ("--pdf", pdf_file),
                                     ("--assertion", assertion_file)) if path is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --signature, --pdf, --assertion")
    limit = settings.signing.max_document_bytes
    document = _read(document_file, limit) if document_file is not None else None
    if assertion_file is not None:
        token = _read(assertion_file, limit).decode("ascii", errors="replace").strip()
        return verify_assertion(token, jwks=_jwks(settings, jwks_file), issuer=settings.issuer, document=document)
    roots = _roots(settings, root_files)
    if pdf_file is not None:
        return verify_pades(_read(pdf_file, limit), trust_roots=roots)
    assert signature_file is not None  # noqa: S101 - one of the three, checked above
    if (document is None) == (digest is None):
        raise click.UsageError("a detached signature needs --document or --digest")
    signature = _read(signature_file, limit)
    if digest is not None:
        cleaned = digest.strip().lower()
        if len(cleaned) != SHA256_HEX or any(char not in "0123456789abcdef" for char in cleaned):
            return invalid(Reason.MALFORMED, "--digest is the SHA-256 as 64 hex digits")
        return verify_cades(signature=signature, document_digest=bytes.fromhex(cleaned), trust_roots=roots)
    return verify_cades(signature=signature, document=document, trust_roots=roots)


def _read(path: Path, limit: int) -> bytes:
    if path.stat().st_size > limit:
        raise click.ClickException(f"{path} is larger than {limit} bytes (signing.max_document_bytes)")
    return path.read_bytes()


def _roots(settings: Settings, root_files: Sequence[Path]) -> list[x509.Certificate]:
    files = list(root_files) or [settings.instance / "pki" / "portal-root.crt.pem"]
    roots: list[x509.Certificate] = []
    for path in files:
        try:
            roots.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"cannot read a PEM trust root from {path}: {exc}") from exc
    return roots


def _jwks(settings: Settings, jwks_file: Path | None) -> dict[str, Any]:
    if jwks_file is not None:
        try:
            jwks: dict[str, Any] = json.loads(jwks_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"cannot read the JWK Set {jwks_file}: {exc}") from exc
        return jwks
    from idp.oidc.keys import KeyStore, SigningKeysMissing  # noqa: PLC0415

    try:
        return KeyStore(settings.instance).verification_jwks()  # retired keys too: assertions do not expire
    except SigningKeysMissing as exc:
        raise click.ClickException(f"{exc}; or pass the portal's --jwks") from exc
