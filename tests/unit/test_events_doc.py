"""docs/events.md names every rejection reason an operator can find in the log."""

import re
from pathlib import Path

import pytest

from idp.ceremonies import enrollment_errors, login

EVENTS = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("reason", [*login.Reason, *enrollment_errors.Reason], ids=lambda reason: reason.value)
def test_every_rejection_reason_is_documented(reason):
    assert f"`{reason.value}`" in EVENTS


LOGGED = re.compile(r"""\b(?:logger|log)\.(?:debug|info|warning|error|exception)\(\s*["']([a-z_]+\.[a-z_.]+)[ "']""")
SOURCES = sorted((Path(__file__).resolve().parents[2] / "idp").rglob("*.py"))


@pytest.mark.parametrize("event", sorted({
    found for source in SOURCES for found in LOGGED.findall(source.read_text(encoding="utf-8"))
}))
def test_every_logged_event_is_documented(event):
    assert f"`{event}`" in EVENTS, f"docs/events.md has no row for {event}"
