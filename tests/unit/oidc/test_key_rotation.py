"""Token-signing key rotation: publish first, sign after the overlap, retire after the tokens expire.

An RP is played by a JWK Set fetched at some moment and kept: what it holds must verify every
token the portal signs while that set is within its cache lifetime. Keys sealed at rest with
a KEK open only with that KEK. ``idp keys rotate`` and ``idp keys list`` run through click.
"""

from __future__ import annotations

import base64
import json
import secrets
import stat
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet

from idp.audit import AuditEvent, AuditLog
from idp.cli import main
from idp.clock import FixedClock, SystemClock
from idp.oidc.keys import (
    RELOAD_INTERVAL,
    KeyEncryptionKeyError,
    KeyStore,
    RotationRefused,
    SigningKeysMissing,
    init_signing_keys,
    kek_from_environment,
    rotate_signing_key,
)
from idp.settings import OidcSettings, Settings, SettingsError, load_settings
from idp.store.database import make_engine, make_session_factory, upgrade

if TYPE_CHECKING:
    from pathlib import Path

OVERLAP = timedelta(hours=24)
ID_TOKEN_LIFETIME = timedelta(minutes=10)
START = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_kek_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDP_KEK", raising=False)
    monkeypatch.delenv("IDP_KEK_FILE", raising=False)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    init_signing_keys(tmp_path)
    return tmp_path


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def kek() -> bytes:
    return secrets.token_bytes(32)


def store(instance: Path, clock: FixedClock, kek: bytes | None = None) -> KeyStore:
    return KeyStore(instance, clock=clock, retire_after=ID_TOKEN_LIFETIME, kek=kek)


def rotate(instance: Path, clock: FixedClock, kek: bytes | None = None, alg: str = "ES256") -> str:
    return rotate_signing_key(instance, alg=alg, now=clock.now(), overlap=OVERLAP, kek=kek).kid


def id_token(keys: KeyStore, clock: FixedClock, alg: str = "ES256") -> str:
    """An ID token-like JWS, signed the way idp.oidc.server signs one."""
    key = keys.signing_key(alg)
    now = int(clock.now().timestamp())
    claims = {"iss": "https://idp.example", "iat": now, "exp": now + int(ID_TOKEN_LIFETIME.total_seconds())}
    return jwt.encode({"alg": key.alg, "kid": key.kid}, claims, key.key, algorithms=[key.alg])


def rp_verifies(jwks: dict[str, Any], token: str) -> str:
    """What an RP does with a cached JWK Set: pick the key by kid, verify; returns the kid."""
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256", "RS256"])  # type: ignore[arg-type]
    kid: str = decoded.header["kid"]
    return kid


def kids(keys: KeyStore, alg: str = "ES256") -> list[str]:
    return [key["kid"] for key in keys.jwks()["keys"] if key["alg"] == alg]


# --- the life of a rotation -------------------------------------------------------------------


def test_rotated_key_is_published_at_once_but_does_not_sign_during_the_overlap(
    instance: Path, clock: FixedClock,
) -> None:
    keys = store(instance, clock)
    old = keys.signing_key("ES256").kid
    new = rotate(instance, clock)
    clock.advance(RELOAD_INTERVAL)
    assert kids(keys) == [old, new]
    assert keys.signing_key("ES256").kid == old
    clock.advance(OVERLAP - RELOAD_INTERVAL - timedelta(seconds=1))
    assert keys.signing_key("ES256").kid == old


def test_after_the_overlap_the_new_key_signs_and_an_rp_holding_the_jwks_from_the_overlap_verifies(
    instance: Path, clock: FixedClock,
) -> None:
    keys = store(instance, clock)
    new = rotate(instance, clock)
    clock.advance(RELOAD_INTERVAL)
    cached_by_rp = keys.jwks()  # fetched after the publication, kept through the switch
    clock.advance(OVERLAP)
    token = id_token(keys, clock)
    assert rp_verifies(cached_by_rp, token) == new


def test_rp_holding_the_jwks_from_before_the_rotation_still_verifies_through_the_overlap(
    instance: Path, clock: FixedClock,
) -> None:
    keys = store(instance, clock)
    cached_by_rp = keys.jwks()
    rotate(instance, clock)
    clock.advance(OVERLAP / 2)
    assert rp_verifies(cached_by_rp, id_token(keys, clock)) == cached_by_rp["keys"][0]["kid"]


def test_old_key_stays_published_until_its_last_tokens_expire_then_disappears(
    instance: Path, clock: FixedClock,
) -> None:
    keys = store(instance, clock)
    old = keys.signing_key("ES256").kid
    new = rotate(instance, clock)
    clock.advance(OVERLAP - timedelta(seconds=1))
    last_old_token = id_token(keys, clock)
    clock.advance(timedelta(seconds=1))
    assert keys.signing_key("ES256").kid == new
    clock.advance(ID_TOKEN_LIFETIME - timedelta(seconds=1))
    assert kids(keys) == [new, old]
    assert rp_verifies(keys.jwks(), last_old_token) == old
    clock.advance(timedelta(seconds=1))
    assert kids(keys) == [new]
    with pytest.raises(InvalidKeyIdError, match=f"No key for kid: '{old}'"):
        rp_verifies(keys.jwks(), last_old_token)


def test_verification_jwks_keeps_retired_keys_for_assertions(instance: Path, clock: FixedClock) -> None:
    keys = store(instance, clock)
    old = keys.signing_key("ES256").kid
    rotate(instance, clock)
    clock.advance(OVERLAP + ID_TOKEN_LIFETIME + RELOAD_INTERVAL)
    assert old not in kids(keys)
    assert old in [key["kid"] for key in keys.verification_jwks()["keys"]]


def test_rotating_one_algorithm_leaves_the_other_alone(instance: Path, clock: FixedClock) -> None:
    keys = store(instance, clock)
    rs256 = keys.signing_key("RS256").kid
    rotate(instance, clock, alg="ES256")
    clock.advance(OVERLAP + ID_TOKEN_LIFETIME)
    assert keys.signing_key("RS256").kid == rs256
    assert kids(keys, "RS256") == [rs256]


def test_a_running_store_sees_a_rotation_only_after_its_reload_interval(instance: Path, clock: FixedClock) -> None:
    keys = store(instance, clock)
    before = kids(keys)
    new = rotate(instance, clock)
    assert kids(keys) == before  # checked at most every RELOAD_INTERVAL
    clock.advance(RELOAD_INTERVAL)
    assert kids(keys) == [*before, new]


def test_second_rotation_while_a_key_is_next_is_refused(instance: Path, clock: FixedClock) -> None:
    pending = rotate(instance, clock)
    clock.advance(OVERLAP - timedelta(seconds=1))
    with pytest.raises(RotationRefused, match=f"{pending} is still next"):
        rotate(instance, clock)


def test_rotation_of_an_unknown_algorithm_is_refused(instance: Path, clock: FixedClock) -> None:
    with pytest.raises(RotationRefused, match="unknown algorithm 'HS256'"):
        rotate(instance, clock, alg="HS256")


def test_first_rotation_migrates_the_single_file_layout(instance: Path, clock: FixedClock) -> None:
    before = store(instance, clock)
    es256, rs256 = before.signing_key("ES256").kid, before.signing_key("RS256").kid
    new = rotate(instance, clock)
    manifest = json.loads((instance / "keys" / "manifest.json").read_text())
    assert [(entry["alg"], entry["kid"]) for entry in manifest["keys"]] == [
        ("ES256", es256), ("RS256", rs256), ("ES256", new),
    ]
    assert stat.S_IMODE((instance / "keys" / "manifest.json").stat().st_mode) == 0o600
    assert store(instance, clock).signing_key("ES256").kid == es256


def test_second_rotation_after_the_overlap_retires_the_first_key_in_turn(instance: Path, clock: FixedClock) -> None:
    keys = store(instance, clock)
    first = keys.signing_key("ES256").kid
    second = rotate(instance, clock)
    clock.advance(OVERLAP)
    third = rotate(instance, clock)
    clock.advance(OVERLAP + ID_TOKEN_LIFETIME)
    assert keys.signing_key("ES256").kid == third
    assert kids(keys) == [third]
    assert first not in kids(keys)
    assert second not in kids(keys)


def test_manifest_naming_a_file_outside_the_keys_directory_is_refused(instance: Path, clock: FixedClock) -> None:
    rotate(instance, clock)
    path = instance / "keys" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["keys"][0]["file"] = "../secret.pem"
    path.write_text(json.dumps(manifest))
    with pytest.raises(SigningKeysMissing, match="leaves the keys directory"):
        store(instance, clock)


def test_manifest_naming_a_kid_its_file_does_not_hold_is_refused(instance: Path, clock: FixedClock) -> None:
    rotate(instance, clock)
    path = instance / "keys" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["keys"][0]["kid"] = "not-the-thumbprint"
    path.write_text(json.dumps(manifest))
    with pytest.raises(SigningKeysMissing, match="does not hold key not-the-thumbprint"):
        store(instance, clock)


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("alg", "HS256", "unknown algorithm 'HS256'"),
    ("signs_from", "2026-04-02T09:00:00", "has no time zone"),
    ("file", "missing.key.pem", "missing.key.pem cannot be read"),
    ("file", "pairwise.secret", "pairwise.secret is not a usable ES256 key"),
])
def test_tampered_manifest_entry_is_refused(
    instance: Path, clock: FixedClock, field: str, value: str, reason: str,
) -> None:
    rotate(instance, clock)
    path = instance / "keys" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["keys"][-1][field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(SigningKeysMissing, match=reason):
        store(instance, clock)


def test_short_pairwise_secret_is_refused(instance: Path, clock: FixedClock) -> None:
    (instance / "keys" / "pairwise.secret").write_bytes(b"short")
    with pytest.raises(SigningKeysMissing, match="is shorter than 32 bytes"):
        store(instance, clock)


def test_no_key_signs_an_algorithm_the_portal_does_not_use(instance: Path, clock: FixedClock) -> None:
    with pytest.raises(KeyError):
        store(instance, clock).signing_key("HS256")


def test_store_of_settings_uses_the_id_token_lifetime_as_retirement(instance: Path, clock: FixedClock) -> None:
    keys = KeyStore.of(Settings(instance=instance), clock=clock)
    old = keys.signing_key("ES256").kid
    rotate(instance, clock)
    clock.advance(OVERLAP + Settings().oidc.id_token_lifetime - timedelta(seconds=1))
    assert old in kids(keys)
    clock.advance(timedelta(seconds=1))
    assert old not in kids(keys)


def test_kek_variables_are_not_settings() -> None:
    environ = {"IDP_KEK": base64.b64encode(b"k" * 32).decode(), "IDP_KEK_FILE": "/run/secrets/kek"}
    assert load_settings(environ=environ) == Settings()


def test_overlap_not_longer_than_the_jwks_cache_lifetime_is_refused() -> None:
    with pytest.raises(SettingsError, match="key_rotation_overlap must exceed 1 hour"):
        OidcSettings(key_rotation_overlap=timedelta(hours=1))


# --- encryption at rest -----------------------------------------------------------------------


def test_sealed_key_round_trips_and_holds_no_pem(instance: Path, clock: FixedClock, kek: bytes) -> None:
    new = rotate(instance, clock, kek=kek)
    sealed = instance / "keys" / f"es256-{new}.key.sealed"
    assert b"PRIVATE KEY" not in sealed.read_bytes()
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    clock.advance(OVERLAP)
    keys = store(instance, clock, kek=kek)
    assert rp_verifies(keys.jwks(), id_token(keys, clock)) == new


def test_sealed_key_with_a_wrong_kek_is_refused(instance: Path, clock: FixedClock, kek: bytes) -> None:
    rotate(instance, clock, kek=kek)
    with pytest.raises(KeyEncryptionKeyError, match="does not open with this KEK"):
        store(instance, clock, kek=secrets.token_bytes(32))


def test_sealed_key_without_a_kek_is_refused(instance: Path, clock: FixedClock, kek: bytes) -> None:
    rotate(instance, clock, kek=kek)
    with pytest.raises(KeyEncryptionKeyError, match="is encrypted: set IDP_KEK or IDP_KEK_FILE"):
        store(instance, clock)


def test_sealed_file_copied_under_another_kid_does_not_open(instance: Path, clock: FixedClock, kek: bytes) -> None:
    first = rotate(instance, clock, kek=kek)
    clock.advance(OVERLAP)
    second = rotate(instance, clock, kek=kek)
    directory = instance / "keys"
    (directory / f"es256-{second}.key.sealed").write_bytes((directory / f"es256-{first}.key.sealed").read_bytes())
    with pytest.raises(KeyEncryptionKeyError, match=f"es256-{second}.key.sealed does not open"):
        store(instance, clock, kek=kek)


def test_kek_is_read_from_the_environment_or_a_file(tmp_path: Path, kek: bytes) -> None:
    encoded = base64.b64encode(kek).decode()
    assert kek_from_environment({"IDP_KEK": encoded}) == kek
    path = tmp_path / "kek"
    path.write_text(encoded + "\n")
    assert kek_from_environment({"IDP_KEK_FILE": str(path)}) == kek
    assert kek_from_environment({}) is None


@pytest.mark.parametrize(("environ", "reason"), [
    ({"IDP_KEK": "not base64!"}, "is not valid base64"),
    ({"IDP_KEK": base64.b64encode(b"k" * 16).decode()}, "must be 32 bytes, not 16"),
    ({"IDP_KEK": base64.b64encode(b"k" * 32).decode(), "IDP_KEK_FILE": "/x"}, "not both"),
    ({"IDP_KEK_FILE": "/nonexistent/kek"}, "cannot be read"),
])
def test_malformed_kek_is_refused(environ: dict[str, str], reason: str) -> None:
    with pytest.raises(KeyEncryptionKeyError, match=reason):
        kek_from_environment(environ)


def test_store_reads_the_kek_from_the_environment(
    instance: Path, clock: FixedClock, kek: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    new = rotate(instance, clock, kek=kek)
    monkeypatch.setenv("IDP_KEK", base64.b64encode(kek).decode())
    assert new in kids(KeyStore(instance, clock=clock))


# --- idp keys rotate / list -------------------------------------------------------------------


@pytest.fixture
def cli_instance(instance: Path) -> Path:
    engine = make_engine(f"sqlite:///{instance / 'idp.sqlite3'}")
    upgrade(engine)
    engine.dispose()
    return instance


def run(instance: Path, *args: str, kek: bytes | None = None) -> Result:
    env = {"IDP_CONFIG": None, "DATABASE_URL": None, "REDIS_URL": None,
           "IDP_KEK": base64.b64encode(kek).decode() if kek else None, "IDP_KEK_FILE": None}
    return CliRunner(env=env).invoke(main, [*args, "--instance", str(instance)])


def test_cli_rotate_publishes_a_next_key_and_audits_it(cli_instance: Path) -> None:
    result = run(cli_instance, "keys", "rotate")
    assert result.exit_code == 0, result.output
    assert "(plain (no KEK set))" in result.output
    listed = json.loads(run(cli_instance, "keys", "list", "--json").output)
    states = {(row["alg"], row["state"]) for row in listed}
    assert states == {("ES256", "current"), ("ES256", "next"), ("RS256", "current")}
    new = next(row for row in listed if row["state"] == "next")
    assert new["kid"] in result.output
    engine = make_engine(f"sqlite:///{cli_instance / 'idp.sqlite3'}")
    entries = list(AuditLog(make_session_factory(engine), clock=SystemClock()).export(after=0))
    engine.dispose()
    assert [(entry.event, entry.details) for entry in entries] == [
        (AuditEvent.KEY_ROTATED.value, {"kid": new["kid"], "purpose": "token-signing"}),
    ]


def test_cli_rotate_seals_with_the_kek_and_list_shows_it(cli_instance: Path, kek: bytes) -> None:
    assert run(cli_instance, "keys", "rotate", "--alg", "RS256", kek=kek).exit_code == 0
    sealed = [line.split() for line in run(cli_instance, "keys", "list").output.splitlines() if line.endswith("sealed")]
    assert [(fields[0], fields[2]) for fields in sealed] == [("RS256", "next")]


def test_cli_rotate_twice_is_refused_while_a_key_is_next(cli_instance: Path) -> None:
    assert run(cli_instance, "keys", "rotate").exit_code == 0
    again = run(cli_instance, "keys", "rotate")
    assert again.exit_code == 1
    assert "is still next" in again.output


def test_cli_rotate_with_a_malformed_kek_is_refused_and_writes_nothing(cli_instance: Path) -> None:
    result = run(cli_instance, "keys", "rotate", kek=b"short")
    assert result.exit_code == 1
    assert "must be 32 bytes, not 5" in result.output
    assert not (cli_instance / "keys" / "manifest.json").exists()
    files = sorted(path.name for path in (cli_instance / "keys").iterdir())
    assert files == ["es256.key.pem", "pairwise.secret", "rs256.key.pem"]


def test_cli_list_without_keys_says_run_init(tmp_path: Path) -> None:
    result = run(tmp_path, "keys", "list")
    assert result.exit_code == 1
    assert "run `idp init`" in result.output


def test_cli_rotate_without_a_database_is_refused(instance: Path) -> None:
    result = run(instance, "keys", "rotate")
    assert result.exit_code == 1
    assert "run `idp init` first" in result.output
