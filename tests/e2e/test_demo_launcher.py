"""``myna-demo`` on free ports: set up from nothing, start the four servers, log in at the demo RP by
approving on the phone screen over HTTP, then stop it and find every child gone."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

MYNA_DEMO = Path(sys.executable).parent / "myna-demo"


def free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    try:
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def form_token(page: str) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', page).group(1)


def wait_for_ready(process: subprocess.Popen, output: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = output.read_text(encoding="utf-8")
        if "Ctrl-C stops everything." in text:
            return text
        assert process.poll() is None, text
        time.sleep(0.2)
    pytest.fail(output.read_text(encoding="utf-8"))


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(not MYNA_DEMO.is_file(), reason="myna-demo is not installed (pip install -e .)")
def test_the_demo_logs_a_person_in_and_stops_cleanly(tmp_path):
    jlis, portal, rp, phone = free_ports(4)
    output = tmp_path / "demo.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [str(MYNA_DEMO), "--dir", str(tmp_path / "demo"), "--jlis-port", str(jlis), "--portal-port", str(portal),
             "--rp-port", str(rp), "--phone-port", str(phone)],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        text = wait_for_ready(process, output)
        pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", text)]
        assert len(pids) == 4
        assert "authentication PIN 1234, signature PIN TARO2024" in text
        assert (tmp_path / "demo" / "passphrase").stat().st_mode & 0o777 == 0o600

        browser, screen = requests.Session(), requests.Session()
        phone_url, rp_url = f"http://127.0.0.1:{phone}", f"http://127.0.0.1:{rp}"
        home = screen.get(phone_url + "/", timeout=10).text
        enrolled = screen.post(phone_url + "/enroll", timeout=30, data={
            "form_token": form_token(home), "card": "taro", "auth_pin": "1234", "sign_pin": "TARO2024"}).text
        assert "Enrolled as device" in enrolled, enrolled

        login = browser.post(rp_url + "/login", timeout=10)
        assert login.url.startswith(f"http://127.0.0.1:{portal}/authorize"), login.url
        link = re.search(r'id="same-device" href="([^"]+)"', login.text).group(1).replace("&amp;", "&")
        transaction = screen.post(phone_url + "/scan", timeout=10,
                                  data={"form_token": form_token(home), "code": link}).text
        assert 'id="rp-name">Demo Shop<' in transaction
        action = re.search(r'action="(/transactions/[^"]+)"', transaction).group(1)
        approved = screen.post(phone_url + action, timeout=10,
                               data={"form_token": form_token(home), "action": "approve"}).text
        assert "Approved: Demo Shop" in approved, approved

        continue_url = re.search(r'data-continue-url="([^"]+)"', login.text).group(1)
        landed = browser.get(f"http://127.0.0.1:{portal}{continue_url}", timeout=20)
        assert landed.url == rp_url + "/", landed.url
        assert 'id="user-name">山田\u3000太郎<' in landed.text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, output.read_text(encoding="utf-8")
    assert all(gone(pid) for pid in pids)
    assert output.read_text(encoding="utf-8").count("  stopped ") == 4
