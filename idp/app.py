"""The portal's Flask application factory: ``create_app(settings)`` wires services and blueprints.

Nothing runs at import time; each test builds its own app with its own settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from idp.clock import Clock, SystemClock
from idp.pki.http import create_blueprint as create_pki_blueprint
from idp.pki.service import PortalPki
from idp.settings import Settings
from idp.store.database import make_engine, make_session_factory
from idp.store.ephemeral import EphemeralStore, open_ephemeral_store
from idp.web.problems import serve_problems

__all__ = ["Services", "create_app", "services"]

EXTENSION = "myna"


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """What the request handlers share: settings, clock, stores. One per app."""

    settings: Settings
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]
    ephemeral: EphemeralStore
    pki: PortalPki


def services(app: Flask) -> Services:
    """The services of ``app`` (or of ``flask.current_app`` passed in)."""
    found: Services = app.extensions[EXTENSION]
    return found


def create_app(settings: Settings, *, clock: Clock | None = None) -> Flask:
    """Build the portal for an instance that ``idp init`` has created."""
    app = Flask("idp", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    engine = make_engine(settings.effective_database_url)
    sessions = make_session_factory(engine)
    shared_clock = clock or SystemClock()
    pki = PortalPki(settings=settings, sessions=sessions, clock=shared_clock)
    app.extensions[EXTENSION] = Services(
        settings=settings,
        clock=shared_clock,
        engine=engine,
        sessions=sessions,
        ephemeral=open_ephemeral_store(settings.redis_url, clock=clock),
        pki=pki,
    )
    app.register_blueprint(create_pki_blueprint(pki), url_prefix="/pki")
    serve_problems(app, "/pki")
    return app
