"""Request ids: accepted when well formed, generated otherwise, echoed, and seen by handlers and logs."""

import json
import logging

import pytest
from flask import Flask, request

from idp.ops.logging import JsonFormatter
from idp.ops.request_id import HEADER, RequestIdMiddleware, current_request_id


@pytest.fixture
def app():
    app = Flask("request_id_test")

    @app.get("/echo")
    def echo():
        # What a handler reading the header itself (the device API's events) sees.
        return {"header": request.headers.get(HEADER), "context": current_request_id()}

    app.wsgi_app = RequestIdMiddleware(app.wsgi_app)
    return app


def test_a_well_formed_incoming_id_is_kept_and_echoed(app):
    response = app.test_client().get("/echo", headers={HEADER: "proxy-7f3a.01_B"})
    assert response.headers[HEADER] == "proxy-7f3a.01_B"
    assert response.json == {"header": "proxy-7f3a.01_B", "context": "proxy-7f3a.01_B"}


@pytest.mark.parametrize(
    "incoming",
    ["", "a" * 65, "has space", "semi;colon", "new\u2028line", "ｆｕｌｌ"],
    ids=["empty", "too-long", "space", "semicolon", "line-separator", "full-width"],
)
def test_a_malformed_incoming_id_is_replaced_everywhere(app, incoming):
    response = app.test_client().get("/echo", headers={HEADER: incoming})
    generated = response.headers[HEADER]
    assert generated != incoming
    assert len(generated) == 16
    assert int(generated, 16) >= 0
    assert response.json == {"header": generated, "context": generated}


def test_each_request_without_an_id_gets_its_own(app):
    client = app.test_client()
    ids = {client.get("/echo").headers[HEADER] for _ in range(5)}
    assert len(ids) == 5


def test_the_id_is_gone_after_the_request(app):
    app.test_client().get("/echo", headers={HEADER: "abc"})
    assert current_request_id() is None


def test_log_records_written_during_the_request_carry_its_id(app):
    lines = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(JsonFormatter().format(record))

    @app.get("/event")
    def event():
        logging.getLogger("idp.test").warning("login.rejected reason=bad_signature transaction=t1")
        return "ok"

    handler = Capture()
    logging.getLogger("idp.test").addHandler(handler)
    try:
        app.test_client().get("/event", headers={HEADER: "rid-1"})
    finally:
        logging.getLogger("idp.test").removeHandler(handler)
    assert json.loads(lines[0])["request_id"] == "rid-1"
