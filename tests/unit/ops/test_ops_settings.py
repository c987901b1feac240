"""The ``[ops]`` settings: read from TOML and the environment, bad values refused naming the key."""

import pytest

from idp.settings import OpsSettings, SettingsError, load_settings


def test_ops_defaults_serve_metrics_to_loopback_only_and_log_json():
    assert load_settings(environ={}).ops == OpsSettings(
        metrics=True, metrics_networks=("127.0.0.0/8", "::1/128"), metrics_token="", json_logs=True,
    )


def test_ops_settings_from_the_environment():
    ops = load_settings(environ={
        "IDP_OPS__METRICS": "false", "IDP_OPS__JSON_LOGS": "off", "IDP_OPS__METRICS_NETWORKS": "10.0.0.0/8,fd00::/8",
        "IDP_OPS__METRICS_TOKEN": "m" * 32,
    }).ops
    assert ops == OpsSettings(metrics=False, json_logs=False, metrics_networks=("10.0.0.0/8", "fd00::/8"),
                              metrics_token="m" * 32)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"IDP_OPS__METRICS_NETWORKS": "10.0.0.0/33"}, "ops.metrics_networks: '10.0.0.0/33' is not a CIDR network"),
        ({"IDP_OPS__METRICS_NETWORKS": "prometheus.internal"},
         "ops.metrics_networks: 'prometheus.internal' is not a CIDR network"),
        ({"IDP_OPS__METRICS_TOKEN": "short"}, "ops.metrics_token must be at least 32 characters"),
        ({"IDP_OPS__JSON_LOGS": "maybe"}, "setting ops.json_logs: cannot read 'maybe'"),
        ({"IDP_OPS__METRIC": "true"}, "unknown setting ops.metric"),
    ],
    ids=["bad-prefix-length", "hostname", "short-token", "not-a-boolean", "unknown-key"],
)
def test_bad_ops_settings_are_refused(environ, message):
    with pytest.raises(SettingsError) as refused:
        load_settings(environ=environ)
    assert str(refused.value).startswith(message)
