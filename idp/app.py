"""The portal's Flask application factory: ``create_app(settings)`` wires services and blueprints.

Nothing runs at import time; each test builds its own app with its own settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from idp.ceremonies.approval import ApprovalService, ApprovalSettings
from idp.ceremonies.device_api import PREFIX as DEVICE_PREFIX
from idp.ceremonies.device_api import create_blueprint as create_device_blueprint
from idp.ceremonies.device_management import DEVICE_MANAGEMENT_EXTENSION, DeviceManagement
from idp.ceremonies.device_management import create_blueprint as create_management_blueprint
from idp.ceremonies.device_transactions import APPROVAL_EXTENSION
from idp.ceremonies.device_transactions import create_blueprint as create_transactions_blueprint
from idp.ceremonies.devices import SqlDeviceDirectory
from idp.ceremonies.enrollment_service import EnrollmentService
from idp.ceremonies.phone_life import PHONE_LIFE_EXTENSION, CardCheck, PhoneLife
from idp.ceremonies.phone_life import create_blueprint as create_phone_life_blueprint
from idp.ceremonies.signature_key import SignatureKeys
from idp.ceremonies.signature_key import create_blueprint as create_signature_key_blueprint
from idp.clock import Clock, SystemClock
from idp.oidc.http import register_oidc
from idp.oidc.keys import open_at_start_up
from idp.oidc.provider import OidcProvider
from idp.ops.connections import drop_closed_connections
from idp.ops.http import register_ops
from idp.ops.rate_limits import RateLimiter, register_rate_limits
from idp.ops.unavailable import internal_error, register_unavailable_handler, unavailable_json
from idp.pki.http import create_blueprint as create_pki_blueprint
from idp.pki.service import PortalPki
from idp.settings import Settings
from idp.signing.flow import SIGNING_FLOW_EXTENSION, SigningFlow
from idp.signing.http import SIGNING_EXTENSION
from idp.signing.http import create_blueprint as create_signing_blueprint
from idp.signing.results import SigningResults
from idp.signing.results_http import create_results_blueprint
from idp.signing.service import SigningService
from idp.store.database import make_engine, make_session_factory
from idp.store.ephemeral import EphemeralStore, open_ephemeral_store
from idp.web.problems import serve_problems
from idp.webhooks.outbox import WebhookOutbox

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
    oidc: OidcProvider
    """The OpenID Connect provider: clients, keys, transactions, codes, tokens, grants."""


def services(app: Flask) -> Services:
    """The services of ``app`` (or of ``flask.current_app`` passed in)."""
    found: Services = app.extensions[EXTENSION]
    return found


def create_app(settings: Settings, *, clock: Clock | None = None) -> Flask:
    """Build the portal for an instance that ``idp init`` has created."""
    app = Flask("idp", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    engine = make_engine(settings.effective_database_url)
    drop_closed_connections(engine)  # after an outage, no request fails on a dead pooled connection
    sessions = make_session_factory(engine)
    shared_clock = clock or SystemClock()
    pki = PortalPki(settings=settings, sessions=sessions, clock=shared_clock)
    ephemeral = open_ephemeral_store(settings.redis_url, prefix=settings.redis_prefix, clock=clock)
    oidc = OidcProvider(settings=settings, clock=shared_clock, sessions=sessions, ephemeral=ephemeral)
    open_at_start_up(settings.instance, lambda: oidc.keys)  # a wrong KEK stops here, as for the CA keys above
    limits = RateLimiter(settings.limits, ephemeral, shared_clock)
    app.extensions[EXTENSION] = Services(
        settings=settings,
        clock=shared_clock,
        engine=engine,
        sessions=sessions,
        ephemeral=ephemeral,
        pki=pki,
        oidc=oidc,
    )
    app.register_blueprint(create_pki_blueprint(pki), url_prefix="/pki")
    serve_problems(app, "/pki")
    register_oidc(app, oidc).limiter = limits
    enrollments = EnrollmentService(
        settings=settings, sessions=sessions, ephemeral=services(app).ephemeral, pki=pki, clock=shared_clock,
        revoke_grants=oidc.revoke_device_grants,
    )
    app.register_blueprint(create_device_blueprint(enrollments), url_prefix=DEVICE_PREFIX)
    app.extensions[PHONE_LIFE_EXTENSION] = PhoneLife(  # the card-signed API and the account page
        sessions=sessions, pki=pki, clock=shared_clock, revoke_grants=oidc.revoke_device_grants,
    )
    app.register_blueprint(create_phone_life_blueprint(
        CardCheck(settings=settings, sessions=sessions, ephemeral=ephemeral, clock=shared_clock,
                  trust=enrollments.trust, revocation=enrollments.revocation),
        app.extensions[PHONE_LIFE_EXTENSION],
    ))
    signing = SigningService(settings=settings, pki=pki, keys=lambda: oidc.keys, clock=shared_clock)
    signing_flow = SigningFlow(
        service=signing, ephemeral=ephemeral, results=SigningResults(sessions), subject=oidc.subject,
        pending_ttl=settings.login.transaction_ttl,
        documents_ttl=settings.oidc.request_uri_ttl + settings.login.transaction_ttl,
        clock=shared_clock,
        outbox=WebhookOutbox.of(sessions, settings),
    )
    app.extensions[SIGNING_FLOW_EXTENSION] = signing_flow
    app.extensions[APPROVAL_EXTENSION] = ApprovalService(
        transactions=oidc.transactions,
        devices=SqlDeviceDirectory(sessions),
        settings=ApprovalSettings(
            rp_id=urlsplit(settings.issuer).hostname or "", origin=settings.issuer,
            qr_period=settings.login.qr_rotation, qr_max_age=settings.login.qr_max_age,
            link_max_age=settings.login.link_max_age,
        ),
        clock=shared_clock,
        guard=limits,
        signing=signing_flow,
    )
    app.register_blueprint(create_transactions_blueprint())
    app.register_blueprint(create_signature_key_blueprint(SignatureKeys(
        settings=settings, sessions=sessions, ephemeral=ephemeral, pki=pki, clock=shared_clock,
        binding=app.extensions[APPROVAL_EXTENSION].settings, enrollments=enrollments,
    )))
    app.extensions[DEVICE_MANAGEMENT_EXTENSION] = DeviceManagement(
        sessions=sessions, ephemeral=ephemeral, pki=pki, binding=app.extensions[APPROVAL_EXTENSION].settings,
        clock=shared_clock, revoke_grants=oidc.revoke_device_grants,
    )
    app.register_blueprint(create_management_blueprint(app.extensions[DEVICE_MANAGEMENT_EXTENSION]))
    serve_problems(app, DEVICE_PREFIX)
    app.extensions[SIGNING_EXTENSION] = signing
    app.register_blueprint(create_signing_blueprint(signing, settings=settings, clock=shared_clock))
    app.register_blueprint(create_results_blueprint(signing_flow, oidc))
    serve_problems(app, "/tsa")
    serve_problems(app, "/signing")
    register_ops(app, services(app))
    register_rate_limits(app, limits)  # after the request id is set
    # Outside the blueprints, whose own handlers answer in their API's shape: never a 500 for an outage.
    register_unavailable_handler(app, lambda _dependency: unavailable_json(), otherwise=internal_error)
    return app
