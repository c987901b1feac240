"""The portal as a module-level WSGI application for gunicorn: ``gunicorn -c config/gunicorn.conf.py idp.wsgi:app``.

Settings come from ``$IDP_CONFIG`` (a mounted TOML file) and the environment, as for every
``idp`` command. Importing this module builds the app, so only a WSGI server should import it;
with gunicorn that happens in each worker, after the configuration has set up the metrics
directory.
"""

from __future__ import annotations

from idp.app import create_app
from idp.settings import load_settings

__all__ = ["app"]

app = create_app(load_settings())
