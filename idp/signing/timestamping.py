"""The portal's timestamping unit (RFC 3161): a TimeStampReq in, a TimeStampResp out.

The unit signs with its own key, reserved for timestamps (RFC 3161 §2.3), whose certificate the
portal root issued with the critical extended key usage id-kp-timeStamping. Every token names
the configured TSA policy, echoes the request's nonce (§2.4.2) and carries the unit's
certificate when the request asks for it. The token is a CMS SignedData over the TSTInfo,
signed with ESS signing-certificate-v2 (RFC 5816) by pyHanko's CMS signer; no ASN.1 is written
by hand here. ``InProcessTimeStamper`` lets the portal's own signatures use the unit without an
HTTP round trip, through pyHanko's ``TimeStamper`` interface.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime

from asn1crypto import cms, core, keys, parser, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes, SimpleSigner
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko_certvalidator.registry import SimpleCertificateStore

from idp.pki.profiles import Issuer

__all__ = [
    "DIGEST_SIZES",
    "InProcessTimeStamper",
    "TimestampAuthority",
]

DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
"""The message-imprint hashes the unit accepts, with their digest sizes; SHA-1 and MD5 are refused."""
_TOKEN_ATTEMPTS = 8
_LONG_FORM = 0x80
_CONSTRUCTED = 1
_UNIVERSAL_OCTET_STRING = (0, 4)
SERIAL_BYTES = 16
"""A token's serial is 128 random bits: unique without a counter shared by every worker (§2.4.2
allows "integers up to 160 bits")."""


class _TimeStampResp(core.Sequence):  # type: ignore[misc]
    """RFC 3161 §2.4.2 TimeStampResp, whose timeStampToken is OPTIONAL (absent on rejection);
    asn1crypto's ``tsp.TimeStampResp`` declares it mandatory."""

    _fields = [  # noqa: RUF012 - asn1crypto's schema declaration
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


class _Refused(Exception):
    """A request the unit answers with status rejection and this failure info (§2.4.2)."""

    def __init__(self, failure: str, text: str) -> None:
        super().__init__(text)
        self.failure = failure
        self.text = text


class TimestampAuthority:
    """The timestamping unit: its key and certificate, and the policy every token names."""

    def __init__(self, *, unit: Issuer, policy: str) -> None:
        self._unit = unit
        self.policy = policy
        self._certificate = asn1_x509.Certificate.load(unit.certificate.public_bytes(serialization.Encoding.DER))
        self._key = keys.PrivateKeyInfo.load(unit.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
        ))

    def __repr__(self) -> str:
        return f"TimestampAuthority({self._unit.certificate.subject.rfc4514_string()!r}, policy={self.policy})"

    @property
    def certificate(self) -> x509.Certificate:
        """The unit's certificate (issued by the portal root)."""
        return self._unit.certificate

    def respond(self, query_der: bytes, *, now: datetime) -> bytes:
        """Answer a DER TimeStampReq with a DER TimeStampResp (RFC 3161 §2.4).

        A request that cannot be read is badRequest, an unsupported hash badAlg, a digest of the
        wrong length badDataFormat, another policy unacceptedPolicy, any extension
        unacceptedExtension: status rejection, no token (§2.4.2).
        """
        try:
            request = _parse(query_der)
        except _Refused as refused:
            rejection: bytes = _rejection(refused).dump()
            return rejection
        response: bytes = asyncio.run(self.async_answer(request, now=now)).dump()
        return response

    async def async_answer(self, request: tsp.TimeStampReq, *, now: datetime) -> tsp.TimeStampResp:
        """The TimeStampResp for a parsed request (see ``respond``)."""
        try:
            _check(request, policy=self.policy)
        except _Refused as refused:
            return _rejection(refused)
        token = await self._token(request, now=now)
        return tsp.TimeStampResp({"status": tsp.PKIStatusInfo({"status": "granted"}), "time_stamp_token": token})

    async def _token(self, request: tsp.TimeStampReq, *, now: datetime) -> cms.ContentInfo:
        generated = now.replace(microsecond=0)  # §2.4.2: no trailing fraction; one second is our accuracy
        info: dict[str, object] = {
            "version": "v1",
            "policy": self.policy,
            "message_imprint": request["message_imprint"],
            "serial_number": int.from_bytes(secrets.token_bytes(SERIAL_BYTES), "big"),
            "gen_time": generated,
            "accuracy": tsp.Accuracy({"seconds": 1}),
            "tsa": asn1_x509.GeneralName(name="directory_name", value=self._certificate.subject),
        }
        if request["nonce"].native is not None:
            # §2.4.2: "The nonce field MUST be present if it was present in the TimeStampReq."
            info["nonce"] = request["nonce"]
        tst_info = tsp.TSTInfo(info)
        signer = SimpleSigner(
            signing_cert=self._certificate, signing_key=self._key,
            cert_registry=SimpleCertificateStore(),  # type: ignore[no-untyped-call]
        )
        token = await signer.async_sign_general_data(
            cms.EncapsulatedContentInfo({
                "content_type": "tst_info", "content": cms.ParsableOctetString(tst_info.dump()),
            }),
            "sha256",
            detached=False,
            use_cades=True,
            signed_attr_settings=PdfCMSSignedAttributes(signing_time=generated),
        )
        if not request["cert_req"].native:
            # §2.4.1: without certReq "the certificates field from the SignedData structure MUST
            # not be present in the response".
            del token["content"]["certificates"]
        return token


class InProcessTimeStamper(TimeStamper):
    """pyHanko's ``TimeStamper`` answered by the portal's own unit, at a fixed time."""

    def __init__(self, authority: TimestampAuthority, *, now: datetime) -> None:
        super().__init__(include_nonce=True)  # type: ignore[no-untyped-call]
        self._authority = authority
        self._now = now

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        """The unit's answer to ``req``."""
        return await self._authority.async_answer(req, now=self._now)

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        """A token for the portal's own signature, one asn1crypto encodes in linear time.

        asn1crypto 1.5.1 takes a definite length whose last byte is 0x80 (128, 384, 640...) for
        an indefinite one and then re-encodes everything below it, exponentially in its depth
        (wbond/asn1crypto#249): a signature whose token, or the SET OF holding it, had such a
        length cost some 600 ms of CPU instead of 20 (one in three, as tokens of the same unit
        differ only by a few bytes). Another token (a new serial and signature, so another
        length) avoids it; every token is as valid as the next, and none is recorded.
        """
        token: cms.ContentInfo | None = None
        for _attempt in range(_TOKEN_ATTEMPTS):
            token = await super().async_timestamp(message_digest, md_algorithm)
            if not lengths_end_in_0x80(token.dump()):
                break
        assert token is not None  # noqa: S101 - _TOKEN_ATTEMPTS is positive
        return token


def lengths_end_in_0x80(der: bytes) -> bool:
    """Whether ``der``, as the one value of a SET OF, or any element in it (and in OCTET STRINGs
    holding DER) has a long-form length whose last byte is 0x80 (see ``async_timestamp``)."""
    return _long_length_ending_in_0x80(len(der)) or _elements_end_in_0x80(der)


def _long_length_ending_in_0x80(length: int) -> bool:
    return length >= _LONG_FORM and length % 256 == _LONG_FORM


def _elements_end_in_0x80(data: bytes) -> bool:
    offset = 0
    while offset < len(data):
        try:
            class_, method, tag, header, content, trailer = parser.parse(data[offset:])
        except ValueError:
            return False  # not DER (an OCTET STRING of other bytes): nothing asn1crypto will parse
        if header[-1:] == b"\x80" or (
            (method == _CONSTRUCTED or (class_, tag) == _UNIVERSAL_OCTET_STRING) and _elements_end_in_0x80(content)
        ):
            return True
        offset += len(header) + len(content) + len(trailer)
    return False


def _parse(query_der: bytes) -> tsp.TimeStampReq:
    try:
        request = tsp.TimeStampReq.load(query_der, strict=True)
        _ = request.native  # asn1crypto parses lazily: read it all now
    except (ValueError, TypeError, KeyError) as exc:
        raise _Refused("bad_request", "the request is not a DER TimeStampReq") from exc
    return request


def _check(request: tsp.TimeStampReq, *, policy: str) -> None:
    """The checks of RFC 3161 §2.4.1, in its order."""
    if request["version"].native != "v1":
        raise _Refused("bad_request", "only version 1 requests are understood")
    imprint = request["message_imprint"]
    algorithm = imprint["hash_algorithm"]["algorithm"].native
    if algorithm not in DIGEST_SIZES:
        raise _Refused("bad_alg", "the hash algorithm is not one of SHA-256, SHA-384, SHA-512")
    parameters = imprint["hash_algorithm"]["parameters"]
    if parameters.native is not None:
        raise _Refused("bad_alg", "the hash algorithm takes no parameters")
    if len(imprint["hashed_message"].native) != DIGEST_SIZES[algorithm]:
        raise _Refused("bad_data_format", "the hashed message is not the size of its hash")
    requested = request["req_policy"].native
    if requested is not None and requested != policy:
        raise _Refused("unaccepted_policy", f"this unit only timestamps under policy {policy}")
    if request["extensions"].native:
        raise _Refused("unaccepted_extensions", "this unit accepts no request extension")


def _rejection(refused: _Refused) -> tsp.TimeStampResp:
    return _TimeStampResp({
        "status": tsp.PKIStatusInfo({
            "status": "rejection",
            "status_string": [refused.text],
            "fail_info": tsp.PKIFailureInfo({refused.failure}),
        }),
    })

