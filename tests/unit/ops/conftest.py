"""An initialised portal instance (SQLite, in-process store) and apps built on it with chosen ops settings."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from idp.app import create_app
from idp.clock import FixedClock
from idp.oidc.keys import init_signing_keys
from idp.pki.service import init_pki
from idp.settings import OpsSettings, Settings
from idp.store.database import make_engine, upgrade

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from flask import Flask

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def now() -> datetime:
    """The time on the apps' fixed clock."""
    return NOW


@pytest.fixture(scope="module")
def pristine_instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``idp init`` of an instance, made once per module; tests work on copies."""
    instance = tmp_path_factory.mktemp("ops") / "instance"
    instance.mkdir()
    engine = make_engine(Settings(instance=instance).effective_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    init_pki(instance, issuer_url="http://127.0.0.1:8000", now=NOW - timedelta(hours=1))
    init_signing_keys(instance)
    return instance


@pytest.fixture
def instance(pristine_instance: Path, tmp_path: Path) -> Path:
    """A copy of the initialised instance that the test may change."""
    copy = tmp_path / "instance"
    shutil.copytree(pristine_instance, copy)
    return copy


@pytest.fixture
def make_app(instance: Path) -> Callable[..., Flask]:
    """``make_app(ops=..., clock=..., **settings)``: the portal on the instance copy."""
    def make(*, ops: OpsSettings | None = None, clock: FixedClock | None = None, **fields: object) -> Flask:
        settings = dataclasses.replace(Settings(instance=instance), ops=ops or OpsSettings(), **fields)
        return create_app(settings, clock=clock or FixedClock(NOW))
    return make
