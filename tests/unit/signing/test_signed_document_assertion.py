"""The signed-document assertion: a JWS an RP verifies with the portal's published JWK Set."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.signing import ASSERTION_TYPE, Reason, SignedDocument

DOCUMENT = b"Lease agreement, signed on the phone.\n" * 10
DIGEST = hashlib.sha256(DOCUMENT).digest()
CLIENT = "shopclient"
SUBJECT = "pairwise-subject-of-taro"


@pytest.fixture(scope="module")
def signed(world, phone):
    service = world.service
    pending = service.prepare_cades(document_digest=DIGEST, certificate=phone.sign_certificate)
    signature = service.finish_cades(pending, phone.sign(pending.to_be_signed))
    verification = service.verify_cades(signature=signature, document_digest=DIGEST)
    assert verification.valid
    return SignedDocument(label="lease.txt", digest=DIGEST, signature_format="cades", verification=verification)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_assertion_verifies_with_a_jose_library_against_the_published_jwks(service, phone, signed):
    token = service.make_assertion(client_id=CLIENT, subject=SUBJECT, documents=[signed])
    decoded = jwt.decode(token, KeySet.import_key_set(service.jwks()), algorithms=["ES256"])
    assert decoded.header["typ"] == ASSERTION_TYPE
    claims = decoded.claims
    assert (claims["iss"], claims["aud"], claims["sub"]) == ("http://127.0.0.1:8000", CLIENT, SUBJECT)
    assert claims["documents"] == [{
        "label": "lease.txt", "digest_alg": "sha256", "digest": _b64url(DIGEST), "signature_format": "cades",
        "signing_time": claims["signing_time"],
    }]
    leaf = base64.b64decode(claims["signer"]["x5c"][0])
    assert leaf == phone.sign_certificate.public_bytes(serialization.Encoding.DER)
    assert len(claims["signer"]["x5c"]) == 3
    assert claims["signer"]["status"]["state"] == "good"
    assert claims["signer"]["status"]["ocsp"]
    assert "verified_claims" not in claims


def test_attributes_appear_only_as_consented(service, signed):
    token = service.make_assertion(client_id=CLIENT, subject=SUBJECT, documents=[signed], release=["name"])
    claims = jwt.decode(token, KeySet.import_key_set(service.jwks())).claims
    assert claims["verified_claims"]["claims"] == {"name": "山田　太郎"}
    assert claims["verified_claims"]["verification"]["trust_framework"] == "jp_jpki"


def test_portal_verifies_its_assertion_and_the_document_it_names(service, signed):
    token = service.make_assertion(client_id=CLIENT, subject=SUBJECT, documents=[signed])
    result = service.verify_assertion(token, document=DOCUMENT)
    assert result.valid
    assert result.claims["aud"] == CLIENT


def test_other_document_is_a_digest_mismatch(service, signed):
    token = service.make_assertion(client_id=CLIENT, subject=SUBJECT, documents=[signed])
    result = service.verify_assertion(token, document=DOCUMENT + b"tampered")
    assert (result.valid, result.reason) == (False, Reason.DIGEST_MISMATCH)


def test_tampered_assertion_is_refused(service, signed):
    token = service.make_assertion(client_id=CLIENT, subject=SUBJECT, documents=[signed])
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = ".".join([header, _b64url(json.dumps(claims).encode()), signature])
    result = service.verify_assertion(forged)
    assert (result.valid, result.reason) == (False, Reason.BAD_ASSERTION)


def test_other_jwt_of_the_portal_is_not_an_assertion(world, service):
    from idp.oidc.keys import KeyStore  # noqa: PLC0415

    key = KeyStore(world.settings.instance).signing_key("ES256")
    id_token = jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "JWT"},
                          {"iss": "http://127.0.0.1:8000", "documents": [], "signing_time": 0}, key.key)
    result = service.verify_assertion(id_token)
    assert (result.valid, result.reason) == (False, Reason.BAD_ASSERTION)


@pytest.mark.parametrize("token", ["", "a.b.c", "not a jwt"], ids=["empty", "junk", "text"])
def test_malformed_assertion_is_refused(service, token):
    assert service.verify_assertion(token).reason is Reason.BAD_ASSERTION


def test_assertion_about_an_unverified_signature_is_not_made(service, signed):
    from dataclasses import replace  # noqa: PLC0415

    from idp.signing.verification import invalid  # noqa: PLC0415

    failed = replace(signed, verification=invalid(Reason.BAD_SIGNATURE, "test"))
    with pytest.raises(ValueError, match="verified"):
        service.make_assertion(client_id=CLIENT, subject=SUBJECT, documents=[failed])
