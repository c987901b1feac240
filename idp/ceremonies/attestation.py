"""The SE's attestation of a new key: WebAuthn L3 §7.1 registration with the ``packed`` format (§8.2).

``verify_attestation`` checks one RegistrationResponseJSON in the spec's order and is stricter
than py_webauthn, which it uses for the statement's signature and chain: it refuses every format
but ``packed``, self attestation (``packed`` without ``x5c``), an empty list of roots, a key
that may be backed up, and an attestation certificate that breaks §8.2.1.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from webauthn import verify_registration_response
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    parse_attestation_object,
    parse_client_data_json,
    validate_certificate_chain,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import InvalidCertificateChain, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AttestationFormat,
    AttestationObject,
    AuthenticatorData,
    ClientDataType,
    CollectedClientData,
    RegistrationCredential,
)

from idp.ceremonies.enrollment_errors import EnrollmentRejected, Reason
from idp.pki.oids import FIDO_AAGUID

__all__ = ["ATTESTATION_OU", "ES256", "VerifiedCredential", "verify_attestation"]

ATTESTATION_OU = "Authenticator Attestation"
ES256 = COSEAlgorithmIdentifier.ECDSA_SHA_256


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedCredential:
    """An SE key whose attestation passed every check."""

    credential_id: bytes
    public_key: ec.EllipticCurvePublicKey
    cose_public_key: bytes
    sign_count: int
    aaguid: UUID


def verify_attestation(
    credential: RegistrationCredential,
    *,
    challenge: bytes,
    rp_id: str,
    origin: str,
    roots: tuple[x509.Certificate, ...],
    subject: str,
) -> VerifiedCredential:
    """Check one SE key's registration (WebAuthn L3 §7.1 steps 5-24, §8.2 ``packed``).

    ``subject`` names the key in the rejection. Raises EnrollmentRejected. py_webauthn judges
    the attestation chain's validity period by the system clock.
    """
    # Untrusted until this function returns: every byte below came from the phone.
    try:
        client_data = parse_client_data_json(bytes(credential.response.client_data_json))
        attestation = parse_attestation_object(bytes(credential.response.attestation_object))
    except Exception as exc:  # py_webauthn lets any JSON, CBOR or struct error through
        raise EnrollmentRejected(Reason.MALFORMED_ATTESTATION, subject, type(exc).__name__) from exc
    _check_client_data(client_data, challenge=challenge, origin=origin, subject=subject)
    _check_authenticator_data(attestation.auth_data, rp_id=rp_id, subject=subject)
    attested = attestation.auth_data.attested_credential_data
    if attested is None:
        raise EnrollmentRejected(Reason.MALFORMED_ATTESTATION, subject, "no attested credential data")
    public_key = _credential_public_key(attested.credential_public_key, subject)
    _check_statement(attestation, roots=roots, subject=subject)
    pem_roots = [root.public_bytes(serialization.Encoding.PEM) for root in roots]
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origin,
            require_user_verification=True,
            supported_pub_key_algs=[ES256],
            pem_root_certs_bytes_by_fmt={AttestationFormat.PACKED: pem_roots},
        )
    except InvalidRegistrationResponse as exc:
        raise EnrollmentRejected(Reason.ATTESTATION_INVALID, subject, str(exc)) from exc
    return VerifiedCredential(
        credential_id=verified.credential_id,
        public_key=public_key,
        cose_public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=UUID(bytes=attested.aaguid),
    )


def _check_client_data(client_data: CollectedClientData, *, challenge: bytes, origin: str, subject: str) -> None:
    """§7.1 steps 7-9."""
    # Step 7: "Verify that the value of C.type is webauthn.create."
    if client_data.type != ClientDataType.WEBAUTHN_CREATE:
        raise EnrollmentRejected(Reason.WRONG_CEREMONY, subject)
    # Step 8: "Verify that the value of C.challenge equals the base64url encoding of options.challenge."
    if not secrets.compare_digest(client_data.challenge, challenge):
        raise EnrollmentRejected(Reason.CHALLENGE_MISMATCH, subject)
    # Step 9: "Verify that the value of C.origin is an origin expected by the Relying Party."
    if client_data.origin != origin:
        raise EnrollmentRejected(Reason.ORIGIN_MISMATCH, subject, client_data.origin)


def _check_authenticator_data(auth_data: AuthenticatorData, *, rp_id: str, subject: str) -> None:
    """§7.1 steps 13-17."""
    # Step 13: "Verify that the rpIdHash in authData is the SHA-256 hash of the RP ID expected by the RP."
    if not secrets.compare_digest(auth_data.rp_id_hash, hashlib.sha256(rp_id.encode()).digest()):
        raise EnrollmentRejected(Reason.RP_ID_MISMATCH, subject)
    # Step 14: "Verify that the UP bit of the flags in authData is set."
    if not auth_data.flags.up:
        raise EnrollmentRejected(Reason.USER_NOT_PRESENT, subject)
    # Step 15: "If user verification was determined to be required, verify that the UV bit ... is set."
    if not auth_data.flags.uv:
        raise EnrollmentRejected(Reason.USER_NOT_VERIFIED, subject)
    # Step 17 leaves backup eligibility to the RP's policy. Ours: the key never leaves the SE.
    if auth_data.flags.be:
        raise EnrollmentRejected(Reason.BACKUP_ELIGIBLE, subject)


def _check_statement(attestation: AttestationObject, *, roots: tuple[x509.Certificate, ...], subject: str) -> None:
    """§7.1 steps 21-23 and §8.2, before py_webauthn verifies the signature."""
    # py_webauthn verifies "none" and self attestation: we accept neither (style.md §8).
    if attestation.fmt != AttestationFormat.PACKED:
        raise EnrollmentRejected(Reason.ATTESTATION_FORMAT_REFUSED, subject, str(attestation.fmt))
    if not attestation.att_stmt.x5c:
        raise EnrollmentRejected(Reason.SELF_ATTESTATION_REFUSED, subject)
    _check_attestation_certificate(attestation, subject)
    # Step 23; py_webauthn passes any chain when it is given no roots.
    if not roots:
        raise EnrollmentRejected(Reason.ATTESTATION_UNTRUSTED, subject, "no attestation root is configured")
    try:
        validate_certificate_chain(
            x5c=attestation.att_stmt.x5c,
            pem_root_certs_bytes=[root.public_bytes(serialization.Encoding.PEM) for root in roots],
        )
    except InvalidCertificateChain as exc:
        raise EnrollmentRejected(Reason.ATTESTATION_UNTRUSTED, subject, str(exc)) from exc


def _credential_public_key(cose_key: bytes, subject: str) -> ec.EllipticCurvePublicKey:
    """The credential's key; step 19: "Verify that the alg parameter ... matches" options (ES256 only)."""
    try:
        decoded = decode_credential_public_key(cose_key)
        key = decoded_public_key_to_cryptography(decoded)
    except Exception as exc:  # py_webauthn lets any CBOR or struct error through
        raise EnrollmentRejected(Reason.MALFORMED_ATTESTATION, subject, "unreadable credential public key") from exc
    if decoded.alg != ES256 or not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise EnrollmentRejected(Reason.UNSUPPORTED_ALGORITHM, subject)
    return key


def _check_attestation_certificate(attestation: AttestationObject, subject: str) -> None:
    """WebAuthn L3 §8.2.1, the packed attestation certificate requirements."""
    x5c = attestation.att_stmt.x5c or []
    try:
        certificate = x509.load_der_x509_certificate(x5c[0])
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise EnrollmentRejected(Reason.ATTESTATION_CERTIFICATE_PROFILE, subject, str(exc)) from exc
    units = [unit.value for unit in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    # §8.2.1: "Version MUST be set to 3".
    if certificate.version is not x509.Version.v3:
        raise EnrollmentRejected(Reason.ATTESTATION_CERTIFICATE_PROFILE, subject, "not X.509 v3")
    # §8.2.1: the subject's OU MUST be the literal string "Authenticator Attestation".
    if units != [ATTESTATION_OU]:
        raise EnrollmentRejected(Reason.ATTESTATION_CERTIFICATE_PROFILE, subject, "subject OU")
    # "The Basic Constraints extension MUST have the CA component set to false."
    if constraints.ca:
        raise EnrollmentRejected(Reason.ATTESTATION_CERTIFICATE_IS_CA, subject)
    # "If attestnCert contains an extension with OID 1.3.6.1.4.1.45724.1.1.4 (id-fido-gen-ce-aaguid)
    # verify that the value of this extension matches the aaguid in authenticatorData."
    # We require the extension: every SE model we trust names itself.
    attested = attestation.auth_data.attested_credential_data
    if attested is None or _certificate_aaguid(certificate) != attested.aaguid:
        raise EnrollmentRejected(Reason.AAGUID_MISMATCH, subject)


def _certificate_aaguid(certificate: x509.Certificate) -> bytes | None:
    """The AAGUID in the FIDO extension (an OCTET STRING of 16 bytes, not critical), or None."""
    try:
        extension = certificate.extensions.get_extension_for_oid(FIDO_AAGUID)
    except x509.ExtensionNotFound:
        return None
    value = extension.value
    if extension.critical or not isinstance(value, x509.UnrecognizedExtension):
        return None
    der = value.value
    # "this extension MUST NOT be marked as critical"; the value is OCTET STRING (tag 4, length 16).
    if len(der) != 18 or der[:2] != b"\x04\x10":  # noqa: PLR2004 - the DER of a 16-byte OCTET STRING
        return None
    return der[2:]
