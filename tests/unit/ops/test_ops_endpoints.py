"""/healthz, /readyz and /metrics on a real app: what each answers, and who may read the metrics."""

import shutil
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from idp.ceremonies.records import ExternalCrl
from idp.clock import FixedClock
from idp.ops import health
from idp.settings import OpsSettings, PkiSettings
from idp.store.database import make_engine, make_session_factory

TOKEN = "t" * 40
LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}


def samples(body):
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def store_crl(app, *, issuer, next_update):
    now = app.extensions["myna"].clock.now()
    sessions = make_session_factory(make_engine(app.extensions["myna"].settings.effective_database_url))
    with sessions.begin() as session:
        session.add(ExternalCrl(
            issuer_key_id=issuer.encode(), issuer_name=issuer, url=f"http://jlis.example/{issuer}.crl", number=1,
            this_update=now - timedelta(hours=1), next_update=next_update, fetched_at=now - timedelta(minutes=30),
            der=b"not read by these checks",
        ))


def test_healthz_answers_alive_without_touching_anything(make_app):
    response = make_app().test_client().get("/healthz")
    assert (response.status_code, response.json) == (200, {"status": "alive"})
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_names_every_check_when_ready(make_app):
    response = make_app().test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {
        "database": {"ok": True}, "ephemeral_store": {"ok": True}, "signing_keys": {"ok": True},
        "ca_keys": {"ok": True}, "jlis_crls": {"ok": True, "detail": "no J-LIS CA configured"},
    }}


def failing(response):
    assert response.status_code == 503
    assert response.json["status"] == "not ready"
    return {name: check["detail"] for name, check in response.json["checks"].items() if not check["ok"]}


def test_readyz_fails_naming_the_database_when_it_does_not_answer(make_app):
    app = make_app(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1")
    assert failing(app.test_client().get("/readyz")) == {"database": "OperationalError",
                                                          "jlis_crls": "OperationalError"}


def test_readyz_fails_naming_the_ephemeral_store_when_redis_does_not_answer(make_app):
    app = make_app(redis_url="redis://127.0.0.1:9/0")
    assert failing(app.test_client().get("/readyz")) == {"ephemeral_store": "EphemeralStoreUnavailable"}


def test_readyz_fails_naming_the_signing_keys_when_they_cannot_be_loaded(make_app, instance):
    shutil.rmtree(instance / "keys")
    assert failing(make_app().test_client().get("/readyz")) == {"signing_keys": "SigningKeysMissing"}


def test_readyz_fails_naming_the_ca_keys_when_a_ca_certificate_has_expired(make_app, now):
    app = make_app(clock=FixedClock(now + timedelta(days=365 * 40)))
    assert failing(app.test_client().get("/readyz")) == {
        "ca_keys": "CA certificate not valid now: smartphone-ca, portal-root",
    }


def jlis_configured(make_app, instance):
    """An app that trusts a J-LIS root (any certificate will do: readiness only asks whether one is set)."""
    return make_app(pki=PkiSettings(jlis_roots=(instance / "pki" / "portal-root.crt.pem",)))


def test_readyz_fails_when_jlis_is_configured_but_no_crl_is_stored(make_app, instance):
    assert failing(jlis_configured(make_app, instance).test_client().get("/readyz")) == {
        "jlis_crls": "no J-LIS CRL stored: run `idp pki sync-revocations`",
    }


def test_readyz_fails_naming_the_crl_past_its_next_update(make_app, now, instance):
    app = jlis_configured(make_app, instance)
    store_crl(app, issuer="CN=auth-ca", next_update=now + timedelta(hours=5))
    store_crl(app, issuer="CN=sign-ca", next_update=now)
    assert failing(app.test_client().get("/readyz")) == {"jlis_crls": "past nextUpdate: CN=sign-ca"}


def test_readyz_passes_with_fresh_crls(make_app, now, instance):
    app = jlis_configured(make_app, instance)
    store_crl(app, issuer="CN=auth-ca", next_update=now + timedelta(hours=5))
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"]["jlis_crls"] == {
        "ok": True, "detail": f"1 CRLs, next update {(now + timedelta(hours=5)).isoformat()}",
    }


def test_metrics_are_served_to_loopback_by_default(make_app):
    response = make_app().test_client().get("/metrics", environ_base=LOOPBACK)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    assert b"myna_ceremonies_started_total" in response.data


@pytest.mark.parametrize(
    ("ops", "environ", "headers", "status"),
    [
        (OpsSettings(), {"REMOTE_ADDR": "203.0.113.9"}, {}, 403),
        (OpsSettings(), {"REMOTE_ADDR": ""}, {}, 403),
        (OpsSettings(), LOOPBACK, {"X-Forwarded-For": "203.0.113.9"}, 403),
        (OpsSettings(), LOOPBACK, {"Forwarded": "for=203.0.113.9"}, 403),
        (OpsSettings(metrics_networks=("10.0.0.0/8",)), LOOPBACK, {}, 403),
        (OpsSettings(metrics_token=TOKEN), LOOPBACK, {}, 401),
        (OpsSettings(metrics_token=TOKEN), LOOPBACK, {"Authorization": "Bearer " + "u" * 40}, 401),
        (OpsSettings(metrics_token=TOKEN), LOOPBACK, {"Authorization": "Basic " + TOKEN}, 401),
        (OpsSettings(metrics_token=TOKEN), {"REMOTE_ADDR": "203.0.113.9"}, {"Authorization": "Bearer " + TOKEN}, 403),
        (OpsSettings(metrics=False), LOOPBACK, {}, 404),
    ],
    ids=["public-source", "no-source-address", "through-proxy-xff", "through-proxy-forwarded", "not-in-allowed-network",
         "token-missing", "token-wrong", "token-wrong-scheme", "token-right-but-public-source", "metrics-off"],
)
def test_metrics_refused(make_app, ops, environ, headers, status):
    response = make_app(ops=ops).test_client().get("/metrics", environ_base=environ, headers=headers)
    assert response.status_code == status
    assert b"myna_" not in response.data
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_metrics_with_the_token_from_an_allowed_network(make_app):
    app = make_app(ops=OpsSettings(metrics_token=TOKEN, metrics_networks=("192.0.2.0/24",)))
    response = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"},
                                     headers={"Authorization": "Bearer " + TOKEN})
    assert response.status_code == 200


def test_latency_is_labelled_by_endpoint_never_by_raw_path(make_app):
    client = make_app().test_client()
    before = samples(client.get("/metrics", environ_base=LOOPBACK).data)
    client.get("/login/TRANSACTION-ID-IN-PATH/status")
    client.get("/no/such/path/SECRET")
    body = client.get("/metrics", environ_base=LOOPBACK).data
    after = samples(body)
    assert b"TRANSACTION-ID-IN-PATH" not in body
    assert b"SECRET" not in body
    for endpoint in ("login.status", "unmatched"):
        key = ("myna_http_request_duration_seconds_count", (("endpoint", endpoint),))
        assert after[key] - before.get(key, 0) == 1


def test_metrics_off_leaves_requests_untimed(make_app):
    key = ("myna_http_request_duration_seconds_count", (("endpoint", "ops.healthz"),))
    reader = make_app().test_client()  # the metrics are the process's: another app reads them
    before = samples(reader.get("/metrics", environ_base=LOOPBACK).data).get(key, 0)
    make_app(ops=OpsSettings(metrics=False)).test_client().get("/healthz")
    assert samples(reader.get("/metrics", environ_base=LOOPBACK).data).get(key, 0) == before


def test_revocation_data_age_is_exposed_per_jlis_ca(make_app, now):
    app = make_app()
    store_crl(app, issuer="CN=auth-ca", next_update=now + timedelta(hours=5))
    found = samples(app.test_client().get("/metrics", environ_base=LOOPBACK).data)
    assert found[("myna_jlis_crl_age_seconds", (("issuer", "CN=auth-ca"),))] == 1800
    assert found[("myna_jlis_crl_next_update_seconds", (("issuer", "CN=auth-ca"),))] == 5 * 3600


def test_ca_keys_check_fails_with_no_portal_ca(now):
    result = health.ca_keys_check(lambda: (), now=lambda: now)()
    assert result == health.CheckResult(ok=False, detail="no portal CA loaded")
