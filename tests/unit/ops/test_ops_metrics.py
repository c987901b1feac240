"""The typed metrics API, and the values of several worker processes summed at one scrape."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from idp.ops import metrics, multiprocess
from idp.ops.health import CrlState


def value(name, **labels):
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("count", "sample", "labels"),
    [
        (lambda: metrics.ceremony_started("login"), "myna_ceremonies_started_total", {"kind": "login"}),
        (lambda: metrics.ceremony_completed("login"), "myna_ceremonies_completed_total",
         {"kind": "login", "outcome": "approved"}),
        (lambda: metrics.ceremony_completed("login", outcome="declined"), "myna_ceremonies_completed_total",
         {"kind": "login", "outcome": "declined"}),
        (lambda: metrics.ceremony_rejected("bad_signature"), "myna_ceremonies_rejected_total",
         {"kind": "login", "reason": "bad_signature"}),
        (lambda: metrics.ceremony_rejected("card_certificate_revoked", kind="enrollment"),
         "myna_ceremonies_rejected_total", {"kind": "enrollment", "reason": "card_certificate_revoked"}),
        (metrics.enrollment_completed, "myna_enrollments_total", {}),
        (metrics.enrollment_completed, "myna_ceremonies_completed_total",
         {"kind": "enrollment", "outcome": "approved"}),
        (lambda: metrics.token_granted("refresh_token"), "myna_token_grants_total", {"grant_type": "refresh_token"}),
        (lambda: metrics.token_rejected("code_replayed"), "myna_token_rejections_total", {"reason": "code_replayed"}),
        (lambda: metrics.rate_limited("device_lookup"), "myna_rate_limited_total", {"limit": "device_lookup"}),
        (lambda: metrics.signature_created("pades"), "myna_signatures_total", {"kind": "pades"}),
        (lambda: metrics.observe_request("oidc.token", 200, 0.004), "myna_http_responses_total",
         {"endpoint": "oidc.token", "status": "200"}),
        (lambda: metrics.observe_request("oidc.token", 200, 0.004), "myna_http_request_duration_seconds_bucket",
         {"endpoint": "oidc.token", "le": "0.005"}),
    ],
    ids=["started", "approved", "declined", "login-rejected", "enrollment-rejected", "enrollments",
         "enrollment-ceremony", "token-granted", "token-rejected", "rate-limited", "signature", "responses", "latency"],
)
def test_each_call_counts_once_in_its_series(count, sample, labels):
    before = value(sample, **labels)
    count()
    assert value(sample, **labels) == before + 1


def test_crl_collector_reports_age_and_time_to_next_update():
    now = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    state = CrlState(issuer="CN=JPKI sign", this_update=now - timedelta(hours=2), fetched_at=now - timedelta(hours=1),
                     next_update=now - timedelta(minutes=1))
    families = {family.name: family for family in metrics.JlisCrlCollector(lambda: [state], lambda: now).collect()}
    assert families["myna_jlis_crl_age_seconds"].samples[0].value == 3600
    assert families["myna_jlis_crl_next_update_seconds"].samples[0].value == -60  # stale: negative


WORKER = "from idp.ops import metrics; metrics.token_granted('authorization_code'); metrics.ceremony_started('login')"
SCRAPE = "import sys; from idp.ops import metrics; sys.stdout.write(metrics.exposition().decode())"


def test_values_of_several_worker_processes_add_up_at_one_scrape(tmp_path):
    """What gunicorn's workers do: each counts in its own process, any one of them serves the sum."""
    environ = {key: value for key, value in os.environ.items() if key != multiprocess.ENV}
    directory = multiprocess.prepare_directory(environ)
    try:
        for _ in range(3):
            subprocess.run([sys.executable, "-c", WORKER], env=environ, check=True, timeout=60)
        scraped = subprocess.run([sys.executable, "-c", SCRAPE], env=environ, check=True, timeout=60,
                                 capture_output=True, text=True).stdout
    finally:
        multiprocess.remove_directory(environ)
    found = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
             for family in text_string_to_metric_families(scraped) for sample in family.samples}
    assert found[("myna_token_grants_total", (("grant_type", "authorization_code"),))] == 3
    assert found[("myna_ceremonies_started_total", (("kind", "login"),))] == 3
    assert not directory.exists()


def test_a_named_metrics_directory_is_emptied_at_start_and_kept_at_exit(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"left by the previous run")
    (directory / "notes.txt").write_text("not ours", encoding="utf-8")
    environ = {multiprocess.ENV: str(directory)}
    assert multiprocess.prepare_directory(environ) == directory
    assert sorted(path.name for path in directory.iterdir()) == ["notes.txt"]
    multiprocess.remove_directory(environ)
    assert directory.is_dir()


def test_an_exited_worker_leaves_no_live_gauge_behind(tmp_path, monkeypatch):
    monkeypatch.setenv(multiprocess.ENV, str(tmp_path))
    (tmp_path / "gauge_livesum_4242.db").write_bytes(b"")
    (tmp_path / "counter_4242.db").write_bytes(b"")
    multiprocess.worker_exited(4242)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["counter_4242.db"]  # counts outlive their worker


def test_without_a_metrics_directory_a_worker_exit_touches_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(multiprocess.ENV, raising=False)
    multiprocess.worker_exited(4242)


def test_the_serve_key_check_leaves_prometheus_client_unimported():
    """`idp serve` opens the instance's keys before gunicorn's configuration names the metrics
    directory; had that check imported prometheus_client, every worker would count in its own
    memory and /metrics would show no ceremonies (prometheus_client picks its values at import)."""
    probe = ("import sys, idp.cli, idp.oidc.keys, idp.pki.service, idp.store.key_files; "
             "print('prometheus_client' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_removing_the_made_directory_forgets_it(tmp_path):
    environ: dict[str, str] = {}
    directory = multiprocess.prepare_directory(environ)
    multiprocess.remove_directory(environ)
    assert not directory.exists()
    assert environ == {}  # a later child process must not look for it
