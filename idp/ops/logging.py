"""Log records as JSON lines (or plain text), each with the id of the request it belongs to.

The portal's events stay what they are, ``event key=value`` strings through stdlib logging
(``docs/events.md``); ``JsonFormatter`` puts each one into a JSON object with its event name, its
fields, its level, its logger and the request id. No event carries a secret, so neither does
its record; the access log (``idp.ops.access_log``) writes method, path and status, never a
query string or a header. ``logging_config`` is the ``logging.config.dictConfig`` that
``config/gunicorn.conf.py`` hands to gunicorn.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from idp.ops.request_id import current_request_id

__all__ = ["JsonFormatter", "RequestIdFilter", "TextFormatter", "logging_config", "parse_event"]


def parse_event(message: str) -> tuple[str | None, dict[str, str]]:
    """Split ``event key=value ...`` into the event name and its fields.

    A word without ``=`` continues the previous value (``subject='CN=a, O=b'``); a message that
    does not start with an event name (``area.what``) has no event and no fields.
    """
    event, _, rest = message.partition(" ")
    if "." not in event or "=" in event:
        return None, {}
    fields: dict[str, str] = {}
    last = ""
    for word in rest.split(" "):
        key, sep, value = word.partition("=")
        if sep and key.isidentifier() and key.islower():
            fields[key] = value
            last = key
        elif last:
            fields[last] += " " + word
    return event, fields


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class RequestIdFilter(logging.Filter):
    """Attach the current request id (or None) to every record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Never drops a record; only annotates it."""
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, request_id, event, fields, message."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON; an exception's traceback goes into ``exception``."""
        message = record.getMessage()
        event, fields = parse_event(message)
        document: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        if event is not None:
            document["event"] = event
            document["fields"] = fields
        document["message"] = message
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain-text alternative: time, level, logger, message, request id."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s request_id=%(request_id)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as a line of text (and its traceback, if any)."""
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return super().format(record)


def logging_config(*, json_logs: bool) -> dict[str, Any]:
    """The dictConfig for the portal's processes: events and errors to stderr, access lines to stdout.

    The access logger writes lines that ``idp.ops.access_log`` has already formatted, so its
    handler adds nothing.
    """
    formatter = "json" if json_logs else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"()": TextFormatter},
            "raw": {"format": "%(message)s"},
        },
        "handlers": {
            "events": {
                "class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                "formatter": formatter, "filters": ["request_id"],
            },
            "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "raw"},
        },
        "root": {"level": "INFO", "handlers": ["events"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["events"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }
