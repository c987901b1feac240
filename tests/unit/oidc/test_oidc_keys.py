"""Token-signing keys: made once, private files, RFC 7638 key ids, public JWKS, quiet repr."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest
from joserfc.jwk import ECKey

from idp.oidc.keys import KeyStore, SigningKeysMissing, init_signing_keys
from idp.oidc.pairwise import pairwise_subject

if TYPE_CHECKING:
    from pathlib import Path


def test_init_is_idempotent_and_files_are_private(tmp_path: Path) -> None:
    assert init_signing_keys(tmp_path)
    before = {path.name: path.read_bytes() for path in (tmp_path / "keys").iterdir()}
    assert not init_signing_keys(tmp_path)
    after = {path.name: path.read_bytes() for path in (tmp_path / "keys").iterdir()}
    assert before == after
    assert set(after) == {"es256.key.pem", "rs256.key.pem", "pairwise.secret"}
    for path in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_kid_is_the_rfc7638_thumbprint_and_jwks_is_public(tmp_path: Path) -> None:
    init_signing_keys(tmp_path)
    keys = KeyStore(tmp_path)
    es256 = keys.signing_key("ES256")
    assert es256.kid == ECKey.import_key((tmp_path / "keys" / "es256.key.pem").read_bytes()).thumbprint()
    published = {key["alg"]: key for key in keys.jwks()["keys"]}
    assert published["ES256"]["kid"] == es256.kid
    assert published["RS256"]["kty"] == "RSA"
    assert all(private not in key for key in published.values() for private in ("d", "p", "q", "dp", "dq", "qi"))


def test_repr_shows_key_ids_only(tmp_path: Path) -> None:
    init_signing_keys(tmp_path)
    keys = KeyStore(tmp_path)
    text = repr(keys)
    assert keys.signing_key("ES256").kid in text
    assert "PRIVATE" not in text
    assert keys.pairwise_secret.hex() not in text
    assert "key=" not in repr(keys.signing_key("ES256"))


def test_missing_keys_say_run_init(tmp_path: Path) -> None:
    with pytest.raises(SigningKeysMissing, match="idp init"):
        KeyStore(tmp_path)


def test_pairwise_subject_is_stable_per_sector_and_differs_across() -> None:
    secret = b"s" * 32
    one = pairwise_subject(secret=secret, sector="a.example", person_id="p1")
    assert one == pairwise_subject(secret=secret, sector="a.example", person_id="p1")
    assert one != pairwise_subject(secret=secret, sector="b.example", person_id="p1")
    assert one != pairwise_subject(secret=secret, sector="a.example", person_id="p2")
    assert one != pairwise_subject(secret=b"t" * 32, sector="a.example", person_id="p1")
