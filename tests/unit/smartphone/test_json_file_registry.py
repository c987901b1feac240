"""The J-LIS registry in a JSON file: the CertificateRegistry contract, and atomic writes."""

import functools
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from idp.pki.profiles import CARD_AUTH, KeyAlgorithm, build_certificate, card_auth_subject, generate_key
from idp.pki.registry import AlreadyRevoked, CertificateRef, CertificateState, RegistryError, UnknownCertificate
from smartphone.files import CorruptState, write_atomically
from smartphone.registry import JsonFileRegistry

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@functools.cache
def _key():
    return generate_key(KeyAlgorithm.RSA_2048)


def _certificate(serial_number: int) -> x509.Certificate:
    """A card-shaped certificate, self-signed: the registry reads only serial and validity."""
    return build_certificate(
        profile=CARD_AUTH, subject=card_auth_subject(f"ID{serial_number}"), public_key=_key().public_key(),
        issuer=None, signing_key=_key(), not_before=NOW, not_after=NOW + timedelta(days=365),
        serial_number=serial_number, crl_url="http://jlis.test/crl/a.crl", ocsp_url="http://jlis.test/ocsp",
    )


@pytest.fixture
def path(tmp_path):
    return tmp_path / "registry" / "jlis-auth-ca.json"


@pytest.fixture
def registry(path):
    registry = JsonFileRegistry(path)
    registry.record(_certificate(1001), profile="card-auth")
    registry.record(_certificate(1002), profile="card-auth")
    return registry


def _leftovers(path) -> list[str]:
    return sorted(entry.name for entry in path.parent.iterdir() if entry.name.endswith(".tmp"))


def test_recorded_certificate_reads_good(registry):
    status = registry.status(1001)
    assert (status.state, status.profile, status.reason, status.revoked_at) == (
        CertificateState.GOOD, "card-auth", None, None,
    )
    assert status.not_after == NOW + timedelta(days=365)


def test_serial_never_issued_has_no_status(registry):
    assert registry.status(999) is None


def test_empty_registry_has_no_file_until_the_first_write(path):
    assert JsonFileRegistry(path).status(1) is None
    assert not path.exists()


def test_reused_serial_is_refused(registry):
    with pytest.raises(RegistryError) as refused:
        registry.record(_certificate(1001), profile="card-auth")
    assert str(refused.value) == "serial 3e9 was already issued"


def test_card_references_round_trip(path):
    registry = JsonFileRegistry(path)
    ref = CertificateRef(issuer_key_id=b"\x01\x02", serial_number=7)
    registry.record(_certificate(5), profile="card-auth", issued_from=[ref])
    assert registry.status(5).issued_from == (ref,)


def test_revoke_records_the_reason_and_time(registry):
    registry.revoke(1001, reason=x509.ReasonFlags.key_compromise, at=NOW)
    status = registry.status(1001)
    assert (status.state, status.reason, status.revoked_at) == (
        CertificateState.REVOKED, x509.ReasonFlags.key_compromise, NOW,
    )


def test_revoking_an_unknown_serial_is_refused(registry):
    with pytest.raises(UnknownCertificate) as refused:
        registry.revoke(999, reason=x509.ReasonFlags.unspecified, at=NOW)
    assert str(refused.value) == "certificate 3e7 was not issued by this authority"


def test_revoking_twice_is_refused(registry):
    registry.revoke(1001, reason=x509.ReasonFlags.unspecified, at=NOW)
    with pytest.raises(AlreadyRevoked) as refused:
        registry.revoke(1001, reason=x509.ReasonFlags.key_compromise, at=NOW)
    assert str(refused.value) == "certificate 3e9 is already revoked"
    assert registry.status(1001).reason is x509.ReasonFlags.unspecified


def test_hold_puts_a_certificate_on_hold(registry):
    registry.revoke(1001, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    assert registry.status(1001).state is CertificateState.ON_HOLD


def test_holding_a_held_certificate_is_refused(registry):
    registry.revoke(1001, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    with pytest.raises(AlreadyRevoked) as refused:
        registry.revoke(1001, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    assert str(refused.value) == "certificate 3e9 is already on hold"


def test_held_certificate_can_be_revoked_for_good(registry):
    registry.revoke(1001, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    later = NOW + timedelta(days=1)
    registry.revoke(1001, reason=x509.ReasonFlags.key_compromise, at=later)
    status = registry.status(1001)
    assert (status.state, status.reason, status.revoked_at) == (
        CertificateState.REVOKED, x509.ReasonFlags.key_compromise, later,
    )


def test_resume_takes_a_held_certificate_off_hold(registry):
    registry.revoke(1001, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    registry.resume(1001)
    status = registry.status(1001)
    assert (status.state, status.reason, status.revoked_at) == (CertificateState.GOOD, None, None)


def test_resuming_a_certificate_not_on_hold_is_refused(registry):
    registry.revoke(1001, reason=x509.ReasonFlags.superseded, at=NOW)
    with pytest.raises(AlreadyRevoked) as refused:
        registry.resume(1001)
    assert str(refused.value) == "certificate 3e9 is not on hold"


def test_resuming_an_unknown_serial_is_refused(registry):
    with pytest.raises(UnknownCertificate):
        registry.resume(999)


def test_listed_holds_the_revoked_and_the_held_only(registry):
    registry.record(_certificate(1003), profile="card-auth")
    registry.revoke(1003, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    registry.revoke(1001, reason=x509.ReasonFlags.superseded, at=NOW)
    assert [status.serial_number for status in registry.listed()] == [1001, 1003]


def test_crl_numbers_increase_from_one(registry):
    assert [registry.next_crl_number() for _ in range(3)] == [1, 2, 3]


def test_a_second_reader_sees_a_change_at_once(registry, path):
    reader = JsonFileRegistry(path)  # as `jlis serve` does while the CLI revokes
    registry.revoke(1002, reason=x509.ReasonFlags.key_compromise, at=NOW)
    assert reader.status(1002).state is CertificateState.REVOKED


def test_every_change_replaces_the_file_instead_of_rewriting_it(registry, path):
    before = path.stat().st_ino
    registry.revoke(1001, reason=x509.ReasonFlags.unspecified, at=NOW)
    assert path.stat().st_ino != before


def test_refused_change_leaves_the_file_byte_for_byte(registry, path):
    registry.revoke(1001, reason=x509.ReasonFlags.unspecified, at=NOW)
    before = path.read_bytes()
    with pytest.raises(AlreadyRevoked):
        registry.revoke(1001, reason=x509.ReasonFlags.unspecified, at=NOW)
    assert path.read_bytes() == before


def test_no_temporary_file_is_left_behind(registry, path):
    registry.revoke(1001, reason=x509.ReasonFlags.unspecified, at=NOW)
    registry.next_crl_number()
    assert _leftovers(path) == []


def test_write_that_fails_midway_leaves_the_previous_file(registry, path):
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")  # the write into the temporary file fails
    assert path.read_bytes() == before
    assert _leftovers(path) == []


def test_stray_temporary_file_from_a_crash_is_ignored(registry, path):
    (path.parent / f".{path.name}.crashed.tmp").write_bytes(b'{"format": 1, "certif')
    assert registry.status(1001).state is CertificateState.GOOD


def test_registry_file_that_is_not_json_is_reported(path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"format": 1, "certif')
    with pytest.raises(CorruptState) as refused:
        JsonFileRegistry(path).status(1)
    assert str(refused.value) == f"{path} is not a registry"


def test_registry_entry_that_is_malformed_is_reported(registry, path):
    data = json.loads(path.read_bytes())
    data["certificates"]["1001"]["state"] = "lost"
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptState) as refused:
        registry.status(1001)
    assert str(refused.value) == "the registry entry for serial 3e9 is malformed"


def test_registry_file_of_another_shape_is_reported(path):
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"format": 1, "certificates": []}))
    with pytest.raises(CorruptState) as refused:
        JsonFileRegistry(path).listed()
    assert str(refused.value) == f"{path} is not a registry"
