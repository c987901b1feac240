"""Sign a document in a real browser: Debian Chromium, driven by Playwright, on the demo RP's Sign page.

RP "Sign a document" → the browser uploads a PDF (or a text file) → the RP pushes the signing
request (PAR, RFC 9396) → the portal's login page lists the document → the simulated phone, in the
test process, scans the QR code the page drew, sees the document and approves → the browser lands
on the RP's result page, which shows the document "valid" (screenshot saved under ``test-output/``
and the test's ``tmp_path``) → the browser downloads the signed PDF (judged by pyHanko: intact,
trusted with the portal root, timestamped) or the detached CAdES ``.p7s`` (judged by
``openssl cms -verify``). Same world and browser as ``test_login_browser.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import test_login_browser as login_browser
from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from documents import one_page_pdf
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.dss import DocumentSecurityStore
from test_login_browser import SCREENSHOTS, scan

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

# The browser and the world of the login browser test (a world of this module's own).
chromium, world = login_browser.chromium, login_browser.world

TEXT = "賃貸借契約書 / Lease contract, flat 302: the tenant agrees to every clause.\n".encode()
SLOW = 120_000
"""ms for the phone's approval to reach the result page: the portal assembles, timestamps and checks each
signature, then the RP has the portal verify them again (seconds on a busy 2-core machine)."""




PDF = one_page_pdf("Terms of sale: the buyer agrees to every clause.")


def portal_root(world) -> Path:
    """The portal root certificate (PEM) of the world's instance."""
    return world.portal.directory / "instance" / "pki" / "portal-root.crt.pem"


def sign_in_browser(chromium, world, tmp_path, *, name: str, content: bytes, mime_type: str, shot: str):
    """Upload ``content`` on the Sign page, approve on the phone; the browser context and its result page."""
    context = chromium.new_context(locale="ja-JP", accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(world.rp_url + "/")
    page.click("#sign-link")
    page.set_input_files("#documents", files=[{"name": name, "mimeType": mime_type, "buffer": content}])
    page.click("#sign")
    page.wait_for_url(f"{world.portal.url}/authorize?**")
    page.wait_for_selector("#qr", state="visible")
    assert page.text_content("#rp-name") == "Demo Shop"
    assert name in page.content()  # the login page lists what is to be signed

    phone = world.phone
    transaction = phone.client.lookup_transaction(qr=scan(page.locator("#qr").screenshot()),
                                                  credential_id=phone.enrollment.auth_credential_id)
    assert transaction["kind"] == "signing"
    assert transaction["verification_code"] == page.text_content("#verification-code")
    assert [(entry["label"], entry["digest_prefix"]) for entry in transaction["documents"]] == [
        (name, hashlib.sha256(content).hexdigest()[:16])]
    assert phone.approve(transaction) == {"status": "approved"}

    page.wait_for_url(world.rp_url + "/sign/results/**", timeout=SLOW)
    SCREENSHOTS.mkdir(exist_ok=True)
    picture = page.screenshot(path=tmp_path / shot, full_page=True)
    (SCREENSHOTS / shot).write_bytes(picture)
    assert page.text_content("#document-1 .verdict") == "valid"
    assert page.text_content("#document-1 .label") == name
    assert page.text_content("#document-1 .hash") == hashlib.sha256(content).hexdigest()
    assert page.text_content("#assertion-verdict") == "valid"
    assert page.text_content("#signer-name") == "山田\u3000太郎"
    return context, page


def download(page, selector: str, tmp_path: Path) -> tuple[str, bytes]:
    """Click the download link ``selector``; the file name the RP gave and the bytes."""
    with page.expect_download() as started:
        page.click(selector)
    downloaded = started.value
    target = tmp_path / downloaded.suggested_filename
    downloaded.save_as(target)
    return downloaded.suggested_filename, target.read_bytes()


def test_pdf_signed_on_the_phone_is_valid_and_its_download_passes_pyhanko(chromium, world, tmp_path):
    context, page = sign_in_browser(chromium, world, tmp_path, name="terms.pdf", content=PDF,
                                    mime_type="application/pdf", shot="sign-result-pdf.png")
    try:
        assert page.locator("#download-p7s-1").count() == 0
        filename, signed_pdf = download(page, "#download-pdf-1", tmp_path)
    finally:
        context.close()
    assert filename == "terms-signed.pdf"
    assert signed_pdf.startswith(PDF)  # the signature is an incremental update of the PDF uploaded

    reader = PdfFileReader(io.BytesIO(signed_pdf))
    [embedded] = reader.embedded_signatures
    dss = DocumentSecurityStore.read_dss(reader)
    root = asn1_x509.Certificate.load(pem.unarmor(portal_root(world).read_bytes())[2])

    def context_of_the_pdf():  # its own DSS and the root alone: nothing fetched, revocation required
        return dss.as_validation_context({"trust_roots": [root], "allow_fetching": False,
                                          "revocation_mode": "hard-fail", "moment": datetime.now(UTC)})

    validation = async_validate_pdf_signature(embedded, signer_validation_context=context_of_the_pdf(),
                                              ts_validation_context=context_of_the_pdf())
    with ThreadPoolExecutor(max_workers=1) as thread:  # Playwright's sync API holds this thread's event loop
        status = thread.submit(asyncio.run, validation).result(timeout=120)
    assert status.intact, status.pretty_print_details()
    assert status.trusted, status.pretty_print_details()
    assert status.timestamp_validity is not None, status.pretty_print_details()
    assert status.timestamp_validity.intact
    assert status.timestamp_validity.trusted
    assert status.bottom_line, status.pretty_print_details()
    assert x509.load_der_x509_certificate(status.signing_cert.dump()) == world.phone.enrollment.sign_certificate


def test_text_signed_on_the_phone_is_valid_and_its_p7s_passes_openssl(chromium, world, tmp_path):
    context, page = sign_in_browser(chromium, world, tmp_path, name="contract.txt", content=TEXT,
                                    mime_type="text/plain", shot="sign-result-text.png")
    try:
        assert page.locator("#download-pdf-1").count() == 0
        filename, signature = download(page, "#download-p7s-1", tmp_path)
        assert signature[:1] == b"\x30"  # DER: a ContentInfo SEQUENCE
        assertion_name, assertion = download(page, "#download-assertion", tmp_path)
    finally:
        context.close()
    assert (filename, assertion_name) == ("contract.txt.p7s", "assertion.jwt")
    assert assertion.count(b".") == 2  # a compact JWS
    openssl = shutil.which("openssl")
    assert openssl is not None, "the test needs the openssl command"
    (tmp_path / "contract.txt").write_bytes(TEXT)
    done = subprocess.run(
        [openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / filename),
         "-content", str(tmp_path / "contract.txt"), "-CAfile", str(portal_root(world)), "-out", "/dev/null"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Verification successful" in done.stderr
    (tmp_path / "contract.txt").write_bytes(TEXT.replace(b"302", b"303"))  # and a changed text fails
    changed = subprocess.run(
        [openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / filename),
         "-content", str(tmp_path / "contract.txt"), "-CAfile", str(portal_root(world)), "-out", "/dev/null"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert changed.returncode != 0
