"""docs/events.md names every rejection reason an operator can find in the log."""

from pathlib import Path

import pytest

from idp.ceremonies import enrollment_errors, login

EVENTS = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("reason", [*login.Reason, *enrollment_errors.Reason], ids=lambda reason: reason.value)
def test_every_rejection_reason_is_documented(reason):
    assert f"`{reason.value}`" in EVENTS
