"""The portal's RFC 3161 timestamping unit: granted tokens OpenSSL accepts, and each refusal's failure info."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess

import pytest
from asn1crypto import algos, core, tsp
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyhanko.sign.timestamps.api import TimeStamper

from idp.signing import timestamping
from idp.signing.timestamping import InProcessTimeStamper, lengths_end_in_0x80

POLICY = "2.25.75866854229242772120746479556451608109.3.1"


def _query(*, algorithm="sha256", digest=None, nonce=12345, policy=None, cert_req=True, extensions=None) -> bytes:
    fields = {
        "version": "v1",
        "message_imprint": tsp.MessageImprint({
            "hash_algorithm": algos.DigestAlgorithm({"algorithm": algorithm}),
            "hashed_message": digest if digest is not None else hashlib.new(algorithm, b"document").digest(),
        }),
        "cert_req": cert_req,
    }
    if nonce is not None:
        fields["nonce"] = nonce
    if policy is not None:
        fields["req_policy"] = policy
    if extensions is not None:
        fields["extensions"] = extensions
    return tsp.TimeStampReq(fields).dump()


def _respond(world, query: bytes) -> tsp.TimeStampResp:
    return tsp.TimeStampResp.load(world.service.timestamps.respond(query, now=world.clock.now()))


def test_granted_token_echoes_nonce_and_names_the_policy(world):
    response = _respond(world, _query(nonce=987654321))
    assert response["status"]["status"].native == "granted"
    info = response["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
    assert info["nonce"].native == 987654321
    assert info["policy"].native == POLICY
    assert info["message_imprint"]["hashed_message"].native == hashlib.sha256(b"document").digest()
    assert info["gen_time"].native == world.clock.now()


def test_token_carries_the_unit_certificate_only_when_asked(world):
    with_certificate = _respond(world, _query(cert_req=True))["time_stamp_token"]["content"]
    without = _respond(world, _query(cert_req=False))["time_stamp_token"]["content"]
    assert len(with_certificate["certificates"]) == 1
    assert without["certificates"].native is None


def test_serial_numbers_differ(world):
    serials = {
        _respond(world, _query())["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed[
            "serial_number"].native
        for _ in range(5)
    }
    assert len(serials) == 5


def test_unit_certificate_has_the_critical_timestamping_usage_only(world):
    certificate = world.service.timestamps.certificate
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert usage.critical
    assert list(usage.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    certificate.verify_directly_issued_by(world.pki.root)


@pytest.mark.parametrize(("query", "failure"), [
    (b"", "bad_request"),
    (b"not DER", "bad_request"),
    (b"\x30\x03\x02\x01\x01", "bad_request"),
    (_query(algorithm="sha1"), "bad_alg"),
    (_query(algorithm="md5"), "bad_alg"),
    (_query(digest=b"\x00" * 31), "bad_data_format"),
    (_query(algorithm="sha512", digest=b"\x00" * 32), "bad_data_format"),
    (_query(policy="1.2.3.4"), "unaccepted_policy"),
], ids=["empty", "text", "truncated", "sha1", "md5", "short-digest", "sha512-size", "other-policy"])
def test_refused_query_gets_rejection_with_its_failure_info(world, query, failure):
    parsed = _status(world.service.timestamps.respond(query, now=world.clock.now()))
    assert parsed["status"].native == "rejection"
    assert parsed["fail_info"].native == {failure}


def test_query_with_an_extension_is_refused(world):
    extensions = tsp.Extensions([tsp.Extension({
        "extn_id": "1.2.3.4.5", "critical": False, "extn_value": b"\x05\x00",
    })])
    parsed = _status(world.service.timestamps.respond(_query(extensions=extensions), now=world.clock.now()))
    assert (parsed["status"].native, parsed["fail_info"].native) == ("rejection", {"unaccepted_extensions"})


def test_query_naming_the_unit_policy_is_granted(world):
    assert _respond(world, _query(policy=POLICY))["status"]["status"].native == "granted"


def _status(response: bytes) -> tsp.PKIStatusInfo:
    """The PKIStatusInfo of a TimeStampResp (a rejection has no token, which asn1crypto's class requires)."""
    from asn1crypto import core  # noqa: PLC0415

    return tsp.PKIStatusInfo.load(core.Sequence.load(response)[0].dump())


def test_openssl_accepts_the_reply(world, tmp_path):
    openssl = shutil.which("openssl")
    assert openssl is not None
    (tmp_path / "data.txt").write_bytes(b"a contract")
    subprocess.run(
        [openssl, "ts", "-query", "-data", str(tmp_path / "data.txt"), "-sha256", "-cert",
         "-out", str(tmp_path / "query.tsq")], check=True, capture_output=True,
    )
    reply = world.service.timestamps.respond((tmp_path / "query.tsq").read_bytes(), now=world.clock.now())
    (tmp_path / "reply.tsr").write_bytes(reply)
    root = world.settings.instance / "pki" / "portal-root.crt.pem"
    done = subprocess.run(
        [openssl, "ts", "-verify", "-queryfile", str(tmp_path / "query.tsq"), "-in", str(tmp_path / "reply.tsr"),
         "-CAfile", str(root), "-attime", str(int(world.clock.now().timestamp()) + 60)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Verification: OK" in done.stdout


@pytest.mark.parametrize(("der", "hits"), [
    (core.OctetString(b"x" * 127).dump(), False),  # short form
    (core.OctetString(b"x" * 128).dump(), True),   # 04 81 80: definite, ends in 0x80
    (core.OctetString(b"x" * 384).dump(), True),   # 04 82 01 80
    (core.OctetString(b"x" * 385).dump(), False),
    (core.SequenceOf(spec=core.OctetString, value=[b"x" * 128]).dump(), True),  # inside a constructed value
    (core.OctetString(core.OctetString(b"x" * 128).dump()).dump(), True),  # DER inside an OCTET STRING
    (b"x" * 128, True),  # 128 bytes in all: the SET OF holding it would be 31 81 80
])
def test_lengths_ending_in_0x80_are_found(der, hits):
    assert lengths_end_in_0x80(der) is hits


def test_the_portal_takes_another_token_when_asn1crypto_would_re_encode_it_exponentially(world, monkeypatch):
    """wbond/asn1crypto#249: one token in three of the unit had such a length; each cost 600 ms of CPU."""
    made = []
    real = TimeStamper.async_timestamp

    async def counted(self, digest, algorithm):
        token = await real(self, digest, algorithm)
        made.append(token.dump())
        return token

    monkeypatch.setattr(TimeStamper, "async_timestamp", counted)
    checked = []
    monkeypatch.setattr(timestamping, "lengths_end_in_0x80", lambda der: checked.append(der) or len(checked) == 1)
    stamper = InProcessTimeStamper(world.service.timestamps, now=world.clock.now())
    token = asyncio.run(stamper.async_timestamp(hashlib.sha256(b"contract").digest(), "sha256"))
    assert len(made) == 2  # the first one's length would have tripped asn1crypto
    assert made[0] != made[1]
    assert token.dump() == made[1]


def test_the_portals_own_tokens_never_trip_asn1crypto(world):
    stamper = InProcessTimeStamper(world.service.timestamps, now=world.clock.now())
    tokens = [asyncio.run(stamper.async_timestamp(hashlib.sha256(b"%d" % n).digest(), "sha256")) for n in range(12)]
    assert not any(lengths_end_in_0x80(token.dump()) for token in tokens)
