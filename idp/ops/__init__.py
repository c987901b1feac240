"""Operating the portal: health and readiness, Prometheus metrics, request ids and JSON logs.

``idp.ops.http.register_ops(app)`` wires all of it into an app; ``config/gunicorn.conf.py`` sets up
the log format and the metrics directory shared by the workers; ``docs/operations.md`` says how
to run and watch the portal. Other modules count what they do through ``idp.ops.metrics``.
"""

__all__ = ["health", "http", "logging", "metrics", "multiprocess", "request_id"]
