"""Every durable record, imported in one place so that ``Base.metadata`` is complete.

Alembic's ``env.py`` imports this module before comparing the metadata with the database. Each
concern declares its records on ``idp.store.database.Base`` in its own module and registers that
module here with one import line, e.g. ``import idp.pki.records``.
"""

from __future__ import annotations

import idp.audit.records  # the tamper-evident audit log and its head
import idp.ceremonies.linking_records  # J-LIS linking data and the feed's cursor
import idp.ceremonies.records  # persons, their card certificates, devices, fetched J-LIS CRLs
import idp.oidc.grants_records  # OIDC grants, refresh tokens (hashed), attribute consents
import idp.oidc.records  # registered OAuth clients
import idp.pki.records  # certificates, their sources, CRL counters and CRLs
import idp.signing.records  # signed documents and their assertions, per grant
import idp.webhooks.records  # noqa: F401 - clients' webhooks and the outbox of signing events
