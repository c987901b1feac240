"""Log in with My Number in a real browser: Debian Chromium driven by Playwright.

RP home → "Log in with My Number" → the portal's login page with its QR code (screenshot saved
under ``test-output/`` and the test's ``tmp_path``) → the simulated phone, in the test process,
scans the QR payload and approves → the page's own script sees the approval and continues → the
browser lands on the RP showing the user's name. Same world as ``test_login_e2e.py``.

Runs in CI, where ``.ci/run`` installs Chromium; locally it is skipped, saying why, when Chromium
or Playwright is missing. With ``CI=true`` a missing browser fails the test instead.
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from world import ROOT, TARO, login_world

from idp.web.login import MESSAGES

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = ROOT / "test-output"


@pytest.fixture(scope="module")
def chromium():
    missing = [what for what, absent in (
        (f"Chromium ({CHROMIUM}; `apt-get install -y chromium`)", not CHROMIUM.exists()),
        ("Playwright for Python (`.venv/bin/pip install playwright`; never `playwright install`)",
         importlib.util.find_spec("playwright") is None),
    ) if absent]
    if missing:
        message = f"the browser test needs {' and '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only once we know it is installed

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def world(chromium, tmp_path_factory, postgres_url, redis_url):
    with login_world(tmp_path_factory.mktemp("login-browser"), admin_database_url=postgres_url,
                     redis_url=redis_url) as world:
        yield world


def scan(png: bytes) -> str:
    """The text of the one QR code in the picture (zxing-cpp)."""
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)), formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(found) == 1, f"expected one QR code in the picture, found {len(found)}"
    return found[0].text


def test_browser_login_approved_on_the_phone_lands_on_the_rp_with_the_name(chromium, world, tmp_path):
    context = chromium.new_context(locale="ja-JP")
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(world.rp_url + "/")
        page.click("#login")
        page.wait_for_url(f"{world.portal.url}/authorize?**")
        page.wait_for_selector("#qr", state="visible")
        assert page.text_content("#rp-name") == "Demo Shop"
        SCREENSHOTS.mkdir(exist_ok=True)
        shot = page.screenshot(path=tmp_path / "login-page.png", full_page=True)
        (SCREENSHOTS / "login-page.png").write_bytes(shot)

        scanned = scan(page.locator("#qr").screenshot())  # the code the page drew, read as a camera would
        assert scanned.startswith("myna.")
        transaction = world.phone.lookup(scanned)
        assert transaction["verification_code"] == page.text_content("#verification-code")
        assert world.phone.approve(transaction) == {"status": "approved"}

        page.wait_for_url(world.rp_url + "/")
        assert page.text_content("#user-name") == TARO.name
    finally:
        context.close()


def test_login_page_says_so_while_the_portal_is_unavailable_and_recovers(chromium, world):
    context = chromium.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        outage = {"on": True}

        def status(route):
            if outage["on"]:
                route.fulfill(status=503, headers={"Retry-After": "5"}, content_type="application/json",
                              body='{"error": "temporarily_unavailable"}')
            else:
                route.continue_()

        page.route("**/login/*/status", status)
        page.goto(world.rp_url + "/")
        page.click("#login")
        showing = "words => words.includes(document.getElementById('status').textContent)"
        page.wait_for_function(showing, arg=[words["unavailable"] for words in MESSAGES.values()])
        outage["on"] = False  # the next poll gets through: the page waits for the phone again
        page.wait_for_function(showing, arg=[words["pending"] for words in MESSAGES.values()])
    finally:
        context.close()
