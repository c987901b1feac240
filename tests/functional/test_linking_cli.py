"""``idp pki sync`` reads the J-LIS linking data after the CRLs; ``idp persons show`` explains which
card certificates make up a person, without printing any of the person's attributes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from enrollment_portal import AUTH_PIN, PASSPHRASE, SIGN_PIN, running_portal

from idp.app import services
from idp.ceremonies.records import DeviceRecord
from idp.cli import main as idp_main
from smartphone.cli import main as smartphone_main
from smartphone.portal_client import PortalClient, enroll


@pytest.fixture
def portal(world, tmp_path):
    with running_portal(world, tmp_path / "instance") as portal:
        yield portal


def configure(tmp_path, world, portal, *, linking_url: str) -> str:
    root, auth_ca, sign_ca = world.jlis_certificates
    config = tmp_path / "idp.toml"
    config.write_text(
        f'issuer = "{portal.url}"\ninstance = "{portal.settings.instance}"\n[pki]\njlis_fetch_timeout = 5\n'
        f'jlis_roots = ["{root}"]\njlis_intermediates = ["{auth_ca}", "{sign_ca}"]\n'
        f'jlis_crl_urls = ["{world.jlis_url}/crl/jlis-auth-ca.crl", "{world.jlis_url}/crl/jlis-sign-ca.crl"]\n'
        f'jlis_linking_url = "{linking_url}"\n',
        encoding="utf-8",
    )
    return str(config)


def idp(config: str, *args: str):
    return CliRunner().invoke(idp_main, [*args, "--config", config])


def enrolled_person(world, portal) -> str:
    element, holder = world.state.load_phone("pixel"), world.state.load_card("taro")
    enrolled = enroll(client=PortalClient(portal.url), element=element, card=holder, auth_pin=AUTH_PIN,
                      sign_pin=SIGN_PIN)
    world.state.save_phone("pixel", element)
    with services(portal.app).sessions.begin() as session:
        return session.get(DeviceRecord, enrolled.device_id).person_id


def renew(world) -> None:
    result = CliRunner().invoke(smartphone_main, ["card", "renew", "--state", str(world.state.root), "--card", "taro"],
                                env={"SMARTPHONE_PASSPHRASE": PASSPHRASE.decode()})
    assert result.exit_code == 0, result.output


def test_sync_reads_the_linking_data_and_persons_show_explains_the_person(tmp_path, world, portal):
    person = enrolled_person(world, portal)
    renew(world)
    config = configure(tmp_path, world, portal, linking_url=f"{world.jlis_url}/linking")
    synced = idp(config, "pki", "sync")
    assert synced.exit_code == 0, synced.output
    expected = f"linking data from {world.jlis_url}/linking: 4 links read, 2 certificates attached to persons"
    assert f"{expected}, cursor at 4" in synced.output
    assert "revoked 2 smartphone certificates issued from revoked card certificates" in synced.output
    shown = idp(config, "persons", "show", person)
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"person {person}: 4 card certificates\n")
    assert shown.output.count("jlis_linking at") == 2
    assert "J-LIS links naming them: 4" in shown.output
    assert "succeeded by" in shown.output
    for attribute in ("山田", "太郎", "東京都", "1990"):
        assert attribute not in shown.output


def test_the_old_command_name_still_syncs(tmp_path, world, portal):
    config = configure(tmp_path, world, portal, linking_url=f"{world.jlis_url}/linking")
    synced = idp(config, "pki", "sync-revocations")
    assert synced.exit_code == 0, synced.output
    assert "cursor at 1" in synced.output


def test_a_feed_that_is_not_the_jlis_feed_fails_the_sync(tmp_path, world, portal):
    config = configure(tmp_path, world, portal, linking_url=f"{world.jlis_url}/crl/jlis-root.crl")
    synced = idp(config, "pki", "sync")
    assert synced.exit_code == 1
    refusal = f"refused linking data from {world.jlis_url}/crl/jlis-root.crl"
    assert f"{refusal}: the linking feed page is not a compact JWS (malformed)" in synced.output
    assert "Error: the J-LIS linking data could not be stored" in synced.output


def test_show_refuses_an_unknown_person(tmp_path, world, portal):
    config = configure(tmp_path, world, portal, linking_url="")
    shown = idp(config, "persons", "show", "nobody")
    assert shown.exit_code == 1
    assert "no person 'nobody' holds a card certificate" in shown.output
