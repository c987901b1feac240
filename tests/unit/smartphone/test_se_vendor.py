"""The SE vendor: its attestation root, the batch certificate, provisioning, storage."""

import pytest
from cryptography import x509

from smartphone.files import CorruptState
from smartphone.keys import WrongPassphrase
from smartphone.vendor import Vendor

PASSPHRASE = b"correct horse battery staple"


def test_batch_certificate_is_issued_by_the_vendor_root(vendor):
    vendor.attestation_certificate.verify_directly_issued_by(vendor.root_certificate)


def test_root_is_a_self_signed_ca(vendor):
    vendor.root_certificate.verify_directly_issued_by(vendor.root_certificate)
    assert vendor.root_certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_every_se_of_a_model_shares_the_batch_identity(vendor):
    first, second = vendor.provision(), vendor.provision()
    assert first.aaguid == second.aaguid == vendor.aaguid
    assert first.attestation_chain == second.attestation_chain == (vendor.attestation_certificate,)


def test_two_vendors_have_different_roots_and_aaguids(vendor, other_vendor):
    assert vendor.root_certificate != other_vendor.root_certificate
    assert vendor.aaguid != other_vendor.aaguid


@pytest.mark.parametrize(("name", "model"), [("", "SE-1"), ("Vendor", " ")])
def test_vendor_without_a_name_or_model_is_refused(now, name, model):
    with pytest.raises(ValueError) as raised:
        Vendor.create(name=name, model=model, now=now)
    assert str(raised.value) == "a vendor needs a name and a model"


def test_stored_vendor_provisions_the_same_model(vendor):
    restored = Vendor.from_state(vendor.to_state(PASSPHRASE), PASSPHRASE)
    assert (restored.name, restored.model, restored.aaguid) == (vendor.name, vendor.model, vendor.aaguid)
    assert restored.root_pem == vendor.root_pem
    assert restored.provision().attestation_chain == (vendor.attestation_certificate,)


def test_stored_vendor_with_the_wrong_passphrase_is_refused(vendor):
    with pytest.raises(WrongPassphrase):
        Vendor.from_state(vendor.to_state(PASSPHRASE), b"wrong")


def test_stored_vendor_missing_a_field_is_corrupt(vendor):
    state = vendor.to_state(PASSPHRASE)
    del state["root_key"]
    with pytest.raises(CorruptState) as raised:
        Vendor.from_state(state, PASSPHRASE)
    assert str(raised.value) == "the stored vendor is malformed"


def test_stored_attestation_chain_for_another_key_is_corrupt(vendor, other_vendor):
    state = vendor.to_state(PASSPHRASE)
    state["attestation"]["chain"] = other_vendor.to_state(PASSPHRASE)["attestation"]["chain"]
    with pytest.raises(CorruptState) as raised:
        Vendor.from_state(state, PASSPHRASE)
    assert str(raised.value) == "the stored attestation identity is malformed"
