"""Events as JSON records, and access lines that never hold a query string or a header."""

import json
import logging
import logging.config
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from idp.ops.access_log import JsonAccessLogger, TextAccessLogger
from idp.ops.logging import JsonFormatter, RequestIdFilter, TextFormatter, logging_config, parse_event

SECRET = "SECRETVALUE"


def record(message, *args, level=logging.WARNING, exc_info=None):
    return logging.LogRecord("idp.ceremonies", level, __file__, 1, message, args, exc_info)


@pytest.mark.parametrize(
    ("message", "event", "fields"),
    [
        ("login.rejected reason=bad_signature transaction=t1", "login.rejected",
         {"reason": "bad_signature", "transaction": "t1"}),
        ("enrollment.rejected reason=card_certificate_revoked subject='CN=Yamada Taro, O=JPKI' request_id=r1",
         "enrollment.rejected",
         {"reason": "card_certificate_revoked", "subject": "'CN=Yamada Taro, O=JPKI'", "request_id": "r1"}),
        ("login.declined", "login.declined", {}),
        ("unexpected error answering GET /token", None, {}),
        ("a=b c=d", None, {}),
    ],
    ids=["fields", "value-with-spaces", "no-fields", "not-an-event", "no-event-name"],
)
def test_event_lines_split_into_name_and_fields(message, event, fields):
    assert parse_event(message) == (event, fields)


def test_json_record_keeps_the_event_line_and_its_parts():
    document = json.loads(JsonFormatter().format(record("login.rejected reason=%s transaction=%s", "malformed", "t9")))
    assert document["event"] == "login.rejected"
    assert document["fields"] == {"reason": "malformed", "transaction": "t9"}
    assert document["message"] == "login.rejected reason=malformed transaction=t9"
    assert document["level"] == "warning"
    assert document["logger"] == "idp.ceremonies"
    assert document["request_id"] is None
    assert document["time"].endswith("Z")


def test_json_record_carries_the_traceback_of_an_error():
    try:
        int("boom")
    except ValueError:
        failed = record("oidc.server_error %s %s", "POST", "/token", level=logging.ERROR, exc_info=sys.exc_info())
    document = json.loads(JsonFormatter().format(failed))
    assert "ValueError: invalid literal" in document["exception"]


def test_text_record_names_the_request_id():
    annotated = record("login.declined transaction=%s", "t2")
    RequestIdFilter().filter(annotated)
    assert TextFormatter().format(annotated).endswith("login.declined transaction=t2 request_id=None")


def test_logging_config_is_accepted_by_dictconfig_in_both_modes():
    for json_logs in (True, False):
        config = logging_config(json_logs=json_logs)
        assert config["handlers"]["events"]["formatter"] == ("json" if json_logs else "text")
        logging.config.dictConfig({**config, "root": {"level": "WARNING", "handlers": []}, "loggers": {}})


def gunicorn_logger(cls):
    config = Config()
    config.set("accesslog", "-")
    logger = cls(config)
    lines = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger.access_log.addHandler(Capture())
    return logger, lines


def sensitive_request():
    """/authorize?code=... with an Authorization header, a cookie and a Referer, all carrying secrets."""
    environ = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/authorize",
        "QUERY_STRING": f"client_id=c&code={SECRET}&state={SECRET}&login_hint={SECRET}",
        "RAW_URI": f"/authorize?code={SECRET}", "REMOTE_ADDR": "192.0.2.10",
        "HTTP_AUTHORIZATION": f"Bearer {SECRET}", "HTTP_COOKIE": f"myna_browser={SECRET}",
        "HTTP_REFERER": f"https://rp.example/cb?code={SECRET}", "HTTP_X_REQUEST_ID": "rid-42",
    }
    request = SimpleNamespace(method="GET", path="/authorize", query=environ["QUERY_STRING"], uri=environ["RAW_URI"],
                              headers=[("AUTHORIZATION", f"Bearer {SECRET}")], version=(1, 1))
    response = SimpleNamespace(status_code=302, status="302 FOUND", sent=0, headers=[])
    return response, request, environ


def test_json_access_line_has_no_query_string_header_or_referer():
    logger, lines = gunicorn_logger(JsonAccessLogger)
    response, request, environ = sensitive_request()
    logger.access(response, request, environ, timedelta(milliseconds=3))
    assert len(lines) == 1
    assert SECRET not in lines[0]
    document = json.loads(lines[0])
    assert {key: document[key] for key in ("event", "method", "path", "status", "remote", "request_id")} == {
        "event": "http.request", "method": "GET", "path": "/authorize", "status": 302, "remote": "192.0.2.10",
        "request_id": "rid-42",
    }
    assert document["duration_ms"] == 3.0


def test_text_access_line_has_no_query_string_header_or_referer():
    logger, lines = gunicorn_logger(TextAccessLogger)
    response, request, environ = sensitive_request()
    logger.access(response, request, environ, timedelta(milliseconds=3))
    assert lines == ['192.0.2.10 "GET /authorize" 302 0 3.000ms request_id=rid-42']
