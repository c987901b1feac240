"""The Alembic environment of the durable store; revisions live in ``versions/``.

A package so that ``env.py`` and ``script.py.mako`` ship with ``idp``; Alembic itself loads
``env.py`` by path, and ``idp.store.database.upgrade`` runs it.
"""
