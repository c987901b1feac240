"""The byte layouts the SE writes (WebAuthn L3 §5.8.1, §6.1): the guards on what cannot be encoded."""

import pytest

from smartphone.webauthn_data import AuthenticatorFlags, authenticator_data, b64url, b64url_decode, client_data_json


def test_base64url_round_trips_without_padding():
    assert b64url(b"\xfb\xff") == "-_8"
    assert b64url_decode("-_8") == b"\xfb\xff"


@pytest.mark.parametrize("text", ["a", "é", 7])
def test_text_that_is_not_base64url_is_refused(text):
    with pytest.raises(ValueError) as refused:
        b64url_decode(text)
    assert str(refused.value) == "not base64url text"


@pytest.mark.parametrize("count", [-1, 2**32])
def test_sign_count_outside_32_bits_cannot_be_encoded(count):
    with pytest.raises(ValueError) as refused:
        authenticator_data(rp_id="id.test", flags=AuthenticatorFlags.UP, sign_count=count)
    assert str(refused.value) == "signCount is a 32-bit unsigned integer"


def test_at_flag_without_attested_data_cannot_be_encoded():
    with pytest.raises(ValueError) as refused:
        authenticator_data(rp_id="id.test", flags=AuthenticatorFlags.UP | AuthenticatorFlags.AT, sign_count=0)
    assert str(refused.value) == "the AT flag is set exactly when attested credential data follows"


def test_authenticator_data_is_rp_id_hash_flags_and_counter():
    data = authenticator_data(rp_id="id.test", flags=AuthenticatorFlags.UP | AuthenticatorFlags.UV, sign_count=258)
    assert (len(data), data[32], data[33:37]) == (37, 0x05, b"\x00\x00\x01\x02")


def test_client_data_is_serialised_in_the_browsers_member_order():
    assert client_data_json(ceremony="webauthn.get", challenge=b"\x01", origin="https://id.test") == (
        b'{"type":"webauthn.get","challenge":"AQ","origin":"https://id.test","crossOrigin":false}'
    )
