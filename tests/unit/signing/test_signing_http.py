"""/tsa and /signing/verify over HTTP (Flask test client), and `idp verify` on the same inputs."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess

import pytest
from asn1crypto import tsp
from click.testing import CliRunner

from idp.app import create_app
from idp.cli import main
from idp.signing.http import SIGNING_EXTENSION

DOCUMENT = b"Purchase order 42: one bicycle.\n" * 10
DIGEST = hashlib.sha256(DOCUMENT).digest()


@pytest.fixture(scope="module")
def app(world):
    app = create_app(world.settings, clock=world.clock)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def signature(world, phone) -> bytes:
    pending = world.service.prepare_cades(document_digest=DIGEST, certificate=phone.sign_certificate)
    return world.service.finish_cades(pending, phone.sign(pending.to_be_signed))


def test_app_exposes_its_signing_service(app):
    assert app.extensions[SIGNING_EXTENSION].timestamps.certificate is not None


def test_tsa_answers_an_openssl_query_that_openssl_then_verifies(world, client, tmp_path):
    openssl = shutil.which("openssl")
    assert openssl is not None
    (tmp_path / "data.txt").write_bytes(DOCUMENT)
    subprocess.run([openssl, "ts", "-query", "-data", str(tmp_path / "data.txt"), "-sha256", "-cert",
                    "-out", str(tmp_path / "q.tsq")], check=True, capture_output=True)
    response = client.post("/tsa", data=(tmp_path / "q.tsq").read_bytes(),
                           content_type="application/timestamp-query")
    assert response.status_code == 200
    assert response.mimetype == "application/timestamp-reply"
    (tmp_path / "r.tsr").write_bytes(response.data)
    done = subprocess.run(
        [openssl, "ts", "-verify", "-queryfile", str(tmp_path / "q.tsq"), "-in", str(tmp_path / "r.tsr"),
         "-CAfile", str(world.settings.instance / "pki" / "portal-root.crt.pem"),
         "-attime", str(int(world.clock.now().timestamp()) + 60)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr


def test_tsa_answers_a_malformed_query_with_a_rejection(client):
    response = client.post("/tsa", data=b"garbage", content_type="application/timestamp-query")
    assert response.status_code == 200
    from asn1crypto import core  # noqa: PLC0415

    status = tsp.PKIStatusInfo.load(core.Sequence.load(response.data)[0].dump())
    assert (status["status"].native, status["fail_info"].native) == ("rejection", {"bad_request"})


def test_tsa_refuses_another_content_type(client):
    response = client.post("/tsa", data=b"x", content_type="application/octet-stream")
    assert response.status_code == 415
    assert response.json["type"].endswith("/unsupported-media-type")


def test_tsa_refuses_an_oversized_query(client):
    response = client.post("/tsa", data=b"\x30" * 5000, content_type="application/timestamp-query")
    assert response.status_code == 413
    assert response.json["type"].endswith("/request-too-large")


def _verify(client, **parts):
    data = {name: (io.BytesIO(value), name) if isinstance(value, bytes) else value for name, value in parts.items()}
    return client.post("/signing/verify", data=data, content_type="multipart/form-data")


def test_verify_endpoint_accepts_the_signature_with_its_document(client, phone, signature):
    response = _verify(client, signature=signature, document=DOCUMENT)
    assert response.status_code == 200
    assert response.json["valid"] is True
    assert response.json["document_digest"] == {"alg": "sha256", "value": DIGEST.hex()}
    assert response.json["signer"]["serial_number"] == format(phone.sign_certificate.serial_number, "X")


def test_verify_endpoint_accepts_the_signature_with_the_hex_digest(client, signature):
    assert _verify(client, signature=signature, digest=DIGEST.hex()).json["valid"] is True


@pytest.mark.parametrize(("parts", "reason"), [
    ({"document": DOCUMENT + b"!"}, "document_modified"),
    ({"digest": hashlib.sha256(b"x").hexdigest()}, "digest_mismatch"),
], ids=["tampered-document", "other-digest"])
def test_verify_endpoint_reports_the_reason(client, signature, parts, reason):
    response = _verify(client, signature=signature, **parts)
    assert response.status_code == 200
    assert (response.json["valid"], response.json["reason"]) == (False, reason)


def test_verify_endpoint_reports_a_malformed_signature(client):
    response = _verify(client, signature=b"not CMS", document=DOCUMENT)
    assert (response.status_code, response.json["reason"]) == (200, "malformed")


@pytest.mark.parametrize("parts", [
    {},
    {"document": DOCUMENT},
    {"signature": b"x", "pdf": b"y"},
], ids=["nothing", "document-only", "two-things"])
def test_verify_endpoint_refuses_a_request_that_names_no_one_thing(client, parts):
    response = _verify(client, **parts)
    assert response.status_code == 400
    assert response.json["type"].endswith("/bad-request")


def test_verify_endpoint_refuses_a_bad_hex_digest(client, signature):
    response = _verify(client, signature=signature, digest="zz")
    assert response.status_code == 400


def test_verify_endpoint_refuses_an_oversized_document(world, client, signature):
    response = _verify(client, signature=signature, document=b"\x00" * (world.settings.signing.max_document_bytes + 1))
    assert response.status_code == 413
    assert response.json["type"].endswith("/request-too-large")


def test_verify_endpoint_refuses_json(client):
    response = client.post("/signing/verify", json={"signature": "x"})
    assert response.status_code == 415


def test_idp_verify_reports_valid_and_invalid_offline(world, signature, tmp_path):
    (tmp_path / "sig.der").write_bytes(signature)
    (tmp_path / "doc.txt").write_bytes(DOCUMENT)
    (tmp_path / "bad.txt").write_bytes(DOCUMENT + b"!")
    root = str(world.settings.instance / "pki" / "portal-root.crt.pem")
    runner = CliRunner()
    good = runner.invoke(main, ["verify", "--signature", str(tmp_path / "sig.der"), "--document",
                                str(tmp_path / "doc.txt"), "--root", root, "--json"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)["valid"] is True
    bad = runner.invoke(main, ["verify", "--signature", str(tmp_path / "sig.der"), "--document",
                               str(tmp_path / "bad.txt"), "--root", root])
    assert bad.exit_code == 1
    assert bad.output.startswith("invalid: document_modified")


def test_idp_verify_needs_one_thing_to_verify(tmp_path):
    result = CliRunner().invoke(main, ["verify", "--instance", str(tmp_path)])
    assert result.exit_code == 2


def test_verify_endpoint_judges_a_signed_pdf_and_an_assertion(world, client, phone, signature):
    from test_pades_signing import PDF  # noqa: PLC0415

    pending = world.service.prepare_pades(pdf=PDF, certificate=phone.sign_certificate)
    signed_pdf = world.service.finish_pades(pending, phone.sign(pending.to_be_signed))
    assert _verify(client, pdf=signed_pdf).json["valid"] is True
    assert _verify(client, pdf=b"not a pdf").json["reason"] == "malformed"

    from idp.signing import SignedDocument  # noqa: PLC0415

    verification = world.service.verify_cades(signature=signature, document=DOCUMENT)
    token = world.service.make_assertion(client_id="shop", subject="sub", documents=[
        SignedDocument(label="po.txt", digest=DIGEST, signature_format="cades", verification=verification),
    ])
    assert _verify(client, assertion=token, document=DOCUMENT).json["valid"] is True
    assert _verify(client, assertion=token, document=b"other").json["reason"] == "digest_mismatch"


def test_idp_verify_reads_a_pdf_an_assertion_and_a_digest(world, phone, signature, tmp_path):
    from test_pades_signing import PDF  # noqa: PLC0415

    from idp.signing import SignedDocument  # noqa: PLC0415

    pending = world.service.prepare_pades(pdf=PDF, certificate=phone.sign_certificate)
    (tmp_path / "signed.pdf").write_bytes(world.service.finish_pades(pending, phone.sign(pending.to_be_signed)))
    verification = world.service.verify_cades(signature=signature, document=DOCUMENT)
    token = world.service.make_assertion(client_id="shop", subject="sub", documents=[
        SignedDocument(label="po.txt", digest=DIGEST, signature_format="cades", verification=verification),
    ])
    (tmp_path / "assertion.jwt").write_text(token)
    (tmp_path / "jwks.json").write_text(json.dumps(world.service.jwks()))
    (tmp_path / "sig.der").write_bytes(signature)
    root = str(world.settings.instance / "pki" / "portal-root.crt.pem")
    runner = CliRunner()
    instance = ["--instance", str(world.settings.instance)]
    assert runner.invoke(main, ["verify", "--pdf", str(tmp_path / "signed.pdf"), "--root", root]).exit_code == 0
    result = runner.invoke(main, ["verify", *instance, "--assertion", str(tmp_path / "assertion.jwt"),
                                  "--jwks", str(tmp_path / "jwks.json")])
    assert result.exit_code == 0, result.output
    assert runner.invoke(main, ["verify", *instance, "--signature", str(tmp_path / "sig.der"),
                                "--digest", DIGEST.hex()]).exit_code == 0
    bad = runner.invoke(main, ["verify", *instance, "--signature", str(tmp_path / "sig.der"), "--digest", "zz"])
    assert (bad.exit_code, bad.output.split(" ")[:2]) == (1, ["invalid:", "malformed"])
