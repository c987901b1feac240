"""``myna-demo`` on free ports: set up from nothing, start the four servers, log in at the demo RP by
approving on the phone screen over HTTP, then stop it and find every child gone. Then README's life
event, moving house, run command for command: the phone is asked to renew its signature key, and the
shop sees the same ``sub`` with the new address."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

BIN = Path(sys.executable).parent
MYNA_DEMO = BIN / "myna-demo"
README = Path(__file__).resolve().parents[2] / "README.md"
OLD_ADDRESS, NEW_ADDRESS = "東京都千代田区永田町1-7-1", "大阪府大阪市北区中之島1-3-20"


@pytest.fixture(autouse=True)
def _installed() -> None:
    """The console script comes with the package (`make` installs it): without it the setup is broken."""
    if not MYNA_DEMO.is_file():
        pytest.fail(f"{MYNA_DEMO} is missing: install the project with `pip install -e .` (or `make`)", pytrace=False)


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


def readme_life_event() -> list[list[str]]:
    """The commands of README's "Try a life event: moving house", as a shell would split them."""
    text = README.read_text(encoding="utf-8")
    section = text.split("#### Try a life event: moving house", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def shop_login(rp_url: str, portal_url: str, phone_url: str, screen: requests.Session, token: str,
               *, renew: bool = False) -> str:
    """Log in at the shop in a new browser, approving on the phone screen (renewing the key first when asked)."""
    browser = requests.Session()
    login = browser.post(rp_url + "/login", timeout=10)
    link = re.search(r'id="same-device" href="([^"]+)"', login.text).group(1).replace("&amp;", "&")
    transaction = screen.post(phone_url + "/scan", timeout=10, data={"form_token": token, "code": link}).text
    action = re.search(r'action="(/transactions/[^"]+)"', transaction).group(1)
    answer = screen.post(phone_url + action, timeout=30, data={"form_token": token, "action": "approve"}).text
    if renew:
        assert 'data-view="renew"' in answer, answer
        assert "Your address changed: tap your card to renew the signature key." in answer
        renewed = screen.post(phone_url + "/signature-key", timeout=30, data={
            "form_token": token, "card": "taro", "sign_pin": "TARO2024",
            "transaction_id": action.rsplit("/", 1)[1]}).text
        assert "Signature key renewed." in renewed, renewed
        answer = screen.post(phone_url + action, timeout=30, data={"form_token": token, "action": "approve"}).text
    assert "Approved: Demo Shop" in answer, answer
    continue_url = re.search(r'data-continue-url="([^"]+)"', login.text).group(1)
    landed = browser.get(portal_url + continue_url, timeout=20)
    assert landed.url == rp_url + "/", landed.url
    return landed.text


def cell(page: str, name: str) -> str:
    return re.search(rf"<th>{name}</th><td>([^<]*)</td>", page).group(1)


def test_the_readme_life_event_keeps_the_person_with_the_new_address(tmp_path):
    commands = readme_life_event()
    assert [command[0] for command in commands] == [".venv/bin/smartphone", ".venv/bin/myna-demo"]
    assert commands[0][1:3] == ["card", "move"]
    assert commands[1][1:] == ["sync"]
    jlis, portal, rp, phone = free_ports(4)
    output = tmp_path / "demo.out"
    with output.open("wb") as sink:  # in tmp_path, as README's commands run in the directory of .demo
        process = subprocess.Popen(
            [str(MYNA_DEMO), "--jlis-port", str(jlis), "--portal-port", str(portal), "--rp-port", str(rp),
             "--phone-port", str(phone)], cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        text = wait_for_ready(process, output)
        assert "  myna-demo sync\n" in text
        portal_url, rp_url, phone_url = (f"http://127.0.0.1:{port}" for port in (portal, rp, phone))
        screen = requests.Session()
        home = screen.get(phone_url + "/", timeout=10).text
        token = form_token(home)
        enrolled = screen.post(phone_url + "/enroll", timeout=30, data={
            "form_token": token, "card": "taro", "auth_pin": "1234", "sign_pin": "TARO2024"}).text
        assert "Enrolled as device" in enrolled, enrolled
        before = shop_login(rp_url, portal_url, phone_url, screen, token)
        assert OLD_ADDRESS in cell(before, "address")

        for command in commands:  # exactly README's steps
            done = subprocess.run([str(BIN / Path(command[0]).name), *command[1:]], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
        assert "revoked 1 smartphone certificates issued from revoked card certificates" in done.stdout, done.stdout

        after = shop_login(rp_url, portal_url, phone_url, screen, token, renew=True)
        assert cell(after, "sub") == cell(before, "sub")
        assert NEW_ADDRESS in cell(after, "address")
        assert 'id="user-name">山田\u3000太郎<' in after
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, output.read_text(encoding="utf-8")
